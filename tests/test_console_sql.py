"""The operator console's SQL (supabase/migrations/20261204000000_console.sql) on a real
PostgreSQL: a paused service and a blocked number record nothing, `console_stats` adds up the
rows it is given, `wall_pictures` shows only what a public screen may, and the store's methods
reach all of it through PostgREST with the secret key only.

The figures are checked inside a transaction that first deletes every request and is rolled
back at the end, so the rows other tests left behind neither count nor are lost."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from postgrest.exceptions import APIError
from psycopg.rows import dict_row
from supabase import create_client

from devstack.stack_client import StackClient
from shared.errors import StoreError
from shared.records import Channel, CreationOutcome, RequestStatus
from shared.services import get_services
from shared.store import NewRequest

pytestmark = pytest.mark.stack

Conn = psycopg.Connection[dict[str, Any]]
SENDER = "+15005550006"
MODEL = "gpt-image-2.6-flare"
RECENT_KEYS = {
    "id",
    "created_at",
    "kind",
    "channel",
    "status",
    "failure_reason",
    "prompt",
    "recipient",
    "model",
    "message_sid",
    "handset_status",
    "hidden_at",
    "approved_at",
    "generated_at",
    "send_started_at",
    "delivered_at",
    "failed_at",
}
WALL_KEYS = {"id", "prompt", "image_path", "delivered_at"}
_numbers = itertools.count(1)


def number() -> str:
    """A phone number no other test uses."""
    return f"+1555730{next(_numbers):04d}"


def masked(address: str) -> str:
    prefix = "whatsapp:" if address.startswith("whatsapp:") else ""
    bare = address.removeprefix("whatsapp:")
    return f"{prefix}{bare[:4]}{'•' * (len(bare) - 6)}{bare[-2:]}"


def insert(conn: Conn | StackClient, **fields: Any) -> str:
    """A request row with `fields` on top; `delivered=<datetime>` makes it a delivered one."""
    row: dict[str, Any] = {
        "recipient": number(),
        "sender": SENDER,
        "prompt": "a fox",
        "model": MODEL,
        "size": "1024x1024",
        "quality": "low",
    }
    if (delivered := fields.pop("delivered", None)) is not None:
        row |= {
            "status": "delivered",
            "delivered_at": delivered,
            "message_sid": f"SM{next(_numbers):032d}",
            "image_path": f"2026/12/04/{next(_numbers):032d}.jpg",
        }
    row |= fields
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    query = f"insert into public.requests ({columns}) values ({placeholders}) returning id"  # noqa: S608
    if isinstance(conn, StackClient):
        return str(conn.sql(query, *row.values())[0]["id"])
    found = conn.execute(query, list(row.values())).fetchone()
    assert found is not None
    return str(found["id"])


def create(stack: StackClient, recipient: str, source_ref: str | None = None) -> dict[str, Any]:
    """create_request as the functions call it, for `recipient` (SMS or WhatsApp)."""
    whatsapp = recipient.startswith("whatsapp:")
    rows = stack.sql(
        "select public.create_request(p_recipient => %s, p_sender => %s, p_prompt => 'a fox',"
        " p_channel => %s, p_model => %s, p_size => '1024x1024', p_quality => 'low',"
        " p_source_ref => %s) as c",
        recipient,
        f"whatsapp:{SENDER}" if whatsapp else SENDER,
        "whatsapp" if whatsapp else "sms",
        MODEL,
        source_ref,
    )
    return dict(rows[0]["c"])


def rows_for(stack: StackClient, address: str) -> int:
    """Requests recorded for this number, in either of its forms."""
    bare = address.removeprefix("whatsapp:")
    found = stack.sql(
        "select count(*) as n from public.requests"
        " where regexp_replace(recipient, '^whatsapp:', '') = %s",
        bare,
    )
    return int(found[0]["n"])


def new_request(recipient: str) -> NewRequest:
    whatsapp = recipient.startswith("whatsapp:")
    return NewRequest(
        recipient=recipient,
        sender=f"whatsapp:{SENDER}" if whatsapp else SENDER,
        prompt="a fox",
        channel=Channel.WHATSAPP if whatsapp else Channel.SMS,
        model=MODEL,
        size="1024x1024",
        quality="low",
    )


@pytest.fixture
def no_requests(stack: StackClient) -> Iterator[Conn]:
    """A transaction in which the requests table holds only what the test inserts; rolled back."""
    with psycopg.connect(stack.env["DATABASE_URL"], row_factory=dict_row) as conn:
        try:
            conn.execute("delete from public.requests")
            yield conn
        finally:
            conn.rollback()


def now_of(conn: Conn) -> datetime:
    """The transaction's now(): what the SQL measures its 24 hours from."""
    found = conn.execute("select now() as now").fetchone()
    assert found is not None
    moment: datetime = found["now"]
    return moment.astimezone(UTC)


def stats(conn: Conn, budget: Decimal | None = None) -> dict[str, Any]:
    found = conn.execute("select public.console_stats(%s) as s", [budget]).fetchone()
    assert found is not None
    return dict(found["s"])


def wall(conn: Conn, since: datetime | None, approved_only: bool, limit: int) -> list[str]:
    rows = conn.execute(
        "select * from public.wall_pictures(%s, %s, %s)", [since, approved_only, limit]
    ).fetchall()
    assert all(set(row) == WALL_KEYS for row in rows)
    return [str(row["id"]) for row in rows]


# --- create_request: paused, blocked ---------------------------------------------------------


def test_create_request_records_nothing_while_paused(stack: StackClient) -> None:
    earlier, later = number(), number()
    first = create(stack, earlier, source_ref="CAconsole-paused-1")
    assert first["outcome"] == "created"
    stack.sql("update public.service_state set paused = true, paused_at = now()")
    try:
        assert create(stack, later) == {"outcome": "paused"}
        assert create(stack, f"whatsapp:{later}") == {"outcome": "paused"}
        assert rows_for(stack, later) == 0
        # A resend of a request recorded before the pause still finds it (checked first).
        again = create(stack, earlier, source_ref="CAconsole-paused-1")
        assert again["outcome"] == "duplicate"
        assert again["request"]["id"] == first["request"]["id"]
    finally:
        stack.sql("update public.service_state set paused = false, paused_at = null")
    assert create(stack, later)["outcome"] == "created"


@pytest.mark.parametrize(
    ("blocked", "asked"),
    [("", ""), ("", "whatsapp:"), ("whatsapp:", ""), ("whatsapp:", "whatsapp:")],
    ids=["sms-sms", "sms-whatsapp", "whatsapp-sms", "whatsapp-whatsapp"],
)
def test_a_blocked_number_gets_nothing_on_any_channel(
    stack: StackClient, blocked: str, asked: str
) -> None:
    target, bystander = number(), number()
    stack.sql(
        "insert into public.blocked_numbers (address, note) values (%s, 'spam')",
        f"{blocked}{target}",
    )
    try:
        assert create(stack, f"{asked}{target}") == {"outcome": "blocked"}
        assert rows_for(stack, target) == 0
        assert create(stack, f"{asked}{bystander}")["outcome"] == "created"
    finally:
        stack.sql("delete from public.blocked_numbers where address = %s", f"{blocked}{target}")
    assert create(stack, f"{asked}{target}")["outcome"] == "created"


def test_blocked_is_answered_before_opted_out(stack: StackClient) -> None:
    target = number()
    stack.sql(
        "insert into public.opt_outs (address, sender, source) values (%s, %s, 'keyword')",
        target,
        SENDER,
    )
    stack.sql("insert into public.blocked_numbers (address) values (%s)", target)
    try:
        assert create(stack, target) == {"outcome": "blocked"}
    finally:
        stack.sql("delete from public.blocked_numbers where address = %s", target)
    assert create(stack, target) == {"outcome": "opted_out"}


def test_the_state_row_is_one_and_blocks_take_only_numbers(stack: StackClient) -> None:
    assert stack.sql("select id, paused from public.service_state") == [
        {"id": True, "paused": False}
    ]
    with pytest.raises(psycopg.errors.CheckViolation):
        stack.sql("insert into public.service_state (id) values (false)")
    with pytest.raises(psycopg.errors.CheckViolation):
        stack.sql("insert into public.blocked_numbers (address) values ('15551234567')")


# --- console_stats ------------------------------------------------------------------------


def test_console_stats_add_up_the_last_24_hours(no_requests: Conn) -> None:
    conn = no_requests
    now = now_of(conn)
    hour = now.replace(minute=0, second=0, microsecond=0)
    midnight = hour.replace(hour=0)

    def at(hours_back: int) -> datetime:
        """Within the bucket `hours_back` whole hours before the current one."""
        return now if hours_back == 0 else hour - timedelta(hours=hours_back, minutes=-30)

    # (hours back, status, failure reason, estimated, real cost, seconds to the MMS)
    table: list[tuple[int, str, str | None, str, str | None, int | None]] = [
        (0, "delivered", None, "0.05", "0.04", 10),
        (0, "queued", None, "0.05", None, None),
        (2, "delivered", None, "0.05", None, 20),
        (2, "delivered", None, "0.05", "0.10", 40),
        (5, "failed", "refused", "0.05", None, None),
        (5, "failed", "publish_failed", "0.05", None, None),
        (7, "failed", "provider_error", "0.03", "0.02", None),
        (23, "delivered", None, "0.01", None, 100),
    ]
    for back, status, reason, estimated, cost, seconds in table:
        created = at(back)
        fields: dict[str, Any] = {
            "created_at": created,
            "estimated_cost_usd": Decimal(estimated),
            "cost_usd": Decimal(cost) if cost else None,
        }
        if status == "delivered":
            assert seconds is not None
            fields["delivered"] = created + timedelta(seconds=seconds)
        elif status == "failed":
            fields |= {"status": "failed", "failure_reason": reason, "failed_at": created}
        insert(conn, **fields)
    # A day and an hour ago: in none of the figures (it would make the median 20 s).
    insert(
        conn,
        created_at=now - timedelta(hours=25),
        delivered=now - timedelta(hours=25) + timedelta(seconds=1),
        estimated_cost_usd=Decimal("0.50"),
    )
    conn.execute("update public.service_state set paused = true")

    figures = stats(conn, Decimal("5.00"))

    buckets = figures["requests_per_hour"]
    assert [datetime.fromisoformat(b["hour"]) for b in buckets] == [
        hour - timedelta(hours=23 - n) for n in range(24)
    ]
    expected_counts = [0] * 24
    for back, *_ in table:
        expected_counts[23 - back] += 1
    assert [b["count"] for b in buckets] == expected_counts
    assert expected_counts.count(0) == 19  # the empty hours are there, as zeros
    assert figures["outcomes"] == {"delivered": 4, "queued": 1, "failed": 3}
    assert figures["failure_reasons"] == {"refused": 1, "publish_failed": 1, "provider_error": 1}
    spend = sum(
        (
            Decimal(cost or estimated)
            for back, _, reason, estimated, cost, _ in table
            if at(back) >= midnight and reason not in ("refused", "publish_failed")
        ),
        Decimal(0),
    )
    assert Decimal(str(figures["spend_today_usd"])) == spend
    assert figures["budget_usd"] == 5
    # Seconds to the MMS, delivered in the last day: 10, 20, 40, 100.
    assert figures["to_mms_seconds_p50"] == 30  # halfway between 20 and 40
    assert figures["to_mms_seconds_p95"] == 91  # 40 + 0.85 * (100 - 40)
    assert figures["paused"] is True


def test_console_stats_of_an_empty_day(no_requests: Conn) -> None:
    figures = stats(no_requests)
    assert [b["count"] for b in figures["requests_per_hour"]] == [0] * 24
    assert figures["outcomes"] == {}
    assert figures["failure_reasons"] == {}
    assert figures["spend_today_usd"] == 0
    assert figures["budget_usd"] is None
    assert figures["to_mms_seconds_p50"] is None
    assert figures["to_mms_seconds_p95"] is None
    assert figures["recent"] == []


def test_console_stats_show_the_latest_20_with_numbers_masked(no_requests: Conn) -> None:
    conn = no_requests
    start = now_of(conn) - timedelta(hours=3)
    recipients = [number() for _ in range(21)] + [f"whatsapp:{number()}"]
    ids = [
        insert(conn, recipient=recipient, created_at=start + timedelta(minutes=n))
        for n, recipient in enumerate(recipients)
    ]
    conn.execute(
        "update public.requests set deleted_at = now(), prompt = '(deleted)' where id = %s",
        [ids[-2]],
    )

    figures = stats(conn)

    recent = figures["recent"]
    assert [row["id"] for row in recent] == ids[::-1][:20]  # newest first, the oldest two cut
    assert all(set(row) >= RECENT_KEYS for row in recent)
    assert [row["recipient"] for row in recent] == [masked(r) for r in recipients[::-1][:20]]
    assert recent[0]["recipient"].startswith("whatsapp:+155••••••")
    assert recent[1]["prompt"] is None  # deleted by its person
    assert recent[2]["prompt"] == "a fox"
    text = json.dumps(figures)
    for recipient in recipients:
        bare = recipient.removeprefix("whatsapp:")
        assert bare not in text
        assert bare[1:] not in text  # not even without its plus


# --- wall_pictures ------------------------------------------------------------------------


def test_the_wall_shows_only_pictures_for_a_public_screen(no_requests: Conn) -> None:
    conn = no_requests
    now = now_of(conn)
    since = now - timedelta(hours=1)
    old = insert(conn, delivered=now - timedelta(minutes=30), approved_at=now)
    new = insert(
        conn,
        delivered=now - timedelta(minutes=10),
        kind="refine",
        parent_id=old,
        source_path="2026/12/04/source.jpg",
    )
    insert(conn, delivered=now - timedelta(minutes=5), hidden_at=now, approved_at=now)
    insert(conn, delivered=now - timedelta(minutes=6), deleted_at=now, approved_at=now)
    insert(conn, delivered=now - timedelta(minutes=7), kind="undo", parent_id=old)
    insert(conn)  # queued: no picture yet
    insert(conn, status="failed", failure_reason="refused", failed_at=now)
    before = insert(conn, delivered=now - timedelta(hours=2))

    assert wall(conn, since, False, 10) == [new, old]
    assert wall(conn, since, True, 10) == [old]  # WALL=approve
    assert wall(conn, None, False, 10) == [new, old, before]
    assert wall(conn, None, False, 1) == [new]
    assert wall(conn, now - timedelta(minutes=10), False, 10) == []  # strictly after
    rows = conn.execute("select * from public.wall_pictures(null, false, 10)").fetchall()
    assert "+1555" not in json.dumps(rows, default=str)


# --- who may reach it ---------------------------------------------------------------------


def test_the_publishable_key_reaches_none_of_the_console(stack: StackClient) -> None:
    public = create_client(stack.env["SUPABASE_URL"], stack.env["SUPABASE_PUBLISHABLE_KEY"])
    for table in ("service_state", "blocked_numbers"):
        with pytest.raises(APIError):
            public.table(table).select("*").execute()
    with pytest.raises(APIError):
        public.table("service_state").update({"paused": True}).eq("id", "true").execute()
    with pytest.raises(APIError):
        public.rpc("console_stats", {"p_budget_usd": None}).execute()
    with pytest.raises(APIError):
        public.rpc(
            "wall_pictures", {"p_since": None, "p_approved_only": False, "p_limit": 5}
        ).execute()
    assert stack.sql("select paused from public.service_state") == [{"paused": False}]


# --- the store, through PostgREST -----------------------------------------------------------


def test_the_store_pauses_and_resumes_the_service(stack: StackClient) -> None:
    store = get_services().store
    asked = number()
    store.set_paused(True)
    try:
        assert store.is_paused() is True
        assert stack.sql("select paused_at from public.service_state")[0]["paused_at"]
        assert store.console_stats(None)["paused"] is True
        creation = store.create(new_request(asked))
        assert creation.outcome is CreationOutcome.PAUSED and creation.record is None
        assert not creation.outcome.is_limit
    finally:
        store.set_paused(False)
    assert store.is_paused() is False
    assert stack.sql("select paused_at from public.service_state")[0]["paused_at"] is None
    assert rows_for(stack, asked) == 0
    assert store.create(new_request(asked)).outcome is CreationOutcome.CREATED


def test_the_store_blocks_and_unblocks_a_number(stack: StackClient) -> None:
    store = get_services().store
    target = number()
    store.block_number(f"whatsapp:{target}", "sent abuse")
    try:
        assert f"whatsapp:{target}" in store.blocked_numbers()
        note = stack.sql(
            "select note from public.blocked_numbers where address = %s", f"whatsapp:{target}"
        )
        assert note == [{"note": "sent abuse"}]
        for form in (target, f"whatsapp:{target}"):
            creation = store.create(new_request(form))
            assert creation.outcome is CreationOutcome.BLOCKED and creation.record is None
            assert not creation.outcome.is_limit
        store.block_number(f"whatsapp:{target}", None)  # again: still one row
        assert store.blocked_numbers().count(f"whatsapp:{target}") == 1
    finally:
        store.unblock_number(target)  # the bare form lifts the WhatsApp one too
    assert f"whatsapp:{target}" not in store.blocked_numbers()
    assert rows_for(stack, target) == 0
    assert store.create(new_request(target)).outcome is CreationOutcome.CREATED
    with pytest.raises(StoreError) as refused:
        store.block_number("not a number", None)
    assert refused.value.retryable is False


def test_the_store_hides_and_approves_pictures_for_the_wall(stack: StackClient) -> None:
    store = get_services().store
    since = stack.sql("select now() as now")[0]["now"]
    shown, hidden, waiting = (insert(stack, delivered=datetime.now(UTC)) for _ in range(3))

    assert store.approve_picture(shown) is True
    assert store.approve_picture(shown) is False  # already approved
    assert store.approve_picture(hidden) is True
    assert store.hide_picture(hidden) is True
    assert store.hide_picture(hidden) is False  # already hidden
    assert store.hide_picture("00000000-0000-4000-8000-000000000000") is False
    assert store.hide_picture("not-a-uuid") is False
    assert store.approve_picture("not-a-uuid") is False
    assert stack.row(hidden)["hidden_at"] is not None

    mine = {shown, hidden, waiting}
    approved = store.wall_pictures(since, True, 50)
    everything = store.wall_pictures(since, False, 50)
    assert [row["id"] for row in approved if row["id"] in mine] == [shown]
    assert {row["id"] for row in everything if row["id"] in mine} == {shown, waiting}
    assert all(set(row) == WALL_KEYS for row in everything)
    assert "+1555" not in json.dumps(everything)
    assert store.wall_pictures(None, False, 1)[0]["id"] in mine
    assert all(datetime.fromisoformat(row["delivered_at"]) > since for row in everything)


def test_the_store_reads_the_console_figures(stack: StackClient) -> None:
    store = get_services().store
    recipient = number()
    request_id = insert(stack, recipient=recipient, delivered=datetime.now(UTC))
    store.hide_picture(request_id)

    figures = store.console_stats(2.5)

    assert figures["budget_usd"] == 2.5
    assert figures["paused"] is False
    assert len(figures["requests_per_hour"]) == 24
    assert figures["outcomes"].get(RequestStatus.DELIVERED.value, 0) >= 1
    latest = figures["recent"][0]
    assert latest["id"] == request_id
    assert latest["recipient"] == masked(recipient)
    assert latest["hidden_at"] is not None and latest["approved_at"] is None
    assert recipient not in json.dumps(figures)
    assert store.console_stats(None)["budget_usd"] is None
