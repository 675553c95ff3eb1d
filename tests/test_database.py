"""The migrations on a real PostgreSQL: constraints, the claim under concurrency, and that
only the server's secret key can reach the data (RLS, grants)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import create_client

from devstack.postgres import apply_migrations
from devstack.stack import MIGRATIONS
from devstack.stack_client import StackClient

pytestmark = pytest.mark.stack

VALID = {
    "recipient": "+15553000001",
    "sender": "+15005550006",
    "prompt": "a fox",
    "model": "gpt-image-2.6-flare",
    "size": "1024x1024",
    "quality": "low",
}


def insert(stack: StackClient, **overrides: Any) -> str:
    row = {**VALID, **overrides}
    columns = ", ".join(row)
    placeholders = ", ".join(["%s"] * len(row))
    result = stack.sql(
        f"insert into public.requests ({columns}) values ({placeholders}) returning id",  # noqa: S608
        *row.values(),
    )
    return str(result[0]["id"])


def test_migrations_are_recorded_and_not_applied_twice(local_stack: StackClient) -> None:
    assert apply_migrations(local_stack.env["DATABASE_URL"], MIGRATIONS) == []
    versions = local_stack.sql("select version from supabase_migrations.schema_migrations")
    assert {"20261124000000"} <= {v["version"] for v in versions}


@pytest.mark.parametrize(
    "overrides",
    [
        {"recipient": "15553000001"},
        {"recipient": "+1555"},
        {"sender": "whatsapp:15005550006"},
        {"prompt": ""},
        {"prompt": " padded "},
        {"prompt": "x" * 4001},
        {"channel": "fax"},
        {"status": "lost"},
    ],
)
def test_the_table_refuses_invalid_rows(
    local_stack: StackClient, overrides: dict[str, Any]
) -> None:
    with pytest.raises(psycopg.errors.Error):
        insert(local_stack, **overrides)


@pytest.mark.parametrize(
    "update",
    [
        "status = 'delivered'",  # no message sid, no picture
        "status = 'failed'",  # no reason
        "claim_token = 'x'",  # a claim without an expiry
        "status = 'failed', failure_reason = 'refused', failed_at = now(), claim_token = 'x', claimed_until = now()",
    ],
)
def test_finished_rows_must_be_complete(local_stack: StackClient, update: str) -> None:
    request_id = insert(local_stack)
    with pytest.raises(psycopg.errors.CheckViolation):
        local_stack.sql(f"update public.requests set {update} where id = %s", request_id)  # noqa: S608


def test_new_rows_get_defaults(local_stack: StackClient) -> None:
    row = local_stack.row(insert(local_stack))
    assert row["status"] == "queued"
    assert row["attempts"] == 0
    assert len(row["media_token"]) == 32
    assert row["created_at"] is not None


def claim(stack: StackClient, request_id: str, owner: str, lease: int = 180) -> dict[str, Any]:
    rows = stack.sql("select public.claim_request(%s::uuid, %s, %s) as c", request_id, owner, lease)
    return dict(rows[0]["c"])


def test_claim_outcomes(local_stack: StackClient) -> None:
    request_id = insert(local_stack)
    first = claim(local_stack, request_id, "msg_a")
    assert first["outcome"] == "claimed" and first["token"]
    assert first["request"]["status"] == "composing"
    assert claim(local_stack, request_id, "msg_b")["outcome"] == "taken"
    assert claim(local_stack, request_id, "msg_a")["outcome"] == "busy"
    released = local_stack.sql(
        "select public.release_request(%s::uuid, %s, 'retry') as ok", request_id, first["token"]
    )
    assert released[0]["ok"] is True
    assert claim(local_stack, request_id, "msg_b")["outcome"] == "claimed"
    assert (
        claim(local_stack, "00000000-0000-4000-8000-000000000000", "msg_c")["outcome"] == "missing"
    )


def test_an_expired_claim_can_be_taken_over(local_stack: StackClient) -> None:
    request_id = insert(local_stack)
    claim(local_stack, request_id, "msg_dead", lease=0)
    assert claim(local_stack, request_id, "msg_next")["outcome"] == "claimed"


def test_a_finished_request_cannot_be_claimed(local_stack: StackClient) -> None:
    request_id = insert(local_stack)
    local_stack.sql(
        "update public.requests set status = 'failed', failure_reason = 'refused',"
        " failed_at = now() where id = %s",
        request_id,
    )
    assert claim(local_stack, request_id, "msg_a")["outcome"] == "done"


def test_exactly_one_of_many_concurrent_claims_wins(local_stack: StackClient) -> None:
    request_id = insert(local_stack)
    outcomes: Counter[str] = Counter()
    barrier = threading.Barrier(12)

    def race(n: int) -> None:
        with psycopg.connect(local_stack.env["DATABASE_URL"], autocommit=True) as conn:
            barrier.wait()
            row = conn.execute(
                "select public.claim_request(%s::uuid, %s, 180)", (request_id, f"msg_{n}")
            ).fetchone()
            assert row is not None
            outcomes[row[0]["outcome"]] += 1

    threads = [threading.Thread(target=race, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == Counter({"claimed": 1, "taken": 11})


def test_record_attempt_counts_only_unfinished_requests(local_stack: StackClient) -> None:
    request_id = insert(local_stack)
    count = local_stack.sql(
        "select public.record_attempt(%s::uuid, 'msg_s', 'HTTP 500') as n", request_id
    )
    assert count[0]["n"] == 1
    local_stack.sql(
        "update public.requests set status = 'failed', failure_reason = 'provider_error',"
        " failed_at = now() where id = %s",
        request_id,
    )
    late = local_stack.sql(
        "select public.record_attempt(%s::uuid, 'msg_s', 'late') as n", request_id
    )
    assert late[0]["n"] is None


def test_the_publishable_key_can_neither_read_nor_write_requests(local_stack: StackClient) -> None:
    insert(local_stack)
    public = create_client(
        local_stack.env["SUPABASE_URL"], local_stack.env["SUPABASE_PUBLISHABLE_KEY"]
    )
    with pytest.raises(APIError):
        public.table("requests").select("*").execute()
    with pytest.raises(APIError):
        public.table("requests").insert(VALID).execute()
    with pytest.raises(APIError):
        public.rpc(
            "claim_request",
            {
                "p_request_id": "00000000-0000-4000-8000-000000000000",
                "p_owner": "x",
                "p_lease_seconds": 1,
            },
        ).execute()


def test_the_secret_key_reads_requests(local_stack: StackClient) -> None:
    request_id = insert(local_stack)
    server = create_client(local_stack.env["SUPABASE_URL"], local_stack.env["SUPABASE_SECRET_KEY"])
    rows = server.table("requests").select("id,status").eq("id", request_id).execute().data
    assert rows == [{"id": request_id, "status": "queued"}]


def test_rls_is_on_even_if_grants_are_restored(local_stack: StackClient) -> None:
    """Defence in depth: with table grants back, RLS without policies still shows nothing."""
    insert(local_stack)
    with psycopg.connect(local_stack.env["DATABASE_URL"]) as conn:
        conn.execute("grant select on public.requests to anon")
        conn.execute("set local role anon")
        assert conn.execute("select count(*) from public.requests").fetchone() == (0,)
        conn.rollback()


def test_the_picture_bucket_is_public_and_only_takes_jpegs(local_stack: StackClient) -> None:
    bucket = local_stack.sql("select * from storage.buckets where id = 'pictures'")[0]
    assert bucket["public"] is True
    assert bucket["allowed_mime_types"] == ["image/jpeg"]
    assert bucket["file_size_limit"] == 5 * 1024 * 1024
    server = create_client(local_stack.env["SUPABASE_URL"], local_stack.env["SUPABASE_SECRET_KEY"])
    with pytest.raises(Exception, match=r"mime|type|Invalid|allowed"):
        server.storage.from_("pictures").upload(
            "x/evil.html", b"<script>", {"content-type": "text/html"}
        )
