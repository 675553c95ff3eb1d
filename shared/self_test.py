"""The doctor's self-test of the real QStash → `composite` path (see deploy/doctor.py).

The doctor publishes one message through QStash straight to `composite`, at
`COMPOSITE_URL?self_test=<nonce>` with the body `{"picture_line": "self_test", "nonce": <nonce>}`.
`composite` verifies its signature like any callback's (shared/callbacks.py), does no other
work, and records what it saw as one row of the `self_tests` table
(supabase/migrations/20261201010000_doctor.sql): the row exists only if the signature
verified, and it says whether the JWT's `sub` carried the query, which QStash's docs leave open
[UNCONFIRMED]. The doctor reads the row back with the secret key, then deletes it.

The body, not the query, says "self-test", since the body is what the signature covers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from supabase import Client

from . import logs
from .store import SELF_TESTS, guard

if TYPE_CHECKING:
    from .services import Services

KIND = "self_test"
# Rows a doctor run left behind (it stopped before deleting its own) are removed after a day.
KEEP_FOR = timedelta(days=1)
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}", re.ASCII)


@dataclass(frozen=True)
class SelfTestResult:
    """What `composite` saw of one verified self-test message."""

    nonce: str
    sub_included_query: bool  # the JWT's `sub` was COMPOSITE_URL?self_test=<nonce>
    query_arrived: bool  # the `?self_test=<nonce>` query reached composite


def self_test_body(nonce: str) -> dict[str, str]:
    return {"picture_line": KIND, "nonce": nonce}


def self_test_nonce(raw: bytes) -> str | None:
    """The nonce of a self-test body, or None for any other body."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict) or set(payload) != {"picture_line", "nonce"}:
        return None
    nonce = payload["nonce"]
    if payload["picture_line"] != KIND or not isinstance(nonce, str):
        return None
    return nonce if _NONCE.fullmatch(nonce) else None


def answer_self_test(
    nonce: str, query_nonce: str | None, sub_included_query: bool, services: Services
) -> dict[str, object]:
    """Record a self-test whose signature `composite` has verified; the answer's JSON body.

    `sub_included_query` is whether the verified `sub` was the URL with its query. With
    INSECURE_SKIP_SIGNATURES nothing was verified, so nothing is recorded.
    """
    if services.settings.insecure_skip_signatures:
        logs.warning("self-test not recorded: INSECURE_SKIP_SIGNATURES is on")
        return {"self_test": "not recorded: signatures are not checked"}
    arrived = query_nonce == nonce
    result = SelfTestResult(nonce, sub_included_query and arrived, arrived)
    services.store.record_self_test(result)
    logs.info("self-test recorded", sub_included_query=result.sub_included_query)
    return {"self_test": "recorded", "sub_included_query": result.sub_included_query}


def read_self_test(client: Client, nonce: str) -> SelfTestResult | None:
    """The recorded result of one self-test (the doctor's side), or None if none yet."""
    reply = guard(
        "reading the self-test",
        lambda: client.table(SELF_TESTS).select("*").eq("nonce", nonce).execute(),
    )
    rows: Any = reply.data
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        return None
    row = rows[0]
    return SelfTestResult(
        nonce, row.get("sub_included_query") is True, row.get("query_arrived") is True
    )


def forget_self_test(client: Client, nonce: str) -> None:
    """Delete this self-test's row, and any a stopped doctor run left behind."""
    cutoff = (datetime.now(UTC) - KEEP_FOR).isoformat()
    guard(
        "deleting the self-test",
        lambda: client.table(SELF_TESTS).delete().eq("nonce", nonce).execute(),
    )
    guard(
        "deleting old self-tests",
        lambda: client.table(SELF_TESTS).delete().lt("recorded_at", cutoff).execute(),
    )
