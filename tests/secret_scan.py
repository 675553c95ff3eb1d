"""Searching log lines for secrets and unmasked phone numbers (used by conftest for the whole
suite's logs, and tested on its own in test_logs.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# An E.164 number with all its digits: logs must only ever show masked ones (+155******01).
UNMASKED_PHONE = re.compile(r"\+[1-9]\d{7,14}\b")


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
