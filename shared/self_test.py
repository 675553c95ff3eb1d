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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from postgrest.exceptions import APIError
from supabase import Client

from . import logs
from .errors import StoreError
from .services import Services

KIND = "self_test"
QUERY_PARAM = "self_test"
TABLE = "self_tests"
# Rows a doctor run left behind (it stopped before deleting its own) are removed after a day.
KEEP_FOR = timedelta(days=1)
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}", re.ASCII)
T = TypeVar("T")


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
    record_self_test(services.store.client, result)
    logs.info("self-test recorded", sub_included_query=result.sub_included_query)
    return {"self_test": "recorded", "sub_included_query": result.sub_included_query}


def record_self_test(client: Client, result: SelfTestResult) -> None:
    row = {
        "nonce": result.nonce,
        "sub_included_query": result.sub_included_query,
        "query_arrived": result.query_arrived,
    }
    # QStash delivers at least once: a second copy of the message finds its row and keeps it.
    _guard("recording the self-test", lambda: client.table(TABLE).upsert(row).execute())


def read_self_test(client: Client, nonce: str) -> SelfTestResult | None:
    """The recorded result of one self-test (the doctor's side), or None if none yet."""
    reply = _guard(
        "reading the self-test",
        lambda: client.table(TABLE).select("*").eq("nonce", nonce).execute(),
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
    _guard(
        "deleting the self-test", lambda: client.table(TABLE).delete().eq("nonce", nonce).execute()
    )
    _guard(
        "deleting old self-tests",
        lambda: client.table(TABLE).delete().lt("recorded_at", cutoff).execute(),
    )


def _guard(action: str, call: Callable[[], T]) -> T:
    """Run one Supabase call, turning its failures into `StoreError` (as shared/store.py does)."""
    try:
        return call()
    except APIError as exc:
        raise StoreError(
            f"{action} failed", retryable=True, detail=f"{exc.code}: {exc.message}"
        ) from exc
    except httpx.HTTPError as exc:
        raise StoreError(
            f"{action} failed: Supabase unreachable", retryable=True, detail=type(exc).__name__
        ) from exc
