"""Searching log lines for secrets and unmasked phone numbers (used by conftest for the whole
suite's logs, and tested on its own in test_logs.py)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping

# A phone number with all its digits, in any form our logs could carry it: after a plus (as
# written, full-width as the JSON line escapes it, URL-encoded once or twice, or as a JSON or
# HTML escape) or after a scheme that takes a bare number, with the gaps people write. Logs
# must only ever show masked ones (+155******01). Written apart from shared.logs' masking, so
# the scan is a second opinion rather than the same rule twice.
_PLUS = r"(?:\+|\\uff0b|%2B|%252B|\\u002B|&#43;|&#x2B;|\b(?:tel|sms|sip|whatsapp):)"
_GAP = r"(?:[ ().\-/]|%20|\\u00a0)"
UNMASKED_PHONE = re.compile(rf"{_PLUS}[1-9](?:{_GAP}{{0,3}}\d){{7,14}}", re.IGNORECASE)


def find_leaks(lines: Iterable[str], secrets: Mapping[str, str]) -> list[str]:
    """One description per problem found; the descriptions name secrets, never show them."""
    problems = []
    for number, line in enumerate(lines, 1):
        for name, value in secrets.items():
            if value and value in line:
                problems.append(f"log line {number} contains the value of {name}")
        if match := UNMASKED_PHONE.search(line):
            problems.append(f"log line {number} shows an unmasked number ({match[0][:4]}…)")
    return problems


# --- what the twilio SDK logs ------------------------------------------------------------------

TWILIO_LOGGER = "twilio"


class _TwilioRecords(logging.Handler):
    """Hands each record of the twilio SDK's loggers it sees to `collect`, formatted the way a
    plain stdout handler would print it."""

    def __init__(self, collect: Callable[[str], None]) -> None:
        super().__init__(logging.NOTSET)
        self._collect = collect
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.addFilter(_from_twilio)

    def emit(self, record: logging.LogRecord) -> None:
        self._collect(self.format(record))


def _from_twilio(record: logging.LogRecord) -> bool:
    return record.name == TWILIO_LOGGER or record.name.startswith(f"{TWILIO_LOGGER}.")


def watch_twilio_logs(collect: Callable[[str], None]) -> Callable[[], None]:
    """Make the twilio SDK log everything it can, and hand `collect` any of its records that
    reach the root logger, where a deployment's handlers are (they should reach none: shared.logs
    writes them as our own, masked lines, which a `logs.add_sink` sink sees). Returns a function
    that puts the logger level and the root logger's handlers back."""
    twilio = logging.getLogger(TWILIO_LOGGER)
    level = twilio.level
    twilio.setLevel(logging.DEBUG)
    handler = _TwilioRecords(collect)
    logging.getLogger().addHandler(handler)

    def undo() -> None:
        logging.getLogger().removeHandler(handler)
        twilio.setLevel(level)

    return undo
