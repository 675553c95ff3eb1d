"""Serve a WSGI app on a loopback port from a background thread.

Used by the tests (port 0, one server per stand-in per test session) and by `devstack.stack`
(fixed ports). Werkzeug's threaded server is plenty for a handful of concurrent requests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

WSGIApp = Callable[..., Any]


@dataclass
class RunningServer:
    """A server started by :func:`serve_in_thread`; `url` has no trailing slash."""

    url: str
    port: int
    _server: BaseWSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_in_thread(app: WSGIApp, port: int = 0, host: str = "127.0.0.1") -> RunningServer:
    """Start `app` on `host:port` (0 picks a free port) and return once it accepts connections."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=f"serve-{server.port}", daemon=True)
    thread.start()
    return RunningServer(
        url=f"http://{host}:{server.port}", port=server.port, _server=server, _thread=thread
    )
