"""Helpers for the two HTTP adapters (`generate/main.py`, `composite/main.py`).

The adapters choose status codes, knowing who calls them: QStash retries any non-2xx, Studio
takes its `failed` branch on any non-2xx, and a person running `gcloud functions call` reads
the JSON error. Here live only the pieces both adapters need.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import RequestEntityTooLarge

from . import logs
from .callbacks import verify_qstash_signature
from .endpoints import signed_url
from .errors import (
    AppError,
    BadRequest,
    ConfigError,
    Forbidden,
    SignatureError,
    Unauthorized,
    UpstreamError,
)
from .settings import Settings
from .twilio_webhooks import SIGNATURE_SETTINGS_HEADER, verify_twilio_signature

Handler = Callable[[flask.Request], flask.Response]
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class UnsupportedMediaType(BadRequest):
    """The body is not in a format this endpoint reads."""


def json_response(status: int, body: dict[str, Any], **headers: str) -> flask.Response:
    response = flask.Response(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json"
    )
    response.headers.update(headers)
    return response


def error_response(exc: AppError) -> flask.Response:
    """The status and JSON body for one of our errors; never includes `detail` or secrets."""
    if isinstance(exc, UnsupportedMediaType):
        return json_response(415, {"error": exc.message})
    if isinstance(exc, BadRequest):
        return json_response(400, {"error": exc.message})
    if isinstance(exc, Unauthorized | SignatureError):
        return json_response(401, {"error": "unauthorized"})
    if isinstance(exc, Forbidden):
        return json_response(403, {"error": "forbidden"})
    if isinstance(exc, ConfigError):
        return json_response(500, {"error": "the service is misconfigured"})
    if isinstance(exc, UpstreamError):
        status = 503 if exc.retryable else 502
        return json_response(status, {"error": exc.message, "retryable": exc.retryable})
    return json_response(500, {"error": "internal error"})


def handler(function_name: str, max_body_bytes: int) -> Callable[[Handler], Handler]:
    """Wrap an HTTP entry point: log context, body size limit, one summary log line, and a
    JSON 500 (never a stack trace) for anything unexpected."""

    def wrap(inner: Handler) -> Handler:
        @functools.wraps(inner)
        def wrapped(request: flask.Request) -> flask.Response:
            started = time.perf_counter()
            request.max_content_length = max_body_bytes
            context = {"function": function_name}
            context.update(
                logs.trace_field(_project(), request.headers.get("X-Cloud-Trace-Context"))
            )
            with logs.log_context(**context):
                try:
                    if (request.content_length or 0) > max_body_bytes:
                        raise RequestEntityTooLarge()
                    read_body(request, max_body_bytes)
                    response = inner(request)
                except RequestEntityTooLarge:
                    discard_body(request)
                    response = json_response(413, {"error": "request body too large"})
                except AppError as exc:
                    _log_app_error(exc)
                    response = error_response(exc)
                except Exception as exc:
                    logs.error("unhandled error", error_type=type(exc).__name__)
                    response = json_response(500, {"error": "internal error"})
                logs.info(
                    "request handled",
                    # Any caller can send any word as the method; log only real ones.
                    method=request.method if request.method in HTTP_METHODS else "OTHER",
                    status=response.status_code,
                    latency_ms=round((time.perf_counter() - started) * 1000),
                )
                return response

        return wrapped

    return wrap


READ_CHUNK = 64 * 1024


def read_body(request: flask.Request, limit: int) -> None:
    """Read the whole body now, refusing more than `limit` bytes however it is sent: a chunked
    body has no Content-Length to check first. What is read is what `get_data()` and the form
    parser see from then on (werkzeug reads a request's cached data before its stream)."""
    data = bytearray()
    while chunk := request.stream.read(min(READ_CHUNK, limit + 1 - len(data))):
        data += chunk
        if len(data) > limit:
            raise RequestEntityTooLarge()
    request._cached_data = bytes(data)


# Cloud Run refuses requests over 32 MiB itself [DOC cloud run quotas]; past that, stop reading.
DISCARD_LIMIT = 32 * 1024 * 1024


def discard_body(request: flask.Request) -> None:
    """After a 413: read and drop what the client is still sending, so it gets our answer
    rather than a reset connection. functions-framework reads the body once more after us;
    with a Content-Length that read is bounded by it, but a chunked body's stream would raise
    again at the limit, so it is drained here from the server's own input, with a cap."""
    if request.content_length is not None:
        request.max_content_length = None  # functions-framework drains it, to Content-Length
        return
    raw = request.environ.get("wsgi.input")
    drained = 0
    while raw is not None and drained < DISCARD_LIMIT and (chunk := raw.read(READ_CHUNK)):
        drained += len(chunk)
    request._cached_data = b""


def _log_app_error(exc: AppError) -> None:
    severity = "ERROR" if isinstance(exc, ConfigError | UpstreamError) else "WARNING"
    logs.log(severity, exc.message, error_type=type(exc).__name__, detail=exc.detail)


def _project() -> str | None:
    return os.environ.get("GOOGLE_CLOUD_PROJECT")


def require_post(request: flask.Request) -> flask.Response | None:
    if request.method == "POST":
        return None
    return json_response(405, {"error": "use POST"}, Allow="POST")


def read_json(request: flask.Request) -> Any:
    """The JSON body; 415 if it is not declared as JSON, 400 if it does not parse."""
    if not request.is_json:
        raise UnsupportedMediaType("send the request as application/json")
    try:
        return json.loads(request.get_data(cache=True))
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise BadRequest("the body is not valid JSON") from exc


def verify_twilio_request(request: flask.Request, configured_url: str, settings: Settings) -> None:
    """Raise `Forbidden` (403) unless Twilio signed this request for our `configured_url`.

    The one check for every Twilio caller: incoming messages and Studio at `generate`, status
    callbacks at `composite`."""
    if settings.insecure_skip_signatures:
        logs.warning("INSECURE_SKIP_SIGNATURES is on: the Twilio signature was not checked")
        return
    try:
        verify_twilio_signature(
            signed_url(configured_url, request.query_string),
            request.form,
            request.headers.get("X-Twilio-Signature"),
            settings.secret("TWILIO_AUTH_TOKEN").reveal(),
            request.headers.get(SIGNATURE_SETTINGS_HEADER),
        )
    except SignatureError as exc:
        logs.warning(exc.message, detail=exc.detail)
        raise Forbidden("forbidden") from exc


def verify_qstash_request(request: flask.Request, settings: Settings) -> bool:
    """Raise `SignatureError` (401) unless QStash signed this request for `composite`; return
    whether the signature covered the query too.

    QStash may sign the URL with its query or without it [UNCONFIRMED]: either is taken, and
    only signed content may then say which request or job a call is about."""
    with_query = signed_url(settings.composite_url, request.query_string)
    if settings.insecure_skip_signatures:
        logs.warning("INSECURE_SKIP_SIGNATURES is on: the QStash signature was not checked")
        return True
    keys = (
        settings.secret("QSTASH_CURRENT_SIGNING_KEY").reveal(),
        settings.secret("QSTASH_NEXT_SIGNING_KEY").reveal(),
    )
    claims = verify_qstash_signature(
        request.headers.get("Upstash-Signature"),
        request.get_data(cache=True),
        (with_query, settings.composite_url),
        keys,
    )
    return bool(claims["sub"] == with_query)
