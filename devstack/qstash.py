"""Local stand-in for Upstash QStash (publish, signed delivery, retries, callbacks, DLQ).

The official `qstash` SDK talks to it unchanged (`QStash(DEV_TOKEN, base_url=url)`), and its
`Receiver` accepts the signatures it puts on deliveries and callbacks. It reuses the public
credentials of the vendor's own dev server, so either can be swapped in for the other.

What it does, in one pass:

* ``POST /v2/publish/<destination>`` (and ``/v2/enqueue/<queue>/<destination>``, ``/v2/batch``)
  stores a message and answers ``{"messageId": "msg_..."}``; duplicates answer 202.
* A scheduler thread hands due messages to a small pool of worker threads, which deliver them
  with the ``Upstash-*`` headers and an HS256 ``Upstash-Signature`` JWT.
* A non-2xx reply (except ``489`` + ``Upstash-NonRetryable-Error``) is retried with the same
  backoff rules as the real service; every computed delay is multiplied by
  ``QStashConfig.retry_delay_scale`` so tests run in milliseconds.
* After every attempt a callback message is published if ``Upstash-Callback`` was given; after
  the final failure the message gets a DLQ id and the failure callback fires. A provider answer
  larger than the plan's max message size reaches the callback cut to that many bytes.
* ``QStashConfig.plan`` (free, payg, fixed) sets the max message size and the retry cap; a retry
  count above the cap is rejected with 400 or clamped (``retries_over_cap``).
* ``QStashConfig.sub_includes_query`` chooses whether the JWT ``sub`` keeps the URL's query.
* ``POST /v2/schedules/<destination>`` stores a schedule (no cron runs it); the dev endpoint
  ``POST /__dev/schedules/<id>/trigger`` delivers one message from it now.
* ``/__dev/*`` endpoints (no auth) let tests list messages, wait for idleness, tweak knobs,
  trigger schedules and reset state.

Nothing here is imported by production code.
"""

from __future__ import annotations

import ast
import base64
import collections
import dataclasses
import email.utils
import functools
import hashlib
import heapq
import hmac
import json
import logging
import math
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote, unquote_plus, urlsplit

import jwt
import urllib3
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

__all__ = [
    "DEV_CURRENT_SIGNING_KEY",
    "DEV_NEXT_SIGNING_KEY",
    "DEV_TOKEN",
    "INVALID_DESTINATION_ERROR",
    "PLAN_LIMITS",
    "PlanLimits",
    "QStashConfig",
    "QStashEmulator",
    "create_app",
    "evaluate_retry_delay",
    "make_signature",
    "parse_duration",
    "signature_subject",
]

log = logging.getLogger(__name__)

# The public, deterministic credentials of Upstash's own `qstash dev` server (not secrets).
DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"

INVALID_DESTINATION_ERROR = (
    "invalid destination url: endpoint has invalid scheme, add http:// or https://"
)
DEFAULT_RETRIES = 3  # [DOC] used when Upstash-Retries is absent
MAX_BACKOFF_S = 86_400.0  # every retry delay is capped at one day
JWT_LIFETIME_S = 300
ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

Plan = Literal["free", "payg", "fixed"]
RetriesOverCap = Literal["reject", "clamp"]
State = Literal["pending", "in_flight", "delivered", "retry", "failed", "cancelled"]
Kind = Literal["message", "callback", "failure_callback"]
TERMINAL_STATES: frozenset[str] = frozenset({"delivered", "failed", "cancelled"})
_WAITING_STATES: frozenset[str] = frozenset({"pending", "retry"})


@dataclass(frozen=True)
class PlanLimits:
    """The limits of one QStash plan that the emulator enforces."""

    max_message_size: int
    """Bytes, decimal megabytes (1 MB = 1,000,000; decimal rather than MiB is [UNCONFIRMED])."""
    max_retries: int


PLAN_LIMITS: dict[Plan, PlanLimits] = {
    # Sizes: [DOC pricing] upstash.com/pricing/qstash.md: Free 1 MB, pay-as-you-go 10 MB,
    # fixed 50 MB. Retry caps: [3P] the older pricing page (3 / 5 / 20, the last for "Pro");
    # whether they still hold today is [UNCONFIRMED] (the docs only say "based on your plan").
    "free": PlanLimits(max_message_size=1_000_000, max_retries=3),
    "payg": PlanLimits(max_message_size=10_000_000, max_retries=5),
    "fixed": PlanLimits(max_message_size=50_000_000, max_retries=20),
}
RETRIES_OVER_CAP: frozenset[str] = frozenset({"reject", "clamp"})


@dataclass
class QStashConfig:
    """Settings of one emulator instance; the defaults mimic the Free plan and the dev server."""

    token: str = DEV_TOKEN
    current_signing_key: str = DEV_CURRENT_SIGNING_KEY
    next_signing_key: str = DEV_NEXT_SIGNING_KEY
    plan: Plan = "free"
    """Chooses the default `max_message_size` and `max_retries` (see PLAN_LIMITS)."""
    max_message_size: int | None = None
    """Bytes; None means the plan's. A larger publish body gets 413; a callback's `body` is the
    provider's answer cut to this many bytes ([DOC callbacks] "We may truncate the response
    body if it exceeds your plan limits (Max Message Size)"; how is [UNCONFIRMED])."""
    max_retries: int | None = None
    """The retry cap; None means the plan's. Applies to Upstash-Retries and to the callbacks'
    Upstash-Callback-Retries / Upstash-Failure-Callback-Retries."""
    retries_over_cap: RetriesOverCap = "reject"
    """What a retry count above the cap does: `reject` answers the publish 400 `{"error": ...}`,
    `clamp` silently uses the cap. Which one QStash does is [UNCONFIRMED]. Reject is the default
    because it is the stricter: code that passes against it also passes if QStash clamps, while
    code tested only against clamp could see every publish refused in production."""
    sub_includes_query: bool = True
    """Whether the JWT `sub` is the URL called with its query string (True) or without it.
    [DOC] `sub` is "the url of your endpoint, where this request is sent to"; whether the query
    is part of it is [UNCONFIRMED] (very likely, since QStash keeps URLs verbatim [SDK tests])."""
    retry_delay_scale: float = 1.0
    """Multiplies every computed retry delay (backoff, Upstash-Retry-Delay, Retry-After)."""
    default_timeout_s: float = 900.0
    """Per-attempt HTTP timeout when Upstash-Timeout is absent (Free plan: 15 minutes)."""
    region: str = "EU-CENTRAL-1"
    duplicate_deliveries: int = 1
    """Send every delivery attempt this many times at once, to exercise at-least-once handling."""
    reorder_callbacks: bool = False
    """Hold a message's callbacks until it is settled, then deliver them newest first."""
    dedup_window_s: float = 600.0
    """How long a deduplication id is remembered (the docs say 10 minutes)."""
    delivery_workers: int = 32
    """Size of the worker pool that performs HTTP deliveries."""

    def __post_init__(self) -> None:
        if self.plan not in PLAN_LIMITS:
            raise ValueError(f"unknown plan {self.plan!r}; known: {sorted(PLAN_LIMITS)}")
        if self.retries_over_cap not in RETRIES_OVER_CAP:
            raise ValueError(f"retries_over_cap must be one of {sorted(RETRIES_OVER_CAP)}")

    @property
    def message_size_limit(self) -> int:
        """The max message size in force: the explicit setting, else the plan's."""
        if self.max_message_size is not None:
            return self.max_message_size
        return PLAN_LIMITS[self.plan].max_message_size

    @property
    def retry_cap(self) -> int:
        """The max retries in force: the explicit setting, else the plan's."""
        if self.max_retries is not None:
            return self.max_retries
        return PLAN_LIMITS[self.plan].max_retries


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _random_id(prefix: str, length: int = 27) -> str:
    """Return `prefix` + random base58, the shape of real ids (`msg_2XavMm...`)."""
    return prefix + "".join(secrets.choice(_BASE58) for _ in range(length))


def _now_ms() -> int:
    return int(time.time() * 1000)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86_400.0,
}


def parse_duration(text: str) -> float:
    """Parse `50s`, `1d10h30m`, `6m5s` or `250ms` (Go durations plus `d`) into seconds.

    A bare number is read as seconds, which is lenient but harmless for a local stand-in.

    Raises:
        ValueError: the text is not a duration.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    total = 0.0
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration: {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total


def _go_round(x: float) -> float:
    """Round half away from zero, like Go's math.Round (Python's round() is banker's)."""
    return float(math.copysign(math.floor(abs(x) + 0.5), x))


# name -> (function, min args, max args)
_RETRY_DELAY_FUNCTIONS: dict[str, tuple[Callable[..., float], int, int]] = {
    "pow": (math.pow, 2, 2),
    "sqrt": (math.sqrt, 1, 1),
    "abs": (math.fabs, 1, 1),
    "exp": (math.exp, 1, 1),
    "floor": (lambda x: float(math.floor(x)), 1, 1),
    "ceil": (lambda x: float(math.ceil(x)), 1, 1),
    "round": (_go_round, 1, 1),
    "min": (min, 1, 32),
    "max": (max, 1, 32),
}
_BINARY_OPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: math.pow,  # float pow raises OverflowError instead of building a huge int
}
_MAX_EXPRESSION_LENGTH = 256


def evaluate_retry_delay(expression: str, retried: int) -> float:
    """Evaluate an `Upstash-Retry-Delay` expression (milliseconds) without `eval`.

    Only numbers, the variable `retried`, `+ - * / **`, unary `+ -` and the functions
    pow, sqrt, abs, exp, floor, ceil, round, min and max are accepted; the arithmetic is done in
    floats so `**` cannot be used to allocate a gigantic integer.

    Raises:
        ValueError: the expression is malformed, uses anything else, or is not finite.
    """
    if len(expression) > _MAX_EXPRESSION_LENGTH:
        raise ValueError("retry delay expression is too long")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        value = _eval_node(tree.body, float(retried))
    except (SyntaxError, ArithmeticError, RecursionError, TypeError) as exc:
        raise ValueError(f"invalid retry delay expression: {exc}") from exc
    if not math.isfinite(value):
        raise ValueError("retry delay expression is not finite")
    return value


def _eval_node(node: ast.expr, retried: float) -> float:
    """Evaluate one whitelisted node; anything unexpected raises ValueError."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError("only numbers are allowed")
        return float(node.value)
    if isinstance(node, ast.Name) and node.id == "retried":
        return retried
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left = _eval_node(node.left, retried)
        right = _eval_node(node.right, retried)
        return _BINARY_OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval_node(node.operand, retried)
        return -operand if isinstance(node.op, ast.USub) else operand
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _RETRY_DELAY_FUNCTIONS
        and not node.keywords
    ):
        function, min_args, max_args = _RETRY_DELAY_FUNCTIONS[node.func.id]
        if not min_args <= len(node.args) <= max_args:
            raise ValueError(f"wrong number of arguments to {node.func.id}")
        args = [_eval_node(arg, retried) for arg in node.args]  # Starred is rejected here
        return float(function(*args))
    raise ValueError(f"unsupported syntax: {type(node).__name__}")


# Reply headers that tell QStash when to retry, in the order they are consulted.
_RETRY_AFTER_HEADERS = (
    "Retry-After",
    "X-Ratelimit-Reset",
    "X-Ratelimit-Reset-Requests",
    "X-Ratelimit-Reset-Tokens",
)


def _parse_retry_after(value: str, now: float) -> float | None:
    """Seconds until retry from seconds, an HTTP date or a Go duration; None if unusable."""
    value = value.strip()
    seconds: float | None
    try:
        seconds = parse_duration(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = max(0.0, when.timestamp() - now)
    # Values above a day fall back to the normal rules, as the real service does.
    return seconds if seconds <= MAX_BACKOFF_S else None


def _delay_from_response(headers: Mapping[str, list[str]], now: float) -> float | None:
    for name in _RETRY_AFTER_HEADERS:
        for value in headers.get(name, []):
            seconds = _parse_retry_after(value, now)
            if seconds is not None:
                return seconds
    return None


def _canonical_header(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: `x-ratelimit-reset` -> `X-Ratelimit-Reset`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Group header pairs into Go's `http.Header` JSON shape, `{Name: [values]}`."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(_canonical_header(name), []).append(value)
    return grouped


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _go_json(value: object) -> bytes:
    """Serialise like Go's encoding/json: compact, UTF-8, HTML-sensitive characters escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # These characters can only occur inside JSON strings, so a textual replace is safe.
    for raw, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode("utf-8")


def make_signature(signing_key: str, url: str, body: bytes, *, now: float | None = None) -> str:
    """Build the `Upstash-Signature` JWT for a request to `url` carrying `body`.

    Claims follow the real service: `sub` is `url` exactly as given (the emulator passes the
    URL with or without its query, see `signature_subject`), `body` is the padded base64url
    SHA-256 of the raw bytes, `jti` is a string (PyJWT >= 2.10 insists) and there is no `aud`
    (PyJWT rejects a non-empty one when no audience is expected).
    """
    issued_at = int(time.time() if now is None else now)
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii")
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": issued_at + JWT_LIFETIME_S,
        "nbf": 0,  # the service switched to 0 to avoid clock-skew rejections
        "iat": issued_at,
        "jti": _random_id("jwt_"),
        "body": digest,
    }
    return jwt.encode(claims, signing_key, algorithm="HS256")


def signature_subject(url: str, include_query: bool) -> str:
    """The JWT `sub` for a request to `url`: the URL string as is, or cut before its `?`.

    Byte for byte otherwise (no re-encoding, no normalisation), since receivers compare `sub`
    with a configured string exactly ([SDK] qstash-py `Receiver`: `decoded["sub"] != url`).
    """
    return url if include_query else url.partition("?")[0]


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as `{"error": message}` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _CallbackSpec:
    """Where and how a (failure) callback message is sent; None fields inherit the source's."""

    url: str
    failure: bool = False  # from Upstash-Failure-Callback-* rather than Upstash-Callback-*
    method: str = "POST"
    forward: tuple[tuple[str, str], ...] = ()
    retries: int | None = None
    timeout_s: float | None = None
    retry_delay: str | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class _Attempt:
    retried: int
    status: int | None
    at: int  # unix ms
    error: str | None = None


@dataclass(frozen=True)
class _Outcome:
    """What one delivery attempt produced; `status` is None when no reply came back."""

    status: int | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def non_retryable(self) -> bool:
        flag = self.headers.get("Upstash-Nonretryable-Error", [""])[0]
        return self.status == 489 and flag.strip().lower() == "true"


@dataclass(eq=False)
class _Message:
    """One stored message (a publish, or a callback the emulator published itself)."""

    id: str
    kind: Kind
    url: str
    method: str
    body: bytes
    headers: list[tuple[str, str]]  # as delivered, without Upstash-* (also `sourceHeader`)
    max_retries: int
    retry_delay: str | None
    timeout_s: float
    created_at_ms: int
    not_before_ms: int
    caller_ip: str
    generation: int
    callback: _CallbackSpec | None = None
    failure_callback: _CallbackSpec | None = None
    source_message_id: str | None = None
    label: str | None = None
    queue: str | None = None
    redact: frozenset[str] = frozenset()
    state: State = "pending"
    retried: int = 0
    attempts: list[_Attempt] = field(default_factory=list)
    dlq_id: str | None = None
    schedule_id: str | None = None  # set when a schedule produced the message
    schedule_token: int = 0
    held_callbacks: list[_Message] = field(default_factory=list)


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
    template: _Message
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


def _parse_callback(options: _Options, prefix: str) -> _CallbackSpec | None:
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
        (_canonical_header(name), value)
        for name, value in options.with_prefix(f"{prefix}-Forward-")
    )
    retries_raw = options.get(f"{prefix}-Retries")
    return _CallbackSpec(
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
    headers = [(_canonical_header(n), v) for n, v in options.with_prefix("Upstash-Forward-")]
    if (options.get("Upstash-Header-Forward") or "").strip().lower() == "true":
        headers += [
            (_canonical_header(n), v)
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


# --------------------------------------------------------------------------------------------
# Delivery over HTTP
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DeliveryRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float


def _response_headers(
    response: urllib3.BaseHTTPResponse, decoded_gzip: bool
) -> dict[str, list[str]]:
    """The reply's headers in Go's shape; drop the encoding headers Go drops after gunzip."""
    pairs = [(name, value) for name in response.headers for value in response.headers.getlist(name)]
    grouped = _header_map(pairs)
    if decoded_gzip:
        grouped.pop("Content-Encoding", None)
        grouped.pop("Content-Length", None)
    return grouped


def _send(delivery: _DeliveryRequest, max_body: int) -> _Outcome:
    """Perform one HTTP request; never raises. The body is truncated to `max_body` bytes."""
    deadline = time.monotonic() + delivery.timeout_s
    timeout = urllib3.Timeout(connect=delivery.timeout_s, read=delivery.timeout_s)
    # A pool per attempt: no stale keep-alive socket can turn a healthy destination into a
    # spurious failure after it restarts between tests.
    pool = urllib3.PoolManager(retries=False, timeout=timeout)
    try:
        response = pool.request(
            delivery.method,
            delivery.url,
            body=delivery.body,
            headers=delivery.headers,
            redirect=False,  # a 3xx is just a non-2xx reply; following it is unconfirmed
            preload_content=False,
        )
        try:
            kept = bytearray()
            # Read the whole reply (the real service waits for it) but keep only the limit.
            for chunk in response.stream(64 * 1024, decode_content=True):
                if len(kept) < max_body:
                    kept += chunk[: max_body - len(kept)]
                if time.monotonic() > deadline:
                    return _Outcome(error="timeout")
            decoded = response.headers.get("Content-Encoding", "").lower() == "gzip"
            return _Outcome(
                status=response.status,
                headers=_response_headers(response, decoded),
                body=bytes(kept),
            )
        finally:
            response.release_conn()
    except urllib3.exceptions.NewConnectionError:
        # Checked first: urllib3 derives it from ConnectTimeoutError for historical reasons.
        return _Outcome(error="connection failed")
    except urllib3.exceptions.TimeoutError:
        return _Outcome(error="timeout")
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        # ValueError: http.client refuses e.g. a header value containing a newline.
        return _Outcome(error=f"request failed: {type(exc).__name__}")
    finally:
        pool.clear()


def _send_copy(delivery: _DeliveryRequest, max_body: int) -> None:
    """Send a duplicate of an attempt and ignore its reply (at-least-once simulation)."""
    _send(delivery, max_body)


def _loggable(url: str) -> str:
    """The URL without its query, which may carry phone numbers or tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


class QStashEmulator:
    """In-memory message store, scheduler and delivery workers behind the Flask app.

    One lock (a Condition) guards all state; HTTP calls are made without holding it. Threads
    are daemons so a forgotten `close()` cannot hang interpreter exit, but `close()` joins them.
    """

    def __init__(self, config: QStashConfig) -> None:
        self.config = config
        self._initial_config = dataclasses.replace(config)
        self._cond = threading.Condition()
        self._messages: dict[str, _Message] = {}
        self._dedup: dict[str, tuple[str, float]] = {}  # key -> (message id, expiry monotonic)
        self._heap: list[tuple[float, int, str, int]] = []  # (due, seq, message id, token)
        self._seq = 0
        self._queues: dict[str, collections.deque[_Message]] = {}
        self._queue_active: dict[str, _Message] = {}
        self._schedules: dict[str, _Schedule] = {}
        self._generation = 0
        self._busy = 0  # jobs queued or running in the worker pool
        self._last_dlq: tuple[int, int] = (0, 0)
        self._closed = False
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._worker_loop, name=f"qstash-worker-{i}", daemon=True)
            for i in range(max(1, config.delivery_workers))
        ]
        self._threads.append(
            threading.Thread(target=self._scheduler_loop, name="qstash-scheduler", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the scheduler and workers; idempotent. In-flight HTTP calls are not aborted."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for _ in range(len(self._threads) - 1):
            self._jobs.put(None)
        # One shared deadline: a worker stuck in a slow HTTP call must not stall close() for
        # long; it is a daemon and exits when its request times out.
        deadline = time.monotonic() + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is scheduled or in flight; False if `timeout` seconds pass first."""
        with self._cond:
            if self._closed:
                return self._is_idle()
            return self._cond.wait_for(self._is_idle, timeout=timeout)

    def reset(self, restore_config: bool = False) -> None:
        """Forget every message and schedule; late results of in-flight attempts are dropped."""
        with self._cond:
            self._generation += 1
            self._messages.clear()
            self._schedules.clear()
            self._dedup.clear()
            self._heap.clear()
            self._queues.clear()
            self._queue_active.clear()
            if restore_config:
                for item in dataclasses.fields(self.config):
                    setattr(self.config, item.name, getattr(self._initial_config, item.name))
            self._cond.notify_all()

    def _is_idle(self) -> bool:
        if self._busy:
            return False
        return all(m.state in TERMINAL_STATES for m in self._messages.values())

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
            message.generation = self._generation
            self._messages[message.id] = message
            if req.queue is not None:
                self._enqueue_locked(message, req.queue)
            else:
                self._schedule_locked(message, max(0, message.not_before_ms - _now_ms()) / 1000)
        log.info("qstash: accepted %s for %s", message.id, _loggable(message.url))
        return 200, {"messageId": message.id}

    def _build_message(self, req: _PublishRequest) -> tuple[_Message, str | None]:
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
        created_at = _now_ms()
        message = _Message(
            id=_random_id("msg_"),
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

    def _capped_callback(self, spec: _CallbackSpec | None) -> _CallbackSpec | None:
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

    # -- management API ----------------------------------------------------------------------

    def cancel(self, message_id: str) -> bool:
        """Cancel a message that is not settled yet: no further attempts and no callbacks."""
        with self._cond:
            message = self._messages.get(message_id)
            if message is None or message.state in TERMINAL_STATES:
                return False
            message.state = "cancelled"
            self._on_settled_locked(message)
            self._cond.notify_all()
            return True

    def cancel_many(self, message_ids: list[str] | None) -> int:
        """Cancel the given messages, or every unsettled one when `message_ids` is None."""
        with self._cond:
            ids = list(self._messages) if message_ids is None else message_ids
        return sum(self.cancel(message_id) for message_id in ids)

    def get_message(self, message_id: str) -> dict[str, Any] | None:
        """The Message JSON of an unsettled message; settled ones are gone, as in the service."""
        with self._cond:
            message = self._messages.get(message_id)
            if message is None or message.state in TERMINAL_STATES:
                return None
            return _message_json(message)

    def list_messages(self) -> list[dict[str, Any]]:
        """Every message, oldest first, for the dev listing (no headers or bodies: no secrets)."""
        with self._cond:
            return [_dev_summary(m) for m in self._messages.values()]

    # -- scheduling --------------------------------------------------------------------------

    def _schedule_locked(self, message: _Message, delay_s: float) -> None:
        message.schedule_token += 1
        self._seq += 1
        due = time.monotonic() + max(0.0, delay_s)
        heapq.heappush(self._heap, (due, self._seq, message.id, message.schedule_token))
        self._cond.notify_all()

    def _enqueue_locked(self, message: _Message, queue_name: str) -> None:
        """Append to a FIFO queue with parallelism 1; it starts when its predecessor settles."""
        message.queue = queue_name
        self._queues.setdefault(queue_name, collections.deque()).append(message)
        self._advance_queue_locked(queue_name)

    def _advance_queue_locked(self, queue_name: str) -> None:
        active = self._queue_active.get(queue_name)
        if active is not None and active.state not in TERMINAL_STATES:
            return
        waiting = self._queues.get(queue_name)
        while waiting:
            candidate = waiting.popleft()
            if candidate.state == "pending":
                self._queue_active[queue_name] = candidate
                self._schedule_locked(candidate, 0.0)
                return
        self._queue_active.pop(queue_name, None)
        self._queues.pop(queue_name, None)

    def _scheduler_loop(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, message_id, token = heapq.heappop(self._heap)
                    message = self._messages.get(message_id)
                    if (
                        message is None
                        or message.schedule_token != token
                        or message.state not in _WAITING_STATES
                    ):
                        continue  # cancelled, reset or rescheduled since
                    message.state = "in_flight"
                    self._submit_locked(functools.partial(self._run_attempt, message))
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout=wait)

    def _submit_locked(self, job: Callable[[], None]) -> None:
        self._busy += 1
        self._jobs.put(job)

    def _worker_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("qstash: delivery job crashed")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    # -- delivery ----------------------------------------------------------------------------

    def _run_attempt(self, message: _Message) -> None:
        with self._cond:
            stale = message.generation != self._generation or message.state != "in_flight"
            if stale or self._closed:
                return
            retried = message.retried
            copies = max(1, self.config.duplicate_deliveries)
            max_body = self.config.message_size_limit
        try:
            delivery = self._build_delivery(message, retried)
        except Exception:
            # Never leave a message stuck in_flight (wait_idle would hang); count it as failed.
            log.exception("qstash: could not build the delivery of %s", message.id)
            outcome = _Outcome(error="internal error")
        else:
            # Extra copies simulate at-least-once duplicates; only the first reply counts.
            with self._cond:
                for _ in range(copies - 1):
                    self._submit_locked(functools.partial(_send_copy, delivery, max_body))
            outcome = _send(delivery, max_body)
        log.info(
            "qstash: %s attempt %d to %s -> %s",
            message.id,
            retried,
            _loggable(message.url),
            outcome.status if outcome.status is not None else outcome.error,
        )
        with self._cond:
            self._apply_outcome_locked(message, retried, outcome)
            self._cond.notify_all()

    def _build_delivery(self, message: _Message, retried: int) -> _DeliveryRequest:
        headers: dict[str, str] = {}
        for name, value in message.headers:
            # http.client cannot send a repeated name from a dict; join like a proxy would.
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        subject = signature_subject(message.url, self.config.sub_includes_query)
        if message.schedule_id is not None:
            # [DOC receiving] the header is sent only on messages a schedule triggered
            headers["Upstash-Schedule-Id"] = message.schedule_id
        headers.update(
            {
                "User-Agent": "Upstash-QStash",
                "Accept-Encoding": "gzip",  # what Go's transport sends (and transparently undoes)
                "Upstash-Message-Id": message.id,
                "Upstash-Retried": str(retried),
                "Upstash-Caller-Ip": message.caller_ip,
                "Upstash-Region": self.config.region,
                "Upstash-Signature": make_signature(
                    self.config.current_signing_key, subject, message.body
                ),
            }
        )
        return _DeliveryRequest(
            method=message.method,
            url=message.url,
            headers=headers,
            body=message.body,
            timeout_s=message.timeout_s,
        )

    def _apply_outcome_locked(self, message: _Message, retried: int, outcome: _Outcome) -> None:
        if self._messages.get(message.id) is not message or message.state != "in_flight":
            return  # reset or cancelled while the request was in flight: drop it silently
        message.attempts.append(_Attempt(retried, outcome.status, _now_ms(), outcome.error))
        if outcome.success:
            message.state = "delivered"
        elif outcome.non_retryable or retried >= message.max_retries:
            message.state = "failed"
            message.dlq_id = self._next_dlq_id()
        else:
            message.state = "retry"
            message.retried = retried + 1
            self._schedule_locked(message, self._retry_delay_s(message, retried, outcome))
        if message.callback is not None:
            payload = _callback_payload(message, retried, outcome)
            self._publish_callback_locked(message, message.callback, "callback", payload)
        if message.state == "failed" and message.failure_callback is not None:
            payload = _callback_payload(message, retried, outcome)
            payload["dlqId"] = message.dlq_id
            self._publish_callback_locked(
                message, message.failure_callback, "failure_callback", payload
            )
        if message.state in TERMINAL_STATES:
            self._on_settled_locked(message)

    def _retry_delay_s(self, message: _Message, retried: int, outcome: _Outcome) -> float:
        """Reply headers first, then Upstash-Retry-Delay, then e^(2.5 n); scaled for tests."""
        delay = _delay_from_response(outcome.headers, time.time())
        if delay is None and message.retry_delay is not None:
            try:
                delay = min(
                    MAX_BACKOFF_S, evaluate_retry_delay(message.retry_delay, retried) / 1000
                )
            except ValueError:
                delay = None  # validated at publish, but `retried` can still overflow it
        if delay is None:
            delay = min(MAX_BACKOFF_S, math.exp(2.5 * (retried + 1)))
        return max(0.0, delay) * self.config.retry_delay_scale

    def _next_dlq_id(self) -> str:
        """DLQ ids look like Redis stream ids, `<unix ms>-<seq>`."""
        now = _now_ms()
        last_ms, last_seq = self._last_dlq
        self._last_dlq = (last_ms, last_seq + 1) if now <= last_ms else (now, 0)
        return f"{self._last_dlq[0]}-{self._last_dlq[1]}"

    def _publish_callback_locked(
        self, source: _Message, spec: _CallbackSpec, kind: Kind, payload: dict[str, Any]
    ) -> None:
        """Publish a callback as a new, signed, retried message of its own."""
        created_at = _now_ms()
        callback = _Message(
            id=_random_id("msg_"),
            kind=kind,
            url=spec.url,
            method=spec.method,
            body=_go_json(payload),
            headers=[*spec.forward, ("Content-Type", "application/json")],
            max_retries=source.max_retries if spec.retries is None else spec.retries,
            retry_delay=spec.retry_delay or source.retry_delay,
            timeout_s=spec.timeout_s or source.timeout_s,
            created_at_ms=created_at,
            not_before_ms=created_at + int(spec.delay_s * 1000),
            caller_ip=source.caller_ip,
            generation=self._generation,
            source_message_id=source.id,
        )
        self._messages[callback.id] = callback
        if kind == "callback" and self.config.reorder_callbacks:
            source.held_callbacks.append(callback)  # released when the source settles
        else:
            self._schedule_locked(callback, spec.delay_s)

    def _on_settled_locked(self, message: _Message) -> None:
        """Start the next queued message and release held-back callbacks, newest first."""
        if message.queue is not None:
            self._advance_queue_locked(message.queue)
        if message.held_callbacks:
            # A private FIFO queue delivers them one after another, so the order is real.
            held, message.held_callbacks = message.held_callbacks, []
            for callback in reversed(held):
                self._enqueue_locked(callback, f"__reorder__/{message.id}")

    # -- dev knobs ---------------------------------------------------------------------------

    def update_config(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a partial update of the tunable settings and return them all (`config_json`).

        `plan` only changes the defaults: an explicit `max_message_size` or `max_retries`
        stays in force across a plan change until it is set back to None (JSON null).

        Raises:
            ApiError: an unknown key or a value of the wrong type or range.
        """
        for key, value in changes.items():
            check = _CONFIG_VALIDATORS.get(key)
            if check is None:
                raise ApiError(400, f"unknown setting {key!r}; known: {sorted(_CONFIG_VALIDATORS)}")
            if not check(value):
                raise ApiError(400, f"invalid value for {key!r}: {value!r}")
        with self._cond:
            for key, value in changes.items():
                setattr(self.config, key, value)
            return self.config_json()

    def config_json(self) -> dict[str, Any]:
        """The tunable settings, plus the limits in force (`effective`) after plan defaults."""
        with self._cond:
            data: dict[str, Any] = {key: getattr(self.config, key) for key in _CONFIG_VALIDATORS}
            data["effective"] = {
                "max_message_size": self.config.message_size_limit,
                "max_retries": self.config.retry_cap,
            }
            return data

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
        schedule_id = (options.get("Upstash-Schedule-Id") or "").strip() or _random_id("scd_")
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
                created_at_ms=_now_ms(),
            )
        log.info("qstash: schedule %s for %s", schedule_id, _loggable(request.destination))
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
            schedule.last_run_ms = _now_ms()
            request = schedule.request
        return self.publish(request)


def _is_optional_int(value: object, minimum: int) -> bool:
    if value is None:
        return True
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


_CONFIG_VALIDATORS: dict[str, Callable[[Any], bool]] = {
    "retry_delay_scale": lambda v: _is_number(v) and v >= 0,
    "plan": lambda v: isinstance(v, str) and v in PLAN_LIMITS,
    "max_message_size": lambda v: _is_optional_int(v, 1),  # null: back to the plan's
    "max_retries": lambda v: _is_optional_int(v, 0),  # null: back to the plan's
    "retries_over_cap": lambda v: isinstance(v, str) and v in RETRIES_OVER_CAP,
    "sub_includes_query": lambda v: isinstance(v, bool),
    "duplicate_deliveries": lambda v: _is_int(v) and v >= 1,
    "reorder_callbacks": lambda v: isinstance(v, bool),
    "default_timeout_s": lambda v: _is_number(v) and v > 0,
    "dedup_window_s": lambda v: _is_number(v) and v >= 0,
}
"""The settings POST /__dev/config may change, with their checks."""

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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------
# JSON shapes
# --------------------------------------------------------------------------------------------


def _callback_payload(source: _Message, retried: int, outcome: _Outcome) -> dict[str, Any]:
    """The callback body of one attempt; zero or empty values are omitted, as Go's omitempty.

    An attempt with no reply (timeout, refused connection) has no status, header or body.
    """
    payload: dict[str, Any] = {}
    if outcome.status is not None:
        payload["status"] = outcome.status
        if outcome.headers:
            payload["header"] = outcome.headers
        if outcome.body:
            payload["body"] = _b64(outcome.body)
    if retried:
        payload["retried"] = retried
    payload["sourceMessageId"] = source.id
    payload["url"] = source.url
    payload["method"] = source.method
    if source.headers:
        payload["sourceHeader"] = _header_map(source.headers)
    if source.body:
        payload["sourceBody"] = _b64(source.body)
    if source.max_retries:
        payload["maxRetries"] = source.max_retries
    if source.not_before_ms:
        payload["notBefore"] = source.not_before_ms
    if source.created_at_ms:
        payload["createdAt"] = source.created_at_ms
    if source.schedule_id:
        payload["scheduleId"] = source.schedule_id
    if source.caller_ip:
        payload["callerIP"] = source.caller_ip
    return payload


def _message_json(message: _Message) -> dict[str, Any]:
    """`GET /v2/messages/{id}`: the Message object, honouring Upstash-Redact-Fields."""
    redact_all_headers = bool({"header", "headers"} & message.redact)
    redacted_names = {
        field_name[len("header[") : -1].lower()
        for field_name in message.redact
        if field_name.startswith("header[") and field_name.endswith("]")
    }
    header = {
        name: ["REDACTED"] if redact_all_headers or name.lower() in redacted_names else values
        for name, values in _header_map(message.headers).items()
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
        return {"bodyBase64": _b64(body)}


def _schedule_json(schedule: _Schedule) -> dict[str, Any]:
    """`GET /v2/schedules[/{id}]`: the fields the SDK's `parse_schedule_response` reads."""
    template = schedule.template
    data: dict[str, Any] = {
        "scheduleId": schedule.id,
        "cron": schedule.cron,
        "createdAt": schedule.created_at_ms,
        "destination": template.url,
        "method": template.method,
        "header": _header_map(template.headers),
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


def _dev_summary(message: _Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": message.kind,
        "url": message.url,
        "method": message.method,
        "state": message.state,
        "sourceMessageId": message.source_message_id,
        "label": message.label,
        "queue": message.queue,
        "maxRetries": message.max_retries,
        "scheduleId": message.schedule_id,
        "attempts": [
            {"retried": a.retried, "status": a.status, "at": a.at, "error": a.error}
            for a in message.attempts
        ],
        "dlqId": message.dlq_id,
    }


# --------------------------------------------------------------------------------------------
# Flask app
# --------------------------------------------------------------------------------------------


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


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _bearer_token() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.args.get("qstash_token")


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


def _publish_from_request(
    emulator: QStashEmulator, raw_dest: str, queue_name: str | None
) -> tuple[Response, int]:
    status, reply = emulator.publish(_request_as_publish(raw_dest, queue_name))
    return jsonify(reply), status


_QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def _publish_batch_item(emulator: QStashEmulator, item: Any, caller_ip: str) -> dict[str, Any]:
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
        return emulator.publish(req)[1]
    except ApiError as exc:
        return {"error": exc.message}


def create_app(config: QStashConfig | None = None) -> Flask:
    """Build the QStash stand-in; its state lives at `app.extensions["qstash"]`."""
    cfg = dataclasses.replace(config) if config is not None else QStashConfig()
    app = Flask(__name__)
    # Destinations contain `//` (`/v2/publish/http://...`); never redirect to a merged path.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    emulator = QStashEmulator(cfg)
    app.extensions["qstash"] = emulator

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return _error(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.code or 500, (exc.description or exc.name).strip())

    @app.before_request
    def _authenticate() -> tuple[Response, int] | None:
        if not request.path.startswith("/v2/"):
            return None
        token = _bearer_token()
        if token is None or not hmac.compare_digest(token.encode(), cfg.token.encode()):
            return _error(401, "unauthorized: missing or invalid token")
        return None

    @app.post("/v2/publish/<path:_destination>")
    def publish(_destination: str) -> tuple[Response, int]:
        raw_path, _ = _raw_target()
        raw_dest = raw_path.split("/v2/publish/", 1)[1]
        return _publish_from_request(emulator, raw_dest, None)

    @app.post("/v2/enqueue/<queue_name>/<path:_destination>")
    def enqueue(queue_name: str, _destination: str) -> tuple[Response, int]:
        if not _QUEUE_NAME.fullmatch(queue_name):
            raise ApiError(400, "invalid queue name: use letters, digits, '-', '_' or '.'")
        raw_path, _ = _raw_target()
        raw_dest = raw_path.split("/v2/enqueue/", 1)[1].partition("/")[2]
        return _publish_from_request(emulator, raw_dest, queue_name)

    @app.post("/v2/batch")
    def batch() -> tuple[Response, int]:
        items = request.get_json(silent=True)
        if not isinstance(items, list):
            raise ApiError(400, "batch body must be a JSON array")
        caller_ip = request.remote_addr or "127.0.0.1"
        return jsonify([_publish_batch_item(emulator, item, caller_ip) for item in items]), 200

    @app.get("/v2/messages/<message_id>")
    def get_message(message_id: str) -> tuple[Response, int]:
        message = emulator.get_message(message_id)
        if message is None:
            raise ApiError(404, "message not found")
        return jsonify(message), 200

    @app.delete("/v2/messages/<message_id>")
    def cancel_message(message_id: str) -> tuple[Response, int] | tuple[str, int]:
        if not emulator.cancel(message_id):
            raise ApiError(404, "message not found")
        return "", 200

    @app.delete("/v2/messages")
    def cancel_messages() -> tuple[Response, int]:
        payload = request.get_json(silent=True) or {}
        ids = payload.get("messageIds") if isinstance(payload, dict) else None
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise ApiError(400, "`messageIds` must be a list of strings")
        return jsonify(cancelled=emulator.cancel_many(ids or None)), 200

    @app.get("/v2/keys")
    def keys() -> tuple[Response, int]:
        return jsonify(current=cfg.current_signing_key, next=cfg.next_signing_key), 200

    # [SDK] qstash-py `ScheduleApi`: create POSTs the publish headers plus Upstash-Cron (and
    # Upstash-Schedule-Id to replace one) to /v2/schedules/<destination> and reads
    # `scheduleId`; list/get/delete use /v2/schedules[/<id>]. Pause, resume, queues and URL
    # groups as destinations are not emulated.
    @app.post("/v2/schedules/<path:_destination>")
    def create_schedule(_destination: str) -> tuple[Response, int]:
        raw_path, _ = _raw_target()
        raw_dest = raw_path.split("/v2/schedules/", 1)[1]
        return jsonify(emulator.create_schedule(_request_as_publish(raw_dest, None))), 200

    @app.get("/v2/schedules")
    def list_schedules() -> tuple[Response, int]:
        return jsonify(emulator.list_schedules()), 200

    @app.get("/v2/schedules/<schedule_id>")
    def get_schedule(schedule_id: str) -> tuple[Response, int]:
        schedule = emulator.get_schedule(schedule_id)
        if schedule is None:
            raise ApiError(404, "schedule not found")
        return jsonify(schedule), 200

    @app.delete("/v2/schedules/<schedule_id>")
    def delete_schedule(schedule_id: str) -> tuple[Response, int] | tuple[str, int]:
        if not emulator.delete_schedule(schedule_id):
            raise ApiError(404, "schedule not found")
        return "", 200

    # -- dev-only control endpoints (no auth; never exposed beyond loopback) ----------------

    @app.get("/__dev/messages")
    def dev_messages() -> tuple[Response, int]:
        return jsonify(emulator.list_messages()), 200

    @app.post("/__dev/wait-idle")
    def dev_wait_idle() -> tuple[Response, int]:
        payload = request.get_json(silent=True) or {}
        timeout = payload.get("timeout", 10) if isinstance(payload, dict) else 10
        if not _is_number(timeout) or timeout < 0:
            raise ApiError(400, "`timeout` must be a non-negative number of seconds")
        idle = emulator.wait_idle(float(timeout))
        return jsonify(idle=idle), 200 if idle else 408

    @app.get("/__dev/config")
    def dev_get_config() -> tuple[Response, int]:
        return jsonify(emulator.config_json()), 200

    @app.post("/__dev/config")
    def dev_config() -> tuple[Response, int]:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise ApiError(400, "body must be a JSON object")
        return jsonify(emulator.update_config(payload)), 200

    @app.post("/__dev/schedules/<schedule_id>/trigger")
    def dev_trigger_schedule(schedule_id: str) -> tuple[Response, int]:
        result = emulator.trigger_schedule(schedule_id)
        if result is None:
            raise ApiError(404, "schedule not found")
        status, reply = result
        return jsonify(reply), status

    @app.post("/__dev/reset")
    def dev_reset() -> tuple[Response, int]:
        payload = request.get_json(silent=True) or {}
        restore = isinstance(payload, dict) and payload.get("config") is True
        emulator.reset(restore_config=restore)
        return jsonify(reset=True), 200

    return app
