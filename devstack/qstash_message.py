"""What the QStash stand-in's two halves share: the stored message and QStash's value formats.

:mod:`devstack.qstash_publish` turns a publish into a :class:`Message`, and
:mod:`devstack.qstash_delivery` delivers it; both read the same header value formats (Go
durations, ``Upstash-Retry-Delay`` expressions), report headers in Go's ``http.Header`` shape,
and make ids of the same form. Those pieces live here so that each half holds only its own. This
module knows nothing of the emulator's state or of HTTP.
"""

from __future__ import annotations

import ast
import base64
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "TERMINAL_STATES",
    "Attempt",
    "CallbackSpec",
    "Kind",
    "Message",
    "State",
    "b64",
    "canonical_header",
    "evaluate_retry_delay",
    "header_map",
    "loggable",
    "now_ms",
    "parse_duration",
    "random_id",
]

State = Literal["pending", "in_flight", "delivered", "retry", "failed", "cancelled"]
Kind = Literal["message", "callback", "failure_callback"]
TERMINAL_STATES: frozenset[str] = frozenset({"delivered", "failed", "cancelled"})


# --------------------------------------------------------------------------------------------
# The stored message
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackSpec:
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
class Attempt:
    retried: int
    status: int | None
    at: int  # unix ms
    error: str | None = None


@dataclass(eq=False)
class Message:
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
    callback: CallbackSpec | None = None
    failure_callback: CallbackSpec | None = None
    source_message_id: str | None = None
    label: str | None = None
    queue: str | None = None
    redact: frozenset[str] = frozenset()
    state: State = "pending"
    retried: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    dlq_id: str | None = None
    schedule_id: str | None = None  # set when a schedule produced the message
    schedule_token: int = 0
    held_callbacks: list[Message] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Ids, times, headers
# --------------------------------------------------------------------------------------------

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def random_id(prefix: str, length: int = 27) -> str:
    """Return `prefix` + random base58, the shape of real ids (`msg_2XavMm...`)."""
    return prefix + "".join(secrets.choice(_BASE58) for _ in range(length))


def now_ms() -> int:
    return int(time.time() * 1000)


def canonical_header(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: `x-ratelimit-reset` -> `X-Ratelimit-Reset`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Group header pairs into Go's `http.Header` JSON shape, `{Name: [values]}`."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(canonical_header(name), []).append(value)
    return grouped


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def loggable(url: str) -> str:
    """The URL without its query, which may carry phone numbers or tokens."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# --------------------------------------------------------------------------------------------
# Durations and retry-delay expressions: checked at publish, evaluated at delivery
# --------------------------------------------------------------------------------------------

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
