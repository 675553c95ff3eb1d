"""Local stand-in for the Twilio REST APIs this project uses, good enough for the real SDK.

The official `twilio` SDK talks to it unchanged once its URLs are rewritten, see
:class:`LocalTwilioHttpClient`::

    from twilio.rest import Client
    client = Client(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, http_client=LocalTwilioHttpClient(url))
    client.messages.create(to="+15558675310", from_="+15017122661", media_url=[...])

One account (SID + auth token, Basic auth), one Flask app, one module per Twilio API:

* :mod:`devstack.twilio_messages`: the Messages API: sending with Twilio's checks and error
  codes, delivery in the background with status callbacks, incoming messages with their
  webhook and TwiML replies, lists and media.
* :mod:`devstack.twilio_studio`: Studio Flows v2 (``studio.twilio.com/v2/Flows``).
* :mod:`devstack.twilio_numbers`: incoming phone numbers and Messaging Services.
* :mod:`devstack.twilio_api`: what they share (the error shape, dates, SIDs, paging).

This module ties them together: the configuration, the emulator's state, authentication,
injected faults, and dev-only JSON control endpoints under ``/__dev/`` (no auth): outbox, STOP
list, fault injection, wait-idle, reset, numbers, flows, incoming texts (``/__dev/incoming``)
and incoming pictures (``/__dev/inbound``).

Chosen where Twilio's behaviour was not pinned down (see the project's Twilio notes; each API
module lists its own choices):

* A path account SID other than the configured one is answered like bad credentials (401/20003).
* Fault responses for 5xx use codes 20500/20503 and, for stand-in-only cases, 20502/20504.
* Messaging Services (``TwilioConfig.messaging_services``): by default one service,
  :data:`DEFAULT_MESSAGING_SERVICE_SID`, holding every configured number.
"""

from __future__ import annotations

import base64
import hmac
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import flask
from twilio.http.http_client import TwilioHttpClient
from werkzeug.exceptions import HTTPException

from devstack import twilio_messages, twilio_numbers, twilio_studio
from devstack.twilio_api import (
    E164,
    SERVICE_SID,
    ApiError,
    is_http_url,
    json_response,
    not_found,
    utc_now,
)
from devstack.twilio_messages import (
    MAX_MEDIA,
    FetchedMedia,
    IncomingMessage,
    MessageStore,
    deliver_incoming,
)
from devstack.twilio_numbers import MessagingServices, NumberStore
from devstack.twilio_studio import FlowStore

__all__ = [
    "DEFAULT_MESSAGING_SERVICE_SID",
    "DEFAULT_PHONE_NUMBERS",
    "DEV_ACCOUNT_SID",
    "DEV_AUTH_TOKEN",
    "FAULT_KINDS",
    "LocalTwilioHttpClient",
    "TwilioConfig",
    "TwilioEmulator",
    "create_app",
    "is_twilio_url",
    "resolve_services",
    "rewrite_twilio_url",
]

DEV_ACCOUNT_SID = "AC0d5e7a11c0ffee0000d15ea5e0000001"
DEV_AUTH_TOKEN = "d3adbeefd3adbeefd3adbeefd3adbeef"
DEFAULT_PHONE_NUMBERS = ("+15005550006",)  # Twilio's magic "valid and available" test number
# The one Messaging Service the stand-in has unless configured otherwise; fixed so that settings
# and tests can name it.
DEFAULT_MESSAGING_SERVICE_SID = "MG0d5e7a11c0ffee0000d15ea5e0000001"
FAULT_KINDS = ("500", "503", "timeout", "21610", "21211", "20429", "reset")


# --------------------------------------------------------------------------------------------
# Pointing the real SDK at the stand-in
# --------------------------------------------------------------------------------------------


def is_twilio_url(url: str) -> bool:
    """A URL on twilio.com or a subdomain, such as a Studio flow's webhook: never requested
    from here, only rewritten to the stand-in."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "twilio.com" or host.endswith(".twilio.com")


def rewrite_twilio_url(url: str, base_url: str) -> str:
    """Return `url` on `base_url` if it targets ``https://twilio.com`` or a subdomain, else as is.

    Path and query are kept, so paging URIs and filters survive; `base_url` may carry a path
    prefix (it is prepended to the original path).
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not is_twilio_url(url):
        return url
    rewritten = base_url.rstrip("/") + parts.path
    return f"{rewritten}?{parts.query}" if parts.query else rewritten


class LocalTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """A `TwilioHttpClient` that sends every ``https://*.twilio.com`` request to `base_url`.

    Everything else the SDK does (form encoding, auth header, paging, error mapping) stays real.
    `kwargs` go to `TwilioHttpClient` (e.g. ``timeout=``, ``max_retries=``).
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(method, rewrite_twilio_url(url, self.base_url), *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class TwilioConfig:
    outbox_dir: Path  # delivered messages are written here
    account_sid: str = DEV_ACCOUNT_SID
    auth_token: str = DEV_AUTH_TOKEN
    media_max_bytes: int = 5 * 1024 * 1024
    media_fetch_timeout_s: float = 10.0
    phone_numbers: tuple[str, ...] = DEFAULT_PHONE_NUMBERS  # the account's incoming numbers
    # The account's Messaging Services: SID -> sender pool (numbers of `phone_numbers`, each in
    # one service at most, as on Twilio). None: DEFAULT_MESSAGING_SERVICE_SID with every number.
    messaging_services: Mapping[str, tuple[str, ...]] | None = None


def resolve_services(config: TwilioConfig) -> dict[str, tuple[str, ...]]:
    """The account's Messaging Services (SID -> sender pool); ValueError for a bad config."""
    if config.messaging_services is None:
        numbers = tuple(config.phone_numbers)
        return {DEFAULT_MESSAGING_SERVICE_SID: numbers} if numbers else {}
    services = {sid: tuple(pool) for sid, pool in config.messaging_services.items()}
    owner: dict[str, str] = {}
    for sid, pool in services.items():
        where = f"TwilioConfig.messaging_services[{sid!r}]"
        if SERVICE_SID.fullmatch(sid) is None:
            raise ValueError(f"{where}: a SID is MG and 32 hex digits")
        if not pool:
            raise ValueError(f"{where}: a service needs at least one sender")
        for number in pool:
            if number not in config.phone_numbers:
                raise ValueError(f"{where}: {number!r} is not in TwilioConfig.phone_numbers")
            if number in owner:
                # A number belongs to one Messaging Service at a time [DOC errors/21712].
                raise ValueError(f"{where}: {number!r} is already in {owner[number]}")
            owner[number] = sid
    return services


# --------------------------------------------------------------------------------------------
# Emulator state
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """An injected failure of message creates (to `to`, or to anyone when None)."""

    kind: str
    times: int  # -1: until cleared
    to: str | None = None
    delay_s: float = 30.0

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "times": self.times, "to": self.to, "delay_s": self.delay_s}


class TwilioEmulator:
    """State of one stand-in (messages, STOP list, flows, numbers, Messaging Services, faults);
    lives at ``app.extensions["twilio"]``."""

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config
        self.closing = threading.Event()  # interrupts "timeout" fault sleeps on close()
        self.flows = FlowStore(config.account_sid)
        self.numbers = NumberStore(config.account_sid, config.phone_numbers)  # checks E.164
        pools = resolve_services(config)  # fixed for the stand-in's life
        self.services = MessagingServices(config.account_sid, pools, created=utc_now())
        self.messages = MessageStore(
            account_sid=config.account_sid,
            auth_token=config.auth_token,
            phone_numbers=config.phone_numbers,
            services=pools,
            outbox_dir=config.outbox_dir,
            media_max_bytes=config.media_max_bytes,
            media_fetch_timeout_s=config.media_fetch_timeout_s,
            closing=self.closing,
        )
        self._lock = threading.Lock()  # guards the faults
        self._faults: list[Fault] = []

    def wait_idle(self, timeout: float) -> bool:
        """True once no message is being delivered (media fetch, outbox, callbacks)."""
        return self.messages.wait_idle(timeout)

    def close(self) -> None:
        self.closing.set()

    def reset(self) -> None:
        """Forget messages, STOP list, faults and flows, empty the outbox of our files, and put
        the numbers back as configured."""
        self.flows.reset()
        self.numbers.reset()
        self.messages.reset()
        self.clear_faults()

    def add_fault(self, fault: Fault) -> list[dict[str, Any]]:
        with self._lock:
            self._faults.append(fault)
            return [item.as_json() for item in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item.as_json() for item in self._faults]

    def take_fault(self, to: str) -> Fault | None:
        """Consume one use of the first fault that applies to a create for `to`."""
        with self._lock:
            for fault in self._faults:
                if fault.to is None or fault.to == to:
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None


def _emulator() -> TwilioEmulator:
    emulator: TwilioEmulator = flask.current_app.extensions["twilio"]
    return emulator


# --------------------------------------------------------------------------------------------
# HTTP: authentication and injected faults, before any API view
# --------------------------------------------------------------------------------------------

dev = flask.Blueprint("twilio_dev", __name__, url_prefix="/__dev")


def _credentials_match(config: TwilioConfig) -> bool:
    auth = flask.request.authorization
    if auth is None or auth.type != "basic":
        return False
    # Compare as bytes: compare_digest rejects non-ASCII str, and callers control these values.
    user_ok = hmac.compare_digest((auth.username or "").encode(), config.account_sid.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), config.auth_token.encode())
    return user_ok and password_ok


def _unauthorized() -> flask.Response:
    response = json_response(ApiError(20003, "Authenticate", status=401).body(), 401)
    response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


def _authenticate() -> flask.Response | None:
    """Basic auth on every API route; unknown paths (404 either way) and /__dev/ go without.

    2010-04-01 paths name the account too, and it must be ours; Studio and Messaging paths
    carry no account SID, so there the credentials alone name the account.
    """
    if flask.request.blueprint in (None, dev.name):
        return None
    config = _emulator().config
    path_sid = (flask.request.view_args or {}).get("account_sid", config.account_sid)
    if _credentials_match(config) and path_sid == config.account_sid:
        return None
    return _unauthorized()


def _inject_fault() -> flask.Response | None:
    """Answer a message create with the first injected fault for its ``To``, if one applies."""
    if flask.request.endpoint != twilio_messages.CREATE_ENDPOINT:
        return None
    to = flask.request.form.get("To", "")
    fault = _emulator().take_fault(to.strip())
    return None if fault is None else _fault_response(fault, to)


def _fault_response(fault: Fault, to: str) -> flask.Response:
    if fault.kind == "reset":
        return _drop_connection()
    if fault.kind == "timeout":
        _emulator().closing.wait(fault.delay_s)
        raise ApiError(20504, "Gateway Timeout", 504)
    errors = {
        "500": ApiError(20500, "Internal Server Error", 500),
        "503": ApiError(20503, "Service Unavailable", 503),
        "20429": ApiError(20429, "Too Many Requests", 429),
        "21610": ApiError(21610, "Attempt to send to unsubscribed recipient"),
        "21211": ApiError(21211, f"The 'To' number {to} is not a valid phone number."),
    }
    raise errors[fault.kind]


def _drop_connection() -> flask.Response:
    """Close the connection with no reply, as a crashing proxy would."""
    sock = flask.request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):  # not werkzeug's dev server: say so with a 502
        raise ApiError(20502, "Bad Gateway (connection reset requested)", 502)
    # shutdown() works even though werkzeug still holds file objects on the socket; its later
    # write of our dummy response fails with BrokenPipeError, which werkzeug drops quietly.
    sock.shutdown(socket.SHUT_RDWR)
    return flask.Response(status=502)


# --------------------------------------------------------------------------------------------
# HTTP: dev-only control endpoints (no auth; never part of Twilio's API)
# --------------------------------------------------------------------------------------------


def _json_body() -> dict[str, Any]:
    payload = flask.request.get_json(silent=True)
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        flask.abort(400, "expected a JSON object")
    return payload


def _number_from_body() -> str:
    number = _json_body().get("number")
    if not isinstance(number, str) or not number.strip():
        flask.abort(400, "expected {'number': '+1...'}")
    return number.strip()


@dev.get("/outbox")
def dev_outbox() -> flask.Response:
    return json_response({"messages": _emulator().messages.outbox()})


@dev.post("/opt-out")
def dev_opt_out() -> flask.Response:
    return json_response(
        {"opted_out": _emulator().messages.set_opted_out(_number_from_body(), True)}
    )


@dev.post("/opt-in")
def dev_opt_in() -> flask.Response:
    return json_response(
        {"opted_out": _emulator().messages.set_opted_out(_number_from_body(), False)}
    )


def _fault_from_body(body: dict[str, Any]) -> Fault:
    kind = str(body.get("kind", ""))
    times = body.get("times", 1)
    to = body.get("to")
    delay_s = body.get("delay_s", 30.0)
    if kind not in FAULT_KINDS:
        flask.abort(400, f"kind must be one of {', '.join(FAULT_KINDS)}")
    if isinstance(times, bool) or not isinstance(times, int) or times == 0 or times < -1:
        flask.abort(400, "times must be a positive integer or -1")
    if to is not None and not isinstance(to, str):
        flask.abort(400, "to must be a string")
    if isinstance(delay_s, bool) or not isinstance(delay_s, int | float) or delay_s < 0:
        flask.abort(400, "delay_s must be a non-negative number")
    return Fault(kind=kind, times=times, to=to, delay_s=float(delay_s))


@dev.post("/faults")
def dev_add_fault() -> flask.Response:
    faults = _emulator().add_fault(_fault_from_body(_json_body()))
    return json_response({"faults": faults}, 201)


@dev.get("/faults")
def dev_list_faults() -> flask.Response:
    return json_response({"faults": _emulator().faults()})


@dev.delete("/faults")
def dev_clear_faults() -> flask.Response:
    _emulator().clear_faults()
    return json_response({"faults": []})


@dev.post("/wait-idle")
def dev_wait_idle() -> flask.Response:
    timeout = _json_body().get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        flask.abort(400, "timeout must be a non-negative number")
    idle = _emulator().wait_idle(float(timeout))
    return json_response({"idle": idle}, 200 if idle else 408)


@dev.get("/numbers")
def dev_numbers() -> flask.Response:
    return json_response({"numbers": _emulator().numbers.listed()})


@dev.get("/flows")
def dev_flows() -> flask.Response:
    return json_response({"flows": _emulator().flows.complete()})


# A MIME type as Twilio reports it in MediaContentType{N}: type/subtype, no parameters.
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*")


def _address_from_body(payload: dict[str, Any], emulator: TwilioEmulator) -> tuple[str, str]:
    """The checked ``from`` (anyone, E.164) and ``to`` (one of our numbers) of a message."""
    sender, number = payload.get("from"), payload.get("to")
    example = "an E.164 number like +15558675310"
    if sender is None:
        flask.abort(400, f"from is required: {example}")
    if not isinstance(sender, str) or E164.fullmatch(sender.strip()) is None:
        flask.abort(400, f"from must be {example}")
    ours = ", ".join(emulator.config.phone_numbers)
    if number is None:
        flask.abort(400, f"to is required: one of our numbers ({ours})")
    if not isinstance(number, str) or number.strip() not in emulator.config.phone_numbers:
        flask.abort(400, f"to must be one of our numbers: {ours}")
    return sender.strip(), number.strip()


def _media_item_from_body(index: int, item: Any) -> FetchedMedia:
    where = f"media[{index}]"
    if not isinstance(item, dict):
        flask.abort(400, f"{where} must be an object {{content_type, data_b64}}")
    content_type, encoded = item.get("content_type"), item.get("data_b64")
    if not isinstance(content_type, str) or _MEDIA_TYPE.fullmatch(content_type.strip()) is None:
        flask.abort(400, f"{where}.content_type must be a MIME type like image/jpeg")
    if not isinstance(encoded, str):
        flask.abort(400, f"{where}.data_b64 must be a base64 string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        flask.abort(400, f"{where}.data_b64 is not base64")
    if not data:
        flask.abort(400, f"{where}.data_b64 holds no bytes")
    return FetchedMedia(content_type.strip(), data)


def _media_from_body(raw: Any, max_bytes: int) -> list[FetchedMedia]:
    """``[{"content_type", "data_b64"}, ...]``, at most MAX_MEDIA files and `max_bytes` in all
    (Twilio's limits for one MMS [DOC accepted-mime-types])."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        flask.abort(400, "media must be a list of {content_type, data_b64}")
    if len(raw) > MAX_MEDIA:
        flask.abort(400, f"media holds {len(raw)} files; a message has at most {MAX_MEDIA}")
    media = [_media_item_from_body(index, item) for index, item in enumerate(raw)]
    total = sum(len(item.data) for item in media)
    if total > max_bytes:
        flask.abort(400, f"media holds {total} bytes; a message has at most {max_bytes}")
    return media


def _incoming_from_body(
    emulator: TwilioEmulator, *, with_media: bool
) -> tuple[IncomingMessage, str | None]:
    """``{"from", "to", "body"?, "url"?, "media"?}`` of an incoming message, checked, and its
    webhook URL if given; ``media`` is read only `with_media`."""
    payload = _json_body()
    sender, number = _address_from_body(payload, emulator)
    text, url = payload.get("body", ""), payload.get("url")
    if not isinstance(text, str):
        flask.abort(400, "body must be a string")
    if url is not None and (not isinstance(url, str) or not is_http_url(url)):
        flask.abort(400, "url must be an http(s) URL")
    raw_media = payload.get("media") if with_media else None
    media = _media_from_body(raw_media, emulator.config.media_max_bytes)
    return IncomingMessage(sender, number, text, media), url


def _receive(*, with_media: bool) -> flask.Response:
    """Twilio's side of an incoming message, see :func:`devstack.twilio_messages.deliver_incoming`.

    The webhook goes to `url` (POST) or to the number's ``sms_url`` (with its ``sms_method``).
    Media URLs are on the URL this request reached the stand-in at.
    """
    emulator = _emulator()
    incoming, url = _incoming_from_body(emulator, with_media=with_media)
    method = "POST"
    if url is None:
        settings = emulator.numbers.settings_of(incoming.to) or {}
        url, method = settings.get("sms_url") or None, settings.get("sms_method", "POST")
    if url is not None and is_twilio_url(url):
        # A Studio flow's webhook lives on twilio.com; never call the real Twilio from here.
        flask.abort(409, f"{url} is a Twilio URL; run Studio flows with devstack.studio_runner")
    base_url = flask.request.host_url
    result = deliver_incoming(emulator.messages, incoming, url, method, base_url)
    return json_response(result)


@dev.post("/incoming")
def dev_incoming() -> flask.Response:
    """Someone texts our number: ``{"from", "to", "body", "url"?}`` (no media)."""
    return _receive(with_media=False)


@dev.post("/inbound")
def dev_inbound() -> flask.Response:
    """Someone sends our number a message with pictures (MMS): ``{"from", "to", "body"?,
    "url"?, "media"?: [{"content_type", "data_b64"}, ...]}``, up to 10 files.

    Answers as ``/incoming`` does; its ``media_urls`` are the files' Twilio media URLs, which
    need the account's Basic auth. ``data_b64`` is strict base64 (no line breaks).
    """
    return _receive(with_media=True)


@dev.post("/reset")
def dev_reset() -> flask.Response:
    _emulator().reset()
    return json_response({"reset": True})


# --------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------


def _api_error(error: ApiError) -> flask.Response:
    return json_response(error.body(), error.status)


def _http_error(error: HTTPException) -> flask.Response:
    """Unknown routes and wrong methods answer in Twilio's error shape too (not /__dev/)."""
    status = error.code or 500
    if flask.request.path.startswith(f"{dev.url_prefix}/"):
        return json_response({"error": error.description or error.name, "status": status}, status)
    if status == 404:
        return _api_error(not_found())
    code = {405: 20004}.get(status, status)
    return _api_error(ApiError(code, error.description or error.name, status))


def create_app(config: TwilioConfig) -> flask.Flask:
    """A Flask app emulating the Twilio APIs above; state at ``app.extensions["twilio"]``."""
    app = flask.Flask(__name__)
    emulator = TwilioEmulator(config)
    app.extensions["twilio"] = emulator
    twilio_messages.init_app(app, emulator.messages)
    twilio_studio.init_app(app, emulator.flows)
    twilio_numbers.init_app(app, emulator.numbers, emulator.services)
    app.register_blueprint(dev)
    # In this order: Twilio checks credentials before it looks at a request.
    app.before_request(_authenticate)
    app.before_request(_inject_fault)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app
