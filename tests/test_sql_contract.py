"""The values the SQL writes and answers, read from the migrations' text, are exactly our enums
(shared/records.py): a value renamed on one side fails here, in `make test-fast`, not in
production. tests/test_database.py checks the same functions' behaviour on PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import pytest

from shared.records import (
    Channel,
    ClaimOutcome,
    CreationOutcome,
    FailureReason,
    OptOutSource,
    RequestKind,
    RequestStatus,
)
from shared.twilio_webhooks import MESSAGE_STATUSES

MIGRATIONS = sorted((Path(__file__).resolve().parent.parent / "supabase/migrations").glob("*.sql"))
_COMMENT = re.compile(r"--[^\n]*")
_LITERAL = re.compile(r"'([a-z0-9_]+)'")


def _sql() -> list[str]:
    return [_COMMENT.sub("", path.read_text()) for path in MIGRATIONS]


def _literals(text: str) -> set[str]:
    return set(_LITERAL.findall(text))


def _enum_type(name: str) -> set[str]:
    values: set[str] = set()
    for text in _sql():
        if created := re.search(rf"create type public\.{name} as enum \((.*?)\);", text, re.S):
            values |= _literals(created.group(1))
        values |= set(
            re.findall(rf"alter type public\.{name} add value (?:if not exists )?'(\w+)'", text)
        )
    return values


def _latest_function(name: str) -> str:
    """The body of the last `create function public.<name>` in migration order."""
    bodies = [
        found.group(1)
        for text in _sql()
        for found in re.finditer(rf"create function public\.{name}\((.*?)\n\$\$;", text, re.S)
    ]
    assert bodies, f"no migration creates {name}"
    return bodies[-1]


def _outcomes(function: str) -> set[str]:
    """Every value a function answers as `'outcome', <expression>` in a jsonb_build_object."""
    body = _latest_function(function)
    expressions = re.findall(r"'outcome',\s*(.*?)(?:,\s*'(?:request|token)'|\))", body, re.S)
    return set().union(*(_literals(expression) for expression in expressions))


def _check_in(column: str) -> set[str]:
    pattern = rf"\b{column} text (?:not null )?[^,]*?check \(\s*{column} in \((.*?)\)\)"
    for text in _sql():
        if found := re.search(pattern, text, re.S):
            return _literals(found.group(1))
    raise AssertionError(f"no check constraint lists the values of {column}")


def _values(enum: type[StrEnum]) -> set[str]:
    return {member.value for member in enum}


CONTRACTS: dict[str, tuple[Callable[[], set[str]], type[StrEnum]]] = {
    "request_status": (lambda: _enum_type("request_status"), RequestStatus),
    "failure_reason": (lambda: _enum_type("failure_reason"), FailureReason),
    "create_request": (lambda: _outcomes("create_request"), CreationOutcome),
    "claim_request": (lambda: _outcomes("claim_request"), ClaimOutcome),
    "requests.channel": (lambda: _check_in("channel"), Channel),
    "opt_outs.source": (lambda: _check_in("source"), OptOutSource),
    "requests.kind": (lambda: _check_in("kind"), RequestKind),
}


@pytest.mark.parametrize("name", CONTRACTS)
def test_the_sql_and_our_enum_hold_the_same_values(name: str) -> None:
    read_sql, enum = CONTRACTS[name]
    assert read_sql() == _values(enum)


def test_every_handset_status_but_accepted_is_recorded() -> None:
    """`accepted` is a Messaging Service's first status, before `queued`: news of nothing, so
    record_message_status ignores it and the column does not allow it."""
    assert _check_in("handset_status") == MESSAGE_STATUSES - {"accepted"}
