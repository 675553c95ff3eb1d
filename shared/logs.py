"""Structured logs: one JSON object per line on stdout, the shape Cloud Logging parses.

`severity` and `message` are Cloud Logging's special keys; the trace key nests a line under its
request in Logs Explorer. Phone numbers are masked wherever they appear in a field value, so a
careless call site cannot leak one; secrets are never passed to `log` at all.

This is also the one place `logging` is configured: the loggers of the libraries in
`VENDOR_LOGGERS` write through `log` too (see `route_vendor_logs`), so their lines are masked
the same way and never reach a handler a deployment puts on the root logger.
"""

from __future__ import annotations

import contextvars
import json
import logging
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

# What starts a phone number in text: a plus as written (or full-width), URL-encoded once or
# twice (the twilio SDK logs `To=%2B1555...`), or as a JSON or HTML escape; or a URI scheme
# written before a bare number (tel:15551234567, whatsapp:15551234567).
_NUMBER_START = (
    r"(?:\+|\uff0b|%2B|%252B|\\u002B|&#43;|&#x2B;"
    r"|\b(?:tel|sms|sip|whatsapp):(?=\d))"
)
# Between digits: the spaces, dashes, dots, slashes and brackets people write, an encoded space,
# or a form-encoded one (a "+" before a short group, so "+1555...+1555..." stays two numbers).
_DIGIT_GAP = r"(?:[ .\-/()\xa0]|%20|\+(?=\d{1,4}(?!\d)))"
# Five to fifteen digits (E.164's most), gaps of up to three characters between them. Nothing
# is required after the last digit: "+15551234567abc" is a number followed by letters.
_PHONE = re.compile(rf"({_NUMBER_START})(\d(?:{_DIGIT_GAP}{{0,3}}\d){{4,14}})", re.IGNORECASE)
_NOT_A_DIGIT = re.compile(r"%20|\D")


def _masked_number(number: re.Match[str]) -> str:
    digits = _NOT_A_DIGIT.sub("", number[2])
    shown = min(3, len(digits) - 4)
    return f"{number[1]}{digits[:shown]}{'*' * (len(digits) - shown - 2)}{digits[-2:]}"


def mask_phone(text: str) -> str:
    """Hide the middle digits of every phone number in `text`, however it is written:
    +15551234567 -> +155******67, "+1 555-123-4567" -> +155******67, %2B15551234567 ->
    %2B155******67. A bare run of digits is left alone: ids and timestamps look the same."""
    return _PHONE.sub(_masked_number, text)


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


# --- Libraries' own loggers -----------------------------------------------------------------

# The twilio SDK logs every API request at INFO, its query parameters included, so
# `messages.list(to=..., from_=...)` writes both numbers in full, once as a dict and once
# URL-encoded in the URL [SDK twilio/http/__init__.py HttpClient.log_request, called by
# twilio/http/http_client.py TwilioHttpClient.request]. Its loggers are "twilio"'s children:
# twilio.http_client, twilio.async_http_client, twilio.request_validator (which echoes the
# X-Twilio-Webhooks-Signature-Settings header of an unverified request) and
# twilio.auth_strategy.token_auth_strategy [SDK, each module's getLogger].
VENDOR_LOGGERS = {
    "twilio": (
        "twilio.http_client",
        "twilio.async_http_client",
        "twilio.request_validator",
        "twilio.auth_strategy.token_auth_strategy",
    ),
}
# Unless a deployment chose a level for them: their warnings, not every request.
VENDOR_LEVEL = logging.WARNING


class _MaskNumbers(logging.Filter):
    """Masks the numbers in a record's text before any handler sees it, including handlers put
    straight on the logger (pytest's log capture is one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a format string and arguments that disagree: keep the format
            message = str(record.msg)
        record.msg, record.args = mask_phone(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_phone(logging.Formatter().formatException(record.exc_info))
        return True


class _VendorHandler(logging.Handler):
    """Writes a library's log record as one of our lines: JSON, masked, with the logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info and record.exc_info[0] is not None:
            fields["error_type"] = record.exc_info[0].__name__  # not the traceback's values
        log(_SEVERITIES.get(record.levelno, "DEFAULT"), str(record.msg), **fields)


_SEVERITIES = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


def route_vendor_logs() -> None:
    """Make the loggers in VENDOR_LOGGERS write through `log`, masked, and nowhere else.

    Each parent gets our handler and stops propagating, so none of its records reaches the root
    logger, where functions-framework adds a stdout handler at INFO [SDK functions_framework
    3.10.2 setup_logging] and a deployment may add anything at any level. Each logger masks
    its records first, so a handler put on it directly sees no full number either, and a
    deployment may turn one up to DEBUG. Runs when this module is imported; running it again
    changes nothing.
    """
    for parent, children in VENDOR_LOGGERS.items():
        logger = logging.getLogger(parent)
        if logger.level == logging.NOTSET:
            logger.setLevel(VENDOR_LEVEL)
        logger.propagate = False
        if not any(isinstance(handler, _VendorHandler) for handler in logger.handlers):
            logger.addHandler(_VendorHandler())
        for name in (parent, *children):
            masked = logging.getLogger(name)
            if not any(isinstance(each, _MaskNumbers) for each in masked.filters):
                masked.addFilter(_MaskNumbers())


route_vendor_logs()
