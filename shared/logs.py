"""Structured logs: one JSON object per line on stdout, the shape Cloud Logging parses.

`severity` and `message` are Cloud Logging's special keys; the trace key nests a line under its
request in Logs Explorer. Phone numbers are masked wherever they appear in a field value, so a
careless call site cannot leak one; secrets are never passed to `log` at all.
"""

from __future__ import annotations

import contextvars
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_context", default=None
)

# Extra destinations for every line (tests collect the whole suite's logs through one).
_sinks: list[Callable[[str], None]] = []

_PHONE = re.compile(r"\+(\d{1,3})(\d{2,})(\d{2})\b")


def mask_phone(text: str) -> str:
    """Hide the middle digits of every E.164 number in `text`: +15551234567 -> +1*******67."""
    return _PHONE.sub(lambda m: f"+{m[1]}{'*' * len(m[2])}{m[3]}", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_phone(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def trace_field(project: str | None, trace_header: str | None) -> dict[str, str]:
    """The Cloud Logging trace key for an `X-Cloud-Trace-Context: TRACE/SPAN;o=1` header."""
    if not project or not trace_header:
        return {}
    trace_id = trace_header.split("/", 1)[0].strip()
    if not trace_id:
        return {}
    return {"logging.googleapis.com/trace": f"projects/{project}/traces/{trace_id}"}


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (request id, trace) to every line logged inside the block."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current context (e.g. the request id once it is known)."""
    _context.set({**(_context.get() or {}), **fields})


def log(severity: str, message: str, **fields: Any) -> None:
    entry: dict[str, Any] = {
        "severity": severity,
        "message": mask_phone(message),
        "time": datetime.now(UTC).isoformat(),
    }
    entry.update(_masked(_context.get() or {}))
    entry.update(_masked(fields))
    # ASCII-escaped: a lone surrogate from a vendor would make a real stdout raise.
    line = json.dumps(entry, default=str, ensure_ascii=True)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    for sink in _sinks:
        sink(line)


def add_sink(sink: Callable[[str], None]) -> None:
    """Also hand every log line to `sink`."""
    _sinks.append(sink)


def info(message: str, **fields: Any) -> None:
    log("INFO", message, **fields)


def warning(message: str, **fields: Any) -> None:
    log("WARNING", message, **fields)


def error(message: str, **fields: Any) -> None:
    log("ERROR", message, **fields)
