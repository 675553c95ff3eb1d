"""The QStash stand-in's REST API: what a client (the official SDK) calls under ``/v2/``.

* ``POST /v2/publish/<destination>`` (and ``/v2/enqueue/<queue>/<destination>``, ``/v2/batch``)
  reads the ``Upstash-*`` headers (or ``upstash-*`` query parameters), checks them as QStash
  does, answering ``{"error": ...}`` (:class:`ApiError`), and hands a :class:`Message` to the
  :class:`~devstack.qstash_delivery.Dispatcher`; the reply is ``{"messageId": "msg_..."}``.
  A duplicate (``Upstash-Deduplication-Id`` or content-based) within the window answers 202.
* The plan's limits (``QStashConfig.plan``) apply here: a body over the max message size is 413,
  and a retry count above the cap is rejected with 400 or clamped (``retries_over_cap``).
* ``GET``/``DELETE /v2/messages[/<id>]`` show and cancel messages not settled yet.
* ``/v2/schedules`` stores schedules; no cron runs them (the dev endpoint
  ``POST /__dev/schedules/<id>/trigger`` publishes one message from a schedule now).
* ``GET /v2/keys`` answers the signing keys.

The app checks the bearer token before these views run (see :mod:`devstack.qstash`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, unquote_plus, urlsplit

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from devstack.qstash_delivery import Dispatcher
from devstack.qstash_message import (
    CallbackSpec,
    Message,
    b64,
    canonical_header,
    evaluate_retry_delay,
    header_map,
    loggable,
    now_ms,
    parse_duration,
    random_id,
)

if TYPE_CHECKING:  # devstack.qstash imports this module; here its config is only a type
    from devstack.qstash import QStashConfig

__all__ = ["INVALID_DESTINATION_ERROR", "ApiError", "Publisher", "init_app"]

log = logging.getLogger("devstack.qstash")  # one logger for the whole stand-in

INVALID_DESTINATION_ERROR = (
    "invalid destination url: endpoint has invalid scheme, add http:// or https://"
)
DEFAULT_RETRIES = 3  # [DOC] used when Upstash-Retries is absent
ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


class ApiError(Exception):
    """An error answered as `{"error": message}` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _PublishRequest:
    """A publish as received: destination, raw body and options (header pairs)."""

    destination: str
    body: bytes
    options: list[tuple[str, str]]  # request headers first, then `upstash-*` query params
    caller_ip: str
    queue: str | None = None
    all_headers_forwardable: list[tuple[str, str]] = field(default_factory=list)
    schedule_id: str | None = None


@dataclass
class _Schedule:
    """A stored schedule: the publish it repeats, and a parsed template of it for listings."""

    id: str
    cron: str
    request: _PublishRequest
    template: Message
    created_at_ms: int
    last_run_ms: int | None = None


class _Options:
    """Case-insensitive view over publish options; the first occurrence wins."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs = [(name.lower(), value) for name, value in pairs]

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        return next((value for key, value in self._pairs if key == lowered), None)

    def with_prefix(self, prefix: str) -> list[tuple[str, str]]:
        """Pairs whose name starts with `prefix`, with the prefix removed."""
        lowered = prefix.lower()
        return [(k[len(lowered) :], v) for k, v in self._pairs if k.startswith(lowered)]


# --------------------------------------------------------------------------------------------
# Parsing a publish
# --------------------------------------------------------------------------------------------

# Headers that never make sense to forward with Upstash-Header-Forward: true.
_NOT_FORWARDABLE = frozenset(
    {"authorization", "host", "content-length", "content-type", "connection", "keep-alive",
     "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "accept-encoding",
     "user-agent"}
)  # fmt: skip


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _parse_int(options: _Options, name: str, default: int) -> int:
    raw = options.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"invalid {name} header: {raw!r} is not an integer") from None
    if value < 0:
        raise ApiError(400, f"invalid {name} header: must not be negative")
    return value


def _parse_optional_duration(options: _Options, name: str) -> float | None:
    raw = options.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return parse_duration(raw)
    except ValueError:
        raise ApiError(400, f"invalid {name} header: {raw!r}") from None


def _parse_method(options: _Options, name: str) -> str:
    method = (options.get(name) or "POST").strip().upper()
    if method not in ALLOWED_METHODS:
        raise ApiError(400, f"invalid {name} header: {method!r}")
    return method


def _parse_retry_delay(options: _Options, name: str) -> str | None:
    expression = options.get(name)
    if expression is None or expression.strip() == "":
        return None
    try:
        evaluate_retry_delay(expression, 0)  # reject a bad expression at publish time
    except ValueError as exc:
        raise ApiError(400, f"invalid {name} header: {exc}") from None
    return expression.strip()


def _parse_callback(options: _Options, prefix: str) -> CallbackSpec | None:
    """Read `Upstash-Callback` (or `Upstash-Failure-Callback`) and its `-*` settings."""
    url = options.get(prefix)
    if url is None or url.strip() == "":
        return None
    url = url.strip()
    if not _is_http_url(url):
        kind = prefix.removeprefix("Upstash-").lower().replace("-", " ")
        raise ApiError(
            400, f"invalid {kind} url: endpoint has invalid scheme, add http:// or https://"
        )
    forward = tuple(
        (canonical_header(name), value) for name, value in options.with_prefix(f"{prefix}-Forward-")
    )
    retries_raw = options.get(f"{prefix}-Retries")
    return CallbackSpec(
        url=url,
        failure=prefix == "Upstash-Failure-Callback",
        method=_parse_method(options, f"{prefix}-Method"),
        forward=forward,
        retries=None if retries_raw is None else _parse_int(options, f"{prefix}-Retries", 0),
        timeout_s=_parse_optional_duration(options, f"{prefix}-Timeout"),
        retry_delay=_parse_retry_delay(options, f"{prefix}-Retry-Delay"),
        delay_s=_parse_optional_duration(options, f"{prefix}-Delay") or 0.0,
    )


def _delivered_headers(req: _PublishRequest, options: _Options) -> list[tuple[str, str]]:
    """Headers the destination will see besides the Upstash-* ones, in a stable order."""
    headers = [(canonical_header(n), v) for n, v in options.with_prefix("Upstash-Forward-")]
    if (options.get("Upstash-Header-Forward") or "").strip().lower() == "true":
        headers += [
            (canonical_header(n), v)
            for n, v in req.all_headers_forwardable
            if not n.lower().startswith("upstash-") and n.lower() not in _NOT_FORWARDABLE
        ]
    content_type = options.get("Content-Type")
    if content_type:
        headers.append(("Content-Type", content_type))
    return headers


def _content_dedup_key(req: _PublishRequest, headers: list[tuple[str, str]]) -> str:
    """Content-based dedup id: destination, body, Content-Type and forwarded headers."""
    digest = hashlib.sha256()
    digest.update(req.destination.encode())
    for name, value in sorted(headers):
        digest.update(f"\n{name}:{value}".encode())
    digest.update(b"\n\n" + req.body)
    return "content:" + digest.hexdigest()


def _not_before_ms(options: _Options, created_at_ms: int, queued: bool) -> int:
    """Upstash-Not-Before (unix seconds) wins over Upstash-Delay; queues ignore both."""
    if queued:
        return created_at_ms
    raw = options.get("Upstash-Not-Before")
    if raw is not None and raw.strip():
        try:
            return max(created_at_ms, int(raw.strip()) * 1000)
        except ValueError:
            raise ApiError(400, f"invalid Upstash-Not-Before header: {raw!r}") from None
    delay_s = _parse_optional_duration(options, "Upstash-Delay") or 0.0
    return created_at_ms + int(delay_s * 1000)


_SCHEDULE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # the allowed alphabet is [UNCONFIRMED]
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,?#-]+")


def _is_cron(text: str) -> bool:
    """Five cron fields, optionally after a `CRON_TZ=<zone>` prefix; the fields are only
    checked loosely, since nothing here evaluates them. [DOC schedules] evaluates in UTC and
    has a timezone option; that it is spelled as this prefix is [UNCONFIRMED]."""
    fields = text.split()
    if fields and fields[0].startswith(("CRON_TZ=", "TZ=")):
        fields = fields[1:]
    return len(fields) == 5 and all(_CRON_FIELD.fullmatch(f) for f in fields)


# --------------------------------------------------------------------------------------------
# The publisher
# --------------------------------------------------------------------------------------------


class Publisher:
    """Publishes and schedules as the API takes them: checked, held to the plan, deduplicated.

    Its state (dedup ids, schedules) is guarded by the emulator's one lock, shared with the
    `dispatcher` that the accepted messages go to.
    """

    def __init__(
        self, config: QStashConfig, lock: threading.Condition, dispatcher: Dispatcher
    ) -> None:
        self.config = config
        self._cond = lock
        self._dispatcher = dispatcher
        self._dedup: dict[str, tuple[str, float]] = {}  # key -> (message id, expiry monotonic)
        self._schedules: dict[str, _Schedule] = {}

    def reset_locked(self) -> None:
        """Forget every schedule and deduplication id."""
        self._schedules.clear()
        self._dedup.clear()

    # -- publishing --------------------------------------------------------------------------

    def publish(self, req: _PublishRequest) -> tuple[int, dict[str, Any]]:
        """Validate and store a publish; return (HTTP status, JSON reply).

        Raises:
            ApiError: the request is invalid (400) or too large (413).
        """
        message, dedup_key = self._build_message(req)
        with self._cond:
            if dedup_key is not None:
                existing = self._find_duplicate(dedup_key)
                if existing is not None:
                    return 202, {"messageId": existing, "deduplicated": True}
                self._dedup[dedup_key] = (
                    message.id,
                    time.monotonic() + self.config.dedup_window_s,
                )
            self._dispatcher.accept_locked(message, req.queue)
        log.info("qstash: accepted %s for %s", message.id, loggable(message.url))
        return 200, {"messageId": message.id}

    def _build_message(self, req: _PublishRequest) -> tuple[Message, str | None]:
        """Parse a publish into an unstored message and its dedup key (None: no dedup).

        Raises:
            ApiError: the request is invalid (400) or too large (413).
        """
        if not _is_http_url(req.destination):
            raise ApiError(400, INVALID_DESTINATION_ERROR)
        size_limit = self.config.message_size_limit
        if len(req.body) > size_limit:
            raise ApiError(
                413, f"message size {len(req.body)} exceeds the max message size {size_limit}"
            )
        options = _Options(req.options)
        headers = _delivered_headers(req, options)
        created_at = now_ms()
        message = Message(
            id=random_id("msg_"),
            kind="message",
            url=req.destination,
            method=_parse_method(options, "Upstash-Method"),
            body=req.body,
            headers=headers,
            max_retries=self._capped_retries(options, "Upstash-Retries"),
            retry_delay=_parse_retry_delay(options, "Upstash-Retry-Delay"),
            timeout_s=_parse_optional_duration(options, "Upstash-Timeout")
            or self.config.default_timeout_s,
            created_at_ms=created_at,
            not_before_ms=_not_before_ms(options, created_at, queued=req.queue is not None),
            caller_ip=req.caller_ip,
            generation=0,
            callback=self._capped_callback(_parse_callback(options, "Upstash-Callback")),
            failure_callback=self._capped_callback(
                _parse_callback(options, "Upstash-Failure-Callback")
            ),
            label=options.get("Upstash-Label"),
            redact=frozenset(
                part.strip().lower()
                for part in (options.get("Upstash-Redact-Fields") or "").split(",")
                if part.strip()
            ),
            schedule_id=req.schedule_id,
        )
        return message, self._dedup_key(req, options, headers)

    def _cap_retries(self, value: int, name: str) -> int:
        """Hold an explicit retry count to the plan's cap: reject (400) or clamp, as configured.

        Raises:
            ApiError: `value` exceeds the cap and `retries_over_cap` is "reject".
        """
        cap = self.config.retry_cap
        if value <= cap:
            return value
        if self.config.retries_over_cap == "clamp":
            return cap
        # [DOC] errors are `{"error": "..."}` (OpenAPI `Error`); this text is [UNCONFIRMED].
        raise ApiError(
            400,
            f"invalid {name} header: {value} exceeds the max retries {cap} "
            f"allowed on the {self.config.plan} plan",
        )

    def _capped_retries(self, options: _Options, name: str) -> int:
        """Upstash-Retries, default 3; an absent header never fails, it just meets the cap."""
        raw = options.get(name)
        if raw is None or raw.strip() == "":
            return min(DEFAULT_RETRIES, self.config.retry_cap)
        return self._cap_retries(_parse_int(options, name, DEFAULT_RETRIES), name)

    def _capped_callback(self, spec: CallbackSpec | None) -> CallbackSpec | None:
        """The callback spec with its own `-Retries` held to the cap; None inherits the source's,
        which is capped already."""
        if spec is None or spec.retries is None:
            return spec
        name = "Upstash-Failure-Callback-Retries" if spec.failure else "Upstash-Callback-Retries"
        return dataclasses.replace(spec, retries=self._cap_retries(spec.retries, name))

    @staticmethod
    def _dedup_key(
        req: _PublishRequest, options: _Options, headers: list[tuple[str, str]]
    ) -> str | None:
        explicit = options.get("Upstash-Deduplication-Id")
        if explicit:
            return "id:" + explicit
        content_based = options.get("Upstash-Content-Based-Deduplication") or ""
        # The Python SDK sends `True` (str(bool)), the JS SDK `true`.
        if content_based.strip().lower() == "true":
            return _content_dedup_key(req, headers)
        return None

    def _find_duplicate(self, key: str) -> str | None:
        now = time.monotonic()
        for stale in [k for k, (_, expiry) in self._dedup.items() if expiry <= now]:
            del self._dedup[stale]
        entry = self._dedup.get(key)
        return entry[0] if entry else None

    # -- messages ----------------------------------------------------------------------------

    def get_message(self, message_id: str) -> dict[str, Any] | None:
        """The Message JSON of an unsettled message; settled ones are gone, as in the service."""
        with self._cond:
            message = self._dispatcher.unsettled_locked(message_id)
            return None if message is None else _message_json(message)

    # -- schedules ---------------------------------------------------------------------------

    def create_schedule(self, req: _PublishRequest) -> dict[str, Any]:
        """Store (or replace, by Upstash-Schedule-Id) a schedule; no cron ever runs it here.

        The publish options are validated now, exactly as a publish would be, so a schedule
        that could never deliver is refused at creation.

        Raises:
            ApiError: a missing or malformed cron or schedule id, or an invalid publish (400/413).
        """
        options = _Options(req.options)
        cron = (options.get("Upstash-Cron") or "").strip()
        if not _is_cron(cron):
            raise ApiError(400, f"invalid Upstash-Cron header: {cron!r}")
        schedule_id = (options.get("Upstash-Schedule-Id") or "").strip() or random_id("scd_")
        if not _SCHEDULE_ID.fullmatch(schedule_id):
            raise ApiError(400, f"invalid Upstash-Schedule-Id header: {schedule_id!r}")
        request = dataclasses.replace(req, queue=None, schedule_id=schedule_id)
        template, _ = self._build_message(request)
        with self._cond:
            self._schedules[schedule_id] = _Schedule(
                id=schedule_id,
                cron=cron,
                request=request,
                template=template,
                created_at_ms=now_ms(),
            )
        log.info("qstash: schedule %s for %s", schedule_id, loggable(request.destination))
        return {"scheduleId": schedule_id}

    def list_schedules(self) -> list[dict[str, Any]]:
        with self._cond:
            return [_schedule_json(s) for s in self._schedules.values()]

    def get_schedule(self, schedule_id: str) -> dict[str, Any] | None:
        with self._cond:
            schedule = self._schedules.get(schedule_id)
            return None if schedule is None else _schedule_json(schedule)

    def delete_schedule(self, schedule_id: str) -> bool:
        with self._cond:
            return self._schedules.pop(schedule_id, None) is not None

    def trigger_schedule(self, schedule_id: str) -> tuple[int, dict[str, Any]] | None:
        """Publish one message from the schedule now; None if there is no such schedule.

        Raises:
            ApiError: the stored publish is no longer valid under the current config (for
                example a plan with a lower retry cap).
        """
        with self._cond:
            schedule = self._schedules.get(schedule_id)
            if schedule is None:
                return None
            schedule.last_run_ms = now_ms()
            request = schedule.request
        return self.publish(request)


# --------------------------------------------------------------------------------------------
# JSON shapes
# --------------------------------------------------------------------------------------------


def _message_json(message: Message) -> dict[str, Any]:
    """`GET /v2/messages/{id}`: the Message object, honouring Upstash-Redact-Fields."""
    redact_all_headers = bool({"header", "headers"} & message.redact)
    redacted_names = {
        field_name[len("header[") : -1].lower()
        for field_name in message.redact
        if field_name.startswith("header[") and field_name.endswith("]")
    }
    header = {
        name: ["REDACTED"] if redact_all_headers or name.lower() in redacted_names else values
        for name, values in header_map(message.headers).items()
    }
    data: dict[str, Any] = {
        "messageId": message.id,
        "url": message.url,
        "method": message.method,
        "header": header,
        "maxRetries": message.max_retries,
        "notBefore": message.not_before_ms,
        "createdAt": message.created_at_ms,
        "callerIP": message.caller_ip,
    }
    if "body" not in message.redact:
        data.update(_body_json(message.body))
    optional = {
        "callback": message.callback.url if message.callback else None,
        "failureCallback": message.failure_callback.url if message.failure_callback else None,
        "queueName": message.queue,
        "retryDelayExpression": message.retry_delay,
        "label": message.label,
    }
    data.update({key: value for key, value in optional.items() if value})
    return data


def _body_json(body: bytes) -> dict[str, str]:
    """A stored body as the API shows it: text, or base64 when it is not UTF-8."""
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"bodyBase64": b64(body)}


def _schedule_json(schedule: _Schedule) -> dict[str, Any]:
    """`GET /v2/schedules[/{id}]`: the fields the SDK's `parse_schedule_response` reads."""
    template = schedule.template
    data: dict[str, Any] = {
        "scheduleId": schedule.id,
        "cron": schedule.cron,
        "createdAt": schedule.created_at_ms,
        "destination": template.url,
        "method": template.method,
        "header": header_map(template.headers),
        "retries": template.max_retries,
        "callerIP": template.caller_ip,
        "isPaused": False,
    }
    data.update(_body_json(template.body))
    optional = {
        "callback": template.callback.url if template.callback else None,
        "failureCallback": template.failure_callback.url if template.failure_callback else None,
        "retryDelayExpression": template.retry_delay,
        "label": template.label,
        "lastScheduleTime": schedule.last_run_ms,
    }
    data.update({key: value for key, value in optional.items() if value})
    return data


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

api = Blueprint("qstash_api", __name__, url_prefix="/v2")
_PUBLISHER = "qstash.publisher"
_DISPATCHER = "qstash.dispatcher"


def init_app(app: Flask, publisher: Publisher, dispatcher: Dispatcher) -> None:
    """Serve the REST API from `app`: publishes go to `publisher`, cancels to `dispatcher`.

    Destinations contain `//` (`/v2/publish/http://...`): `app.url_map` must not merge slashes,
    and must be set so before this call (a rule takes the map's setting when it is added).
    """
    app.extensions[_PUBLISHER] = publisher
    app.extensions[_DISPATCHER] = dispatcher
    app.register_blueprint(api)


def _publisher() -> Publisher:
    publisher: Publisher = current_app.extensions[_PUBLISHER]
    return publisher


def _dispatcher() -> Dispatcher:
    dispatcher: Dispatcher = current_app.extensions[_DISPATCHER]
    return dispatcher


def _raw_target() -> tuple[str, str]:
    """The request path and query exactly as sent (not percent-decoded)."""
    environ = request.environ
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:  # some WSGI servers omit both; rebuild from the decoded pieces
        path = quote(environ.get("PATH_INFO", ""), safe="/:@!$&'()*+,;=-._~")
        query = environ.get("QUERY_STRING", "")
        raw = f"{path}?{query}" if query else path
    path, _, query = str(raw).partition("?")
    return path, query


def _split_destination(raw_dest: str, raw_query: str) -> tuple[str, list[tuple[str, str]]]:
    """Rebuild the destination URL and pull out the emulator's own query parameters.

    `qstash_token` and `upstash-*` parameters configure QStash; everything else belongs to the
    destination and is kept byte for byte, in order.
    """
    if raw_dest.lower().startswith(("http%3a", "https%3a")):
        raw_dest = unquote(raw_dest)  # some clients percent-encode the whole destination
    kept: list[str] = []
    options: list[tuple[str, str]] = []
    for piece in raw_query.split("&") if raw_query else []:
        raw_name, _, raw_value = piece.partition("=")
        name = unquote_plus(raw_name).lower()
        if name == "qstash_token":
            continue
        if name.startswith("upstash-"):
            options.append((name, unquote_plus(raw_value)))
        else:
            kept.append(piece)
    if kept:
        raw_dest += ("&" if "?" in raw_dest else "?") + "&".join(kept)
    return raw_dest, options


def _request_as_publish(raw_dest: str, queue_name: str | None) -> _PublishRequest:
    """The current Flask request as a publish to `raw_dest` (the raw path after the prefix)."""
    _, raw_query = _raw_target()
    destination, query_options = _split_destination(raw_dest, raw_query)
    headers = list(request.headers.items())
    return _PublishRequest(
        destination=destination,
        body=request.get_data(),
        options=headers + query_options,  # a real header wins over a query parameter
        caller_ip=request.remote_addr or "127.0.0.1",
        queue=queue_name,
        all_headers_forwardable=headers,
    )


def _publish_from_request(raw_dest: str, queue_name: str | None) -> tuple[Response, int]:
    status, reply = _publisher().publish(_request_as_publish(raw_dest, queue_name))
    return jsonify(reply), status


_QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _publish_batch_item(publisher: Publisher, item: Any, caller_ip: str) -> dict[str, Any]:
    """One `/v2/batch` entry; an invalid entry becomes an error item, not a failed batch."""
    try:
        if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
            raise ApiError(400, "each batch item needs a string `destination`")
        headers = item.get("headers") or {}
        body = item.get("body")
        queue_name = item.get("queue")
        if not isinstance(headers, dict) or not isinstance(body, str | None):
            raise ApiError(400, "batch `headers` must be an object and `body` a string")
        if queue_name is not None and not (
            isinstance(queue_name, str) and _QUEUE_NAME.fullmatch(queue_name)
        ):
            raise ApiError(400, "invalid queue name")
        pairs = [(str(k), str(v)) for k, v in headers.items()]
        req = _PublishRequest(
            destination=item["destination"],
            body=(body or "").encode("utf-8"),
            options=pairs,
            caller_ip=caller_ip,
            queue=queue_name,
            all_headers_forwardable=pairs,
        )
        return publisher.publish(req)[1]
    except ApiError as exc:
        return {"error": exc.message}


@api.post("/publish/<path:_destination>")
def publish(_destination: str) -> tuple[Response, int]:
    raw_path, _ = _raw_target()
    raw_dest = raw_path.split("/v2/publish/", 1)[1]
    return _publish_from_request(raw_dest, None)


@api.post("/enqueue/<queue_name>/<path:_destination>")
def enqueue(queue_name: str, _destination: str) -> tuple[Response, int]:
    if not _QUEUE_NAME.fullmatch(queue_name):
        raise ApiError(400, "invalid queue name: use letters, digits, '-', '_' or '.'")
    raw_path, _ = _raw_target()
    raw_dest = raw_path.split("/v2/enqueue/", 1)[1].partition("/")[2]
    return _publish_from_request(raw_dest, queue_name)


@api.post("/batch")
def batch() -> tuple[Response, int]:
    items = request.get_json(silent=True)
    if not isinstance(items, list):
        raise ApiError(400, "batch body must be a JSON array")
    caller_ip = request.remote_addr or "127.0.0.1"
    publisher = _publisher()
    return jsonify([_publish_batch_item(publisher, item, caller_ip) for item in items]), 200


@api.get("/messages/<message_id>")
def get_message(message_id: str) -> tuple[Response, int]:
    message = _publisher().get_message(message_id)
    if message is None:
        raise ApiError(404, "message not found")
    return jsonify(message), 200


@api.delete("/messages/<message_id>")
def cancel_message(message_id: str) -> tuple[Response, int] | tuple[str, int]:
    if not _dispatcher().cancel(message_id):
        raise ApiError(404, "message not found")
    return "", 200


@api.delete("/messages")
def cancel_messages() -> tuple[Response, int]:
    payload = request.get_json(silent=True) or {}
    ids = payload.get("messageIds") if isinstance(payload, dict) else None
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise ApiError(400, "`messageIds` must be a list of strings")
    return jsonify(cancelled=_dispatcher().cancel_many(ids or None)), 200


@api.get("/keys")
def keys() -> tuple[Response, int]:
    config = _publisher().config
    return jsonify(current=config.current_signing_key, next=config.next_signing_key), 200


# [SDK] qstash-py `ScheduleApi`: create POSTs the publish headers plus Upstash-Cron (and
# Upstash-Schedule-Id to replace one) to /v2/schedules/<destination> and reads
# `scheduleId`; list/get/delete use /v2/schedules[/<id>]. Pause, resume, queues and URL
# groups as destinations are not emulated.
@api.post("/schedules/<path:_destination>")
def create_schedule(_destination: str) -> tuple[Response, int]:
    raw_path, _ = _raw_target()
    raw_dest = raw_path.split("/v2/schedules/", 1)[1]
    return jsonify(_publisher().create_schedule(_request_as_publish(raw_dest, None))), 200


@api.get("/schedules")
def list_schedules() -> tuple[Response, int]:
    return jsonify(_publisher().list_schedules()), 200


@api.get("/schedules/<schedule_id>")
def get_schedule(schedule_id: str) -> tuple[Response, int]:
    schedule = _publisher().get_schedule(schedule_id)
    if schedule is None:
        raise ApiError(404, "schedule not found")
    return jsonify(schedule), 200


@api.delete("/schedules/<schedule_id>")
def delete_schedule(schedule_id: str) -> tuple[Response, int] | tuple[str, int]:
    if not _publisher().delete_schedule(schedule_id):
        raise ApiError(404, "schedule not found")
    return "", 200
