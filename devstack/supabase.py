"""Supabase stand-in: one server with the PostgREST and Storage subset supabase-py sends.

The official `supabase` SDK talks to this app unchanged (`create_client(url, DEV_SECRET_KEY)`).
It is two APIs over one PostgreSQL, tied together here:
- `/rest/v1/...`: PostgREST (postgrest.py): tables, filters, RPC, as SQL run as the caller's role.
- `/storage/v1/...`: Storage (storage.py): buckets and objects; rows in `storage.objects`, bytes
  under `storage_dir/objects/`.
- `/__dev/faults` and `/__dev/health`: unauthenticated test hooks (fault injection, liveness).

What this module adds is what the platform's gateway does in front of both: map the `apikey` to a
role (secret key -> `service_role`, publishable key -> `anon`), and, for tests, fail on demand.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flask
import psycopg
from werkzeug.exceptions import HTTPException

from .postgrest import Database, HttpError, PostgrestApi, Role, Route, json_response
from .storage import DEFAULT_MAX_FILE_SIZE, StorageApi

DEV_SECRET_KEY = "sb_secret_devstack_local_only_0000000000"  # maps to role service_role
DEV_PUBLISHABLE_KEY = "sb_publishable_devstack_local_only_00000"  # maps to role anon

_log = logging.getLogger("devstack.supabase")


@dataclass
class SupabaseConfig:
    database_url: str
    storage_dir: Path  # object bytes live here; metadata in storage.objects
    secret_key: str = DEV_SECRET_KEY
    publishable_key: str = DEV_PUBLISHABLE_KEY
    jwt_secret: str = "devstack-storage-signing-secret"  # signs storage signed-URL tokens (HS256)
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # global upload cap, on top of bucket limits


class SupabaseStandIn:
    """The shared pool and fault board, the API-key check, and the two APIs built on them."""

    def __init__(self, config: SupabaseConfig) -> None:
        self.config = config
        self.db = Database(config.database_url)
        self.faults = FaultBoard()
        self.rest = PostgrestApi(self.db, self.role)
        self.storage = StorageApi(
            self.db,
            self.role,
            blob_dir=config.storage_dir / "objects",
            max_file_size=config.max_file_size,
            signing_secret=config.jwt_secret,
        )

    def role(self) -> Role:
        """The platform gateway checks only `apikey` (header, or query param)."""
        key = flask.request.headers.get("apikey") or flask.request.args.get("apikey")
        if not key:
            raise HttpError(
                401,
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
            )
        if key == self.config.secret_key:
            return "service_role"
        if key == self.config.publishable_key:
            return "anon"
        raise HttpError(
            401,
            {
                "message": "Invalid API key",
                "hint": "Double check your Supabase `anon` or `service_role` API key.",
            },
        )

    def inject_fault(self) -> flask.Response | None:
        """Runs before every view: a response here replaces the view's (see Fault injection)."""
        path = flask.request.path
        service = "rest" if path.startswith("/rest/") else None
        service = "storage" if path.startswith("/storage/") else service
        if service is None:  # /__dev/* and unknown paths are never faulted
            return None
        fault = self.faults.take(service, flask.request.method, flask.request.full_path)
        if fault is None:
            return None
        _log.info("injecting fault %s into %s %s", fault.kind, flask.request.method, path)
        if fault.kind == "reset":
            return drop_connection()
        status = {"503": 503, "500": 500}.get(fault.kind, 504)
        if fault.kind == "timeout":
            self.faults.sleep(fault.delay_s)
        message = f"devstack injected fault ({fault.kind})"
        if service == "storage":  # each API's own error shape, so its SDK parses it as usual
            body: dict[str, Any] = {"statusCode": str(status), "error": "Fault", "message": message}
        else:
            body = {"code": str(status), "details": None, "hint": None, "message": message}
        return json_response(body, status)

    # ---- dev hooks ------------------------------------------------------------------------

    def faults_view(self) -> flask.Response:
        method = flask.request.method
        if method == "POST":
            return json_response(
                self.faults.add(flask.request.get_json(silent=True)).to_json(), 201
            )
        if method == "DELETE":
            self.faults.clear()
            return flask.Response(status=204)
        return json_response(self.faults.snapshot())

    def health(self) -> flask.Response:
        try:
            with self.db.transaction() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return json_response({"status": "error", "database": str(exc)}, 503)
        return json_response({"status": "ok"})


def create_app(config: SupabaseConfig) -> flask.Flask:
    standin = SupabaseStandIn(config)
    app = flask.Flask("devstack.supabase")
    app.extensions["devstack.supabase"] = standin
    _register_routes(app, standin)
    app.before_request(standin.inject_fault)
    app.register_error_handler(HttpError, lambda exc: exc.response())
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, _unexpected)
    return app


def _register_routes(app: flask.Flask, s: SupabaseStandIn) -> None:
    rules: list[Route] = [
        *_mounted("/rest/v1", s.rest.routes()),
        *_mounted("/storage/v1", s.storage.routes()),
        ("/__dev/faults", s.faults_view, ["GET", "POST", "DELETE"]),
        ("/__dev/health", s.health, ["GET"]),
    ]
    for index, (rule, view, methods) in enumerate(rules):
        app.add_url_rule(rule, f"{view.__name__}_{index}", view, methods=methods)


def _mounted(prefix: str, routes: list[Route]) -> list[Route]:
    return [(prefix + rule, view, methods) for rule, view, methods in routes]


def _http_exception(exc: HTTPException) -> flask.Response:
    return json_response({"message": exc.description or exc.name}, exc.code or 500)


def _unexpected(exc: Exception) -> flask.Response:
    _log.exception("unhandled error in the Supabase stand-in")
    return json_response({"message": f"devstack internal error: {exc}"}, 500)


# --------------------------------------------------------------------------------------------
# Fault injection: `/__dev/faults` arms failures that the next matching requests suffer.

_FAULT_KINDS = ("503", "500", "timeout", "reset")
_FAULT_SERVICES = ("rest", "storage", "any")


@dataclass
class Fault:
    id: int
    service: str
    kind: str
    remaining: int  # -1 = until cleared
    method: str | None = None
    path_contains: str | None = None
    delay_s: float = 30.0

    def matches(self, service: str, method: str, path: str) -> bool:
        return (
            self.service in (service, "any")
            and (self.method is None or self.method.upper() == method.upper())
            and (self.path_contains is None or self.path_contains in path)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "kind": self.kind,
            "times": self.remaining,
            "method": self.method,
            "path_contains": self.path_contains,
            "delay_s": self.delay_s,
        }


def parse_fault(spec: Any, fault_id: int) -> Fault:
    if not isinstance(spec, dict):
        raise HttpError(400, {"message": "fault must be a JSON object"})
    service, kind = spec.get("service", "any"), str(spec.get("kind", ""))
    times, delay = spec.get("times", 1), spec.get("delay_s", 30)
    problems = []
    if service not in _FAULT_SERVICES:
        problems.append(f"service must be one of {_FAULT_SERVICES}")
    if kind not in _FAULT_KINDS:
        problems.append(f"kind must be one of {_FAULT_KINDS}")
    if not isinstance(times, int) or isinstance(times, bool) or times == 0 or times < -1:
        problems.append("times must be a positive integer or -1")
    if not isinstance(delay, int | float) or delay < 0:
        problems.append("delay_s must be a non-negative number")
    if problems:
        raise HttpError(400, {"message": "; ".join(problems)})
    method, contains = spec.get("method"), spec.get("path_contains")
    return Fault(fault_id, service, kind, times, method, contains, float(delay))


class FaultBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1
        self._wake = threading.Event()

    def add(self, spec: Any) -> Fault:
        with self._lock:
            fault = parse_fault(spec, self._next_id)
            self._next_id += 1
            self._faults.append(fault)
            return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            # Release requests parked by a "timeout" fault so tests tear down quickly.
            self._wake.set()
            self._wake = threading.Event()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def take(self, service: str, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(service, method, path):
                    if fault.remaining > 0:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def sleep(self, seconds: float) -> None:
        with self._lock:
            wake = self._wake
        wake.wait(seconds)


def drop_connection() -> flask.Response:
    """Close the client's socket with an RST and no HTTP reply (werkzeug's server only)."""
    sock = flask.request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        return json_response({"message": "Bad Gateway (devstack fault: reset)"}, 502)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    # Werkzeug's write of this response fails with a broken pipe, which it ignores.
    return flask.Response(status=502)


__all__ = [
    "DEV_PUBLISHABLE_KEY",
    "DEV_SECRET_KEY",
    "SupabaseConfig",
    "create_app",
]
