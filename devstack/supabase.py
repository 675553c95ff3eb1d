"""Supabase stand-in: the PostgREST and Storage HTTP subset supabase-py sends, on real PostgreSQL.

The official `supabase` SDK talks to this app unchanged (`create_client(url, DEV_SECRET_KEY)`).
Every API request runs in one transaction under `SET LOCAL ROLE anon|service_role`, so grants and
row level security are enforced by PostgreSQL itself, exactly as on the platform: a migration that
forgets `enable row level security` really leaks to the publishable key here too.

Scope (see the module tests for what is exercised through the SDK):
- `/rest/v1/<table>`: GET/HEAD/POST/PATCH/DELETE with `eq neq gt gte lt lte is in like ilike`
  (and `not.`), `select` (columns, `*`, `alias:col`), `order`, `limit`, `offset`, `columns`,
  `on_conflict`, and the `Prefer` options `return`, `resolution`, `count`, `missing`.
  `/rest/v1/rpc/<fn>`: POST (and GET) with named arguments.
- `/storage/v1/object/...`: upload/update/download/public/sign/info/list/remove, plus buckets.
  Object rows live in `storage.objects`; bytes live in `storage_dir/objects/<object id>`.
- `/__dev/faults` and `/__dev/health`: unauthenticated test hooks (fault injection).

Values never reach SQL text: identifiers are checked against the catalog and quoted with
`psycopg.sql.Identifier`; values are bound parameters that PostgreSQL converts itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import flask
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

DEV_SECRET_KEY = "sb_secret_devstack_local_only_0000000000"  # maps to role service_role
DEV_PUBLISHABLE_KEY = "sb_publishable_devstack_local_only_00000"  # maps to role anon

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
OBJECT_MEDIA_TYPE = "application/vnd.pgrst.object+json"
EXPOSED_SCHEMAS = ("public",)
DEFAULT_MAX_FILE_SIZE = 50 * 1024 * 1024  # the platform's global limit on the Free plan

Role = Literal["anon", "service_role"]
Conn = psycopg.Connection[tuple[Any, ...]]
Query = sql.SQL | sql.Composed  # what Connection.execute accepts besides plain strings
_log = logging.getLogger("devstack.supabase")


@dataclass
class SupabaseConfig:
    database_url: str
    storage_dir: Path  # object bytes live here; metadata in storage.objects
    secret_key: str = DEV_SECRET_KEY
    publishable_key: str = DEV_PUBLISHABLE_KEY
    jwt_secret: str = "devstack-storage-signing-secret"  # signs storage signed-URL tokens (HS256)
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # global upload cap, on top of bucket limits


# --------------------------------------------------------------------------------------------
# Errors: one exception type that already knows its HTTP rendering.


class HttpError(Exception):
    """Raised anywhere in a request; rendered as JSON with `status`."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body

    def response(self) -> flask.Response:
        return _json_response(self.body, self.status)


def _pgrst_error(
    status: int, code: str, message: str, details: str | None = None, hint: str | None = None
) -> HttpError:
    return HttpError(status, {"code": code, "details": details, "hint": hint, "message": message})


def _storage_error(status_code: int, code: str, error: str, message: str) -> HttpError:
    # Storage reports the real status in the body and answers HTTP 400, except for 5xx.
    http_status = status_code if status_code >= 500 else 400
    body = {"statusCode": str(status_code), "code": code, "error": error, "message": message}
    return HttpError(http_status, body)


def _not_found_object() -> HttpError:
    return _storage_error(404, "NoSuchKey", "not_found", "Object not found")


def _json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> flask.Response:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return flask.Response(text, status=status, headers=headers, content_type=JSON_CONTENT_TYPE)


# PostgREST's SQLSTATE -> HTTP table (docs/references/errors.rst), most specific first.
_EXACT_STATUS = {
    "23503": 409,
    "23505": 409,
    "25006": 405,
    "42883": 404,
    "42P01": 404,
    "42P17": 500,
    "P0001": 400,
}
_CLASS_STATUS = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 500,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


def _status_for_sqlstate(state: str, role: Role) -> int:
    if state == "42501":
        return 401 if role == "anon" else 403
    if re.fullmatch(r"PT\d{3}", state):  # `raise sqlstate 'PT404'` picks the status directly
        return int(state[2:])
    return _EXACT_STATUS.get(state) or _CLASS_STATUS.get(state[:2], 400)


def _pg_error(exc: psycopg.Error, role: Role) -> HttpError:
    state = exc.sqlstate
    if not state:  # connection-level failure: the database is unreachable
        return _pgrst_error(503, "PGRST001", "Database client error", details=str(exc))
    diag = exc.diag
    return _pgrst_error(
        _status_for_sqlstate(state, role),
        state,
        diag.message_primary or str(exc),
        details=diag.message_detail,
        hint=diag.message_hint,
    )


# --------------------------------------------------------------------------------------------
# Database access: a tiny pool of autocommit connections; each request gets one transaction.


class Database:
    def __init__(self, uri: str, max_idle: int = 8) -> None:
        self._uri = uri
        self._max_idle = max_idle
        self._idle: list[Conn] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[Conn]:
        """One transaction; catalog lookups run as the connecting user until `become()`."""
        conn = self._acquire()
        try:
            with conn.transaction():
                if read_only:  # as PostgREST does for GET/HEAD
                    conn.execute("SET TRANSACTION READ ONLY")
                yield conn
        finally:
            self._release(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _acquire(self) -> Conn:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn
        return psycopg.connect(self._uri, autocommit=True)

    def _release(self, conn: Conn) -> None:
        reusable = not (conn.closed or conn.broken)
        reusable = reusable and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if reusable and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()


def become(conn: Conn, role: Role) -> None:
    """Switch the rest of the transaction to the API role, like PostgREST does per request."""
    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    # auth.role()/auth.jwt() in policies read these claims (see supabase_platform.sql).
    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", [json.dumps({"role": role})])


# --------------------------------------------------------------------------------------------
# Catalog: what exists is checked before any SQL mentions it.


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[str, ...]
    primary_key: tuple[str, ...]

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def check_column(self, column: str) -> None:
        """Unknown column in select/filter/order: PostgreSQL's own 42703 shape."""
        if column not in self.columns:
            raise _pgrst_error(400, "42703", f"column {self.name}.{column} does not exist")

    def check_payload_column(self, column: str) -> None:
        """Unknown column in a body or `columns=`: PostgREST's schema-cache error."""
        if column not in self.columns:
            message = f"Could not find the '{column}' column of '{self.name}' in the schema cache"
            raise _pgrst_error(400, "PGRST204", message)


def load_table(conn: Conn, schema: str, name: str) -> Table:
    row = conn.execute(
        """
        SELECT c.oid,
               array(SELECT a.attname::text FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                     ORDER BY a.attnum),
               array(SELECT a.attname::text FROM pg_index i
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                     WHERE i.indrelid = c.oid AND i.indisprimary
                     ORDER BY array_position(i.indkey::int2[], a.attnum))
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
        """,
        [schema, name],
    ).fetchone()
    if row is None:
        message = f"Could not find the table '{schema}.{name}' in the schema cache"
        raise _pgrst_error(404, "PGRST205", message)
    return Table(schema, name, tuple(row[1]), tuple(row[2]))


@dataclass(frozen=True)
class Function:
    schema: str
    name: str
    arg_names: tuple[str, ...]  # input arguments in order; "" when unnamed
    arg_types: tuple[str, ...]  # format_type() text, valid SQL by construction
    n_defaults: int
    returns_set: bool
    kind: Literal["void", "scalar", "composite"]

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def takes_single_json(self) -> bool:
        """One unnamed json/jsonb argument: PostgREST passes the whole body to it."""
        return self.arg_names == ("",) and self.arg_types[0] in ("json", "jsonb")

    def accepts(self, given: set[str]) -> bool:
        if "" in self.arg_names:
            return False
        required = set(self.arg_names[: len(self.arg_names) - self.n_defaults])
        return given <= set(self.arg_names) and required <= given

    def type_of(self, arg: str) -> str:
        return self.arg_types[self.arg_names.index(arg)]


_FUNCTIONS_SQL = """
SELECT p.proargnames::text[], p.proargmodes::text[], p.pronargdefaults, p.proretset,
       p.prorettype = 'void'::regtype,
       t.typrelid <> 0 OR p.prorettype = 'record'::regtype,
       array(SELECT format_type(a.t, NULL)
             FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i) ORDER BY a.i)
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
JOIN pg_type t ON t.oid = p.prorettype
WHERE n.nspname = %s AND p.proname = %s AND p.prokind = 'f'
"""


def find_function(conn: Conn, schema: str, name: str, given: set[str] | None) -> Function:
    """The overload whose argument names fit `given` (None: the body is not a JSON object)."""
    candidates = [
        _function_from_row(schema, name, row)
        for row in conn.execute(_FUNCTIONS_SQL, [schema, name])
    ]
    for fn in candidates:
        if given is not None and fn.accepts(given):
            return fn
    for fn in candidates:
        if fn.takes_single_json:  # receives the whole body, whatever its keys
            return fn
    args = ", ".join(sorted(given or ()))
    details = (
        f"Searched for the function {schema}.{name} with parameters {args or 'none'} or with a "
        "single unnamed json/jsonb parameter, but no matches were found in the schema cache."
    )
    message = f"Could not find the function {schema}.{name}({args}) in the schema cache"
    raise _pgrst_error(404, "PGRST202", message, details=details)


def _function_from_row(schema: str, name: str, row: tuple[Any, ...]) -> Function:
    all_names, modes, n_defaults, returns_set, is_void, is_composite, in_types = row
    in_types = tuple(in_types)
    if modes is None:  # every argument is IN
        names = list(all_names or [])[: len(in_types)]
    else:
        names = [
            n for n, m in zip(all_names or [""] * len(modes), modes, strict=False) if m in "ibv"
        ]
    names += [""] * (len(in_types) - len(names))
    kind: Literal["void", "scalar", "composite"] = (
        "void" if is_void else "composite" if is_composite else "scalar"
    )
    return Function(schema, name, tuple(names), in_types, n_defaults, returns_set, kind)


# --------------------------------------------------------------------------------------------
# PostgREST query-string syntax.

_RESERVED_PARAMS = {"select", "order", "limit", "offset", "columns", "on_conflict", "apikey"}
_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_PATTERNS = {"like": "LIKE", "ilike": "ILIKE"}
_IS_VALUES = {"null": "NULL", "true": "TRUE", "false": "FALSE", "unknown": "UNKNOWN"}


def _unsupported(what: str) -> HttpError:
    return _pgrst_error(400, "PGRST100", f"devstack does not support {what}")


def split_list(text: str) -> list[str]:
    """Split on commas outside double quotes, keeping quotes (PostgREST list syntax)."""
    items: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    items.append("".join(buf))
    return items


def unquote_item(token: str) -> str:
    """`"a\\"b"` -> `a"b`; unquoted tokens are returned unchanged."""
    if len(token) >= 2 and token[0] == '"' and token[-1] == '"':
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def parse_in_list(value: str) -> list[str]:
    if not (value.startswith("(") and value.endswith(")")):
        raise _pgrst_error(400, "PGRST100", f'"failed to parse filter (in.{value})"')
    inner = value[1:-1]
    return [] if inner == "" else [unquote_item(item) for item in split_list(inner)]


def _condition(column: sql.Identifier, expression: str) -> tuple[Query, list[Any]]:
    negate = expression.startswith("not.")
    if negate:
        expression = expression[4:]
    operator, _, value = expression.partition(".")
    if operator in _COMPARISONS:
        cond: Query = sql.SQL("{} {} %s").format(column, sql.SQL(_COMPARISONS[operator]))
        params: list[Any] = [value]
    elif operator in _PATTERNS:
        # PostgREST accepts `*` as the wildcard so patterns survive URL encoding.
        cond = sql.SQL("{} {} %s").format(column, sql.SQL(_PATTERNS[operator]))
        params = [value.replace("*", "%")]
    elif operator == "is" and value.lower() in _IS_VALUES:
        cond = sql.SQL("{} IS {}").format(column, sql.SQL(_IS_VALUES[value.lower()]))
        params = []
    elif operator == "in":
        items = parse_in_list(value)
        placeholders = sql.SQL(", ").join([sql.Placeholder()] * len(items))
        cond = sql.SQL("{} IN ({})").format(column, placeholders) if items else sql.SQL("false")
        params = list(items)
    else:
        raise _unsupported(f"the filter {expression!r}")
    return (sql.SQL("NOT ({})").format(cond) if negate else cond), params


def build_where(table: Table, args: MultiDict[str, str]) -> tuple[Query, list[Any]]:
    conditions: list[Query] = []
    params: list[Any] = []
    for key, expression in args.items(multi=True):
        if key in _RESERVED_PARAMS:
            continue
        if key in ("or", "and", "not.or", "not.and") or ("." in key and not key.startswith('"')):
            raise _unsupported(f"the logical or embedded filter {key!r}")
        column = unquote_item(key)
        table.check_column(column)
        cond, cond_params = _condition(sql.Identifier("_t", column), expression)
        conditions.append(cond)
        params += cond_params
    if not conditions:
        return sql.SQL("true"), []
    return sql.SQL(" AND ").join(conditions), params


def parse_select(table: Table, select: str | None) -> list[tuple[str, str]]:
    """`select=` -> [(output name, column)]; `*` expands to every column in table order."""
    pairs: list[tuple[str, str]] = []
    for raw in split_list(select or "*"):
        item = raw.strip()
        if item in ("*", ""):
            pairs += [(c, c) for c in table.columns]
            continue
        if not item.startswith('"') and ("(" in item or "::" in item or "->" in item):
            raise _unsupported(f"the select item {item!r} (embedding, casts, JSON paths)")
        alias, column = item, item
        if not item.startswith('"') and ":" in item:
            alias, column = item.split(":", 1)
        column = unquote_item(column)
        table.check_column(column)
        pairs.append((unquote_item(alias), column))
    return pairs


def projection(pairs: list[tuple[str, str]], source: str) -> Query:
    return sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.Identifier(source, column), sql.Identifier(alias))
        for alias, column in pairs
    )


def parse_order(table: Table, order: str | None) -> Query:
    if not order:
        return sql.SQL("")
    terms = [_order_term(table, item) for item in split_list(order)]
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)


def _order_term(table: Table, item: str) -> Query:
    if item.startswith('"'):
        end = item.index('"', 1)
        column, modifiers = unquote_item(item[: end + 1]), item[end + 2 :].split(".")
    else:
        column, *modifiers = item.split(".")
    table.check_column(column)
    words = {"asc": "ASC", "desc": "DESC", "nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}
    parts: list[sql.Composable] = [sql.Identifier("_t", column)]
    for modifier in filter(None, modifiers):
        if modifier not in words:
            raise _pgrst_error(400, "PGRST100", f'"failed to parse order ({item})"')
        parts.append(sql.SQL(words[modifier]))
    return sql.SQL(" ").join(parts)


def int_arg(args: MultiDict[str, str], name: str) -> int | None:
    raw = args.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise _pgrst_error(400, "PGRST100", f'"failed to parse {name} ({raw})"')
    return int(raw)


def column_list(table: Table, raw: str) -> list[str]:
    columns = [unquote_item(item) for item in split_list(raw)]
    for column in columns:
        table.check_payload_column(column)
    return columns


@dataclass(frozen=True)
class Prefer:
    representation: bool = False  # PostgREST's default is return=minimal
    resolution: str | None = None  # "merge-duplicates" | "ignore-duplicates"
    count: bool = False
    missing_default: bool = False

    @classmethod
    def from_headers(cls, values: Iterable[str]) -> Prefer:
        prefs: dict[str, str] = {}
        for value in values:
            for part in value.split(","):
                key, _, setting = part.strip().partition("=")
                prefs[key] = setting
        return cls(
            representation=prefs.get("return") == "representation",
            resolution=prefs.get("resolution"),
            count=prefs.get("count") in ("exact", "planned", "estimated"),
            missing_default=prefs.get("missing") == "default",
        )


def content_range(offset: int, rows: int, total: int | None) -> str:
    span = f"{offset}-{offset + rows - 1}" if rows else "*"
    return f"{span}/{'*' if total is None else total}"


def single_or_406(array_text: str, rows: int) -> str:
    if rows != 1:
        raise _pgrst_error(
            406,
            "PGRST116",
            "Cannot coerce the result to a single JSON object",
            details=f"The result contains {rows} rows",
        )
    return json.dumps(json.loads(array_text)[0])


# --------------------------------------------------------------------------------------------
# PostgREST: statements.


@dataclass(frozen=True)
class WriteResult:
    body: str  # JSON array of the projected rows ("[]" under return=minimal)
    rows: int
    inserted: int


def run_write(
    conn: Conn,
    statement: Query,
    params: list[Any],
    pairs: list[tuple[str, str]],
    returning: bool,
    inserted_flag: Query,
) -> WriteResult:
    if not returning:
        # No RETURNING at all: insert-only RLS policies must work under return=minimal.
        cursor = conn.execute(statement, params)
        return WriteResult("[]", max(cursor.rowcount, 0), max(cursor.rowcount, 0))
    query = sql.SQL(
        "WITH _w AS ({stmt} RETURNING _t.*, {flag} AS __devstack_inserted) "
        "SELECT (SELECT coalesce(json_agg(_r), '[]')::text FROM (SELECT {proj} FROM _w) _r), "
        "(SELECT count(*) FROM _w), (SELECT count(*) FROM _w WHERE __devstack_inserted)"
    ).format(stmt=statement, flag=inserted_flag, proj=projection(pairs, "_w"))
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return WriteResult(row[0], row[1], row[2])


def merge_results(results: list[WriteResult]) -> WriteResult:
    if len(results) == 1:
        return results[0]
    rows = [item for result in results for item in json.loads(result.body)]
    return WriteResult(
        json.dumps(rows), sum(r.rows for r in results), sum(r.inserted for r in results)
    )


def insert_statement(
    table: Table, columns: list[str], conflict: tuple[list[str], str] | None
) -> Query:
    """INSERT that lets PostgreSQL convert JSON to column types and fill omitted DEFAULTs."""
    if not columns:
        return sql.SQL("INSERT INTO {} AS _t DEFAULT VALUES").format(table.ident)
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    statement = sql.SQL(
        "INSERT INTO {tbl} AS _t ({cols}) "
        "SELECT {cols} FROM json_populate_recordset(NULL::{tbl}, %s::json)"
    ).format(tbl=table.ident, cols=names)
    if conflict is None:
        return statement
    targets, resolution = conflict
    target_sql = sql.SQL(", ").join(map(sql.Identifier, targets))
    if resolution == "ignore-duplicates":
        return statement + sql.SQL(" ON CONFLICT ({}) DO NOTHING").format(target_sql)
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in columns
    )
    return statement + sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(target_sql, updates)


def insert_batches(
    rows: list[dict[str, Any]], columns: list[str] | None, missing_default: bool
) -> list[tuple[list[str], list[dict[str, Any]]]]:
    """Group rows into INSERT statements as (columns, rows).

    Normally one statement for all rows over the union of keys (or `columns=`), so a key that
    is absent from some row inserts NULL there, as PostgREST does. With `missing=default`, or
    when there are no columns at all, one statement per row over that row's own keys, so the
    absent columns take their DEFAULTs.
    """
    if missing_default:
        return [
            ([c for c in (list(row) if columns is None else columns) if c in row], [row])
            for row in rows
        ]
    union = list(dict.fromkeys(key for row in rows for key in row))
    shared = union if columns is None else columns
    if not shared:
        return [([], [row]) for row in rows]
    return [(shared, rows)]


# --------------------------------------------------------------------------------------------
# Storage helpers.


def object_metadata(data: bytes, content_type: str, cache_control: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {
        "eTag": f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"',
        "size": len(data),
        "mimetype": content_type,
        "cacheControl": cache_control,
        "lastModified": now,
        "contentLength": len(data),
        "httpStatusCode": 200,
    }


def mime_allowed(content_type: str, allowed: list[str] | None) -> bool:
    if not allowed:
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    for pattern in (p.strip().lower() for p in allowed):
        if pattern == mime or (pattern.endswith("/*") and mime.startswith(pattern[:-1])):
            return True
    return False


def check_key(key: str) -> None:
    segments = key.split("/")
    bad = not key or any(s in (".", "..") for s in segments) or any(ord(c) < 32 for c in key)
    if bad:
        raise _storage_error(400, "InvalidKey", "InvalidKey", f"Invalid key: {key}")


def cache_control_value(raw: str | None) -> str:
    if not raw:
        return "no-cache"
    return f"max-age={raw}" if raw.isdigit() else raw


@dataclass(frozen=True)
class Bucket:
    id: str
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None


def load_bucket(conn: Conn, bucket_id: str) -> Bucket:
    """Looked up as the connecting user: limits apply whatever the caller may see."""
    row = conn.execute(
        "SELECT id, public, file_size_limit, allowed_mime_types FROM storage.buckets WHERE id = %s",
        [bucket_id],
    ).fetchone()
    if row is None:
        raise _storage_error(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
    return Bucket(row[0], row[1], row[2], row[3])


@dataclass(frozen=True)
class StoredObject:
    id: str
    content_type: str
    cache_control: str
    etag: str | None
    updated_at: datetime


def find_object(conn: Conn, bucket_id: str, key: str) -> StoredObject:
    row = conn.execute(
        "SELECT id::text, metadata, updated_at FROM storage.objects "
        "WHERE bucket_id = %s AND name = %s",
        [bucket_id, key],
    ).fetchone()
    if row is None:
        raise _not_found_object()
    metadata = row[1] or {}
    return StoredObject(
        id=row[0],
        content_type=metadata.get("mimetype") or "application/octet-stream",
        cache_control=metadata.get("cacheControl") or "no-cache",
        etag=metadata.get("eTag"),
        updated_at=row[2],
    )


def list_entries(rows: list[tuple[str, str]], prefix: str) -> list[dict[str, Any]]:
    """Fold object names under `prefix` into the storage `list` shape: files and folders."""
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    entries: dict[str, dict[str, Any]] = {}
    empty = {"id": None, "updated_at": None, "created_at": None, "last_accessed_at": None}
    for name, info_json in rows:
        rest = name[len(folder) :]
        if "/" in rest:
            sub = rest.split("/", 1)[0]
            entries.setdefault(sub, {"name": sub, **empty, "metadata": None})
        else:
            entries[rest] = {"name": rest, **json.loads(info_json)}
    return list(entries.values())


# Signed-URL tokens: compact HS256 JWTs, interoperable with any JWT library. Done by hand because
# PyJWT warns on every call when the key is shorter than 32 bytes, as the default dev secret is.


class TokenError(ValueError):
    """Message texts follow the Storage server's (node `jsonwebtoken`) wording."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hs256(signing_input: str, secret: str) -> bytes:
    return hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()


def sign_hs256(claims: dict[str, Any], secret: str) -> str:
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{_b64url(_hs256(f'{header}.{payload}', secret))}"


def verify_hs256(token: str, secret: str) -> dict[str, Any]:
    """Check signature, algorithm and expiry; return the claims."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("jwt malformed")
    header_b64, payload_b64, signature_b64 = parts
    try:
        header = json.loads(_b64url_decode(header_b64))
        claims = json.loads(_b64url_decode(payload_b64))
        signature = _b64url_decode(signature_b64)
    except (ValueError, binascii.Error) as exc:
        raise TokenError("jwt malformed") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("jwt malformed")
    expected = _hs256(f"{header_b64}.{payload_b64}", secret)
    if header.get("alg") != "HS256" or not hmac.compare_digest(signature, expected):
        raise TokenError("invalid signature")
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or expires <= time.time():
        raise TokenError("jwt expired")
    return claims


# --------------------------------------------------------------------------------------------
# Fault injection.

_FAULT_KINDS = ("503", "500", "timeout", "reset")
_FAULT_SERVICES = ("rest", "storage", "any")


@dataclass
class Fault:
    id: int
    service: str
    kind: str
    remaining: int  # -1 = until cleared
    method: str | None = None
    path_contains: str | None = None
    delay_s: float = 30.0

    def matches(self, service: str, method: str, path: str) -> bool:
        return (
            self.service in (service, "any")
            and (self.method is None or self.method.upper() == method.upper())
            and (self.path_contains is None or self.path_contains in path)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "kind": self.kind,
            "times": self.remaining,
            "method": self.method,
            "path_contains": self.path_contains,
            "delay_s": self.delay_s,
        }


def parse_fault(spec: Any, fault_id: int) -> Fault:
    if not isinstance(spec, dict):
        raise HttpError(400, {"message": "fault must be a JSON object"})
    service, kind = spec.get("service", "any"), str(spec.get("kind", ""))
    times, delay = spec.get("times", 1), spec.get("delay_s", 30)
    problems = []
    if service not in _FAULT_SERVICES:
        problems.append(f"service must be one of {_FAULT_SERVICES}")
    if kind not in _FAULT_KINDS:
        problems.append(f"kind must be one of {_FAULT_KINDS}")
    if not isinstance(times, int) or isinstance(times, bool) or times == 0 or times < -1:
        problems.append("times must be a positive integer or -1")
    if not isinstance(delay, int | float) or delay < 0:
        problems.append("delay_s must be a non-negative number")
    if problems:
        raise HttpError(400, {"message": "; ".join(problems)})
    method, contains = spec.get("method"), spec.get("path_contains")
    return Fault(fault_id, service, kind, times, method, contains, float(delay))


class FaultBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1
        self._wake = threading.Event()

    def add(self, spec: Any) -> Fault:
        with self._lock:
            fault = parse_fault(spec, self._next_id)
            self._next_id += 1
            self._faults.append(fault)
            return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            # Release requests parked by a "timeout" fault so tests tear down quickly.
            self._wake.set()
            self._wake = threading.Event()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_json() for f in self._faults]

    def take(self, service: str, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(service, method, path):
                    if fault.remaining > 0:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def sleep(self, seconds: float) -> None:
        with self._lock:
            wake = self._wake
        wake.wait(seconds)


def drop_connection() -> flask.Response:
    """Close the client's socket with an RST and no HTTP reply (werkzeug's server only)."""
    sock = flask.request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        return _json_response({"message": "Bad Gateway (devstack fault: reset)"}, 502)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    # Werkzeug's write of this response fails with a broken pipe, which it ignores.
    return flask.Response(status=502)


# --------------------------------------------------------------------------------------------
# The application.


class SupabaseStandIn:
    """Holds the config, the connection pool and the fault board; its methods are the views."""

    def __init__(self, config: SupabaseConfig) -> None:
        self.config = config
        self.db = Database(config.database_url)
        self.faults = FaultBoard()
        self.blob_dir = config.storage_dir / "objects"

    # ---- plumbing -------------------------------------------------------------------------

    def role(self) -> Role:
        """The platform gateway checks only `apikey` (header, or query param)."""
        key = flask.request.headers.get("apikey") or flask.request.args.get("apikey")
        if not key:
            raise HttpError(
                401,
                {
                    "message": "No API key found in request",
                    "hint": "No `apikey` request header or url param was found.",
                },
            )
        if key == self.config.secret_key:
            return "service_role"
        if key == self.config.publishable_key:
            return "anon"
        raise HttpError(
            401,
            {
                "message": "Invalid API key",
                "hint": "Double check your Supabase `anon` or `service_role` API key.",
            },
        )

    @contextlib.contextmanager
    def rest_transaction(self, role: Role, read_only: bool = False) -> Iterator[Conn]:
        try:
            with self.db.transaction(read_only=read_only) as conn:
                yield conn
        except psycopg.Error as exc:
            raise _pg_error(exc, role) from exc

    @contextlib.contextmanager
    def storage_transaction(self) -> Iterator[Conn]:
        try:
            with self.db.transaction() as conn:
                yield conn
        except psycopg.Error as exc:
            raise _storage_pg_error(exc) from exc

    def inject_fault(self) -> flask.Response | None:
        path = flask.request.path
        service = "rest" if path.startswith("/rest/") else None
        service = "storage" if path.startswith("/storage/") else service
        if service is None:  # /__dev/* and unknown paths are never faulted
            return None
        fault = self.faults.take(service, flask.request.method, flask.request.full_path)
        if fault is None:
            return None
        _log.info("injecting fault %s into %s %s", fault.kind, flask.request.method, path)
        if fault.kind == "reset":
            return drop_connection()
        status = {"503": 503, "500": 500}.get(fault.kind, 504)
        if fault.kind == "timeout":
            self.faults.sleep(fault.delay_s)
        message = f"devstack injected fault ({fault.kind})"
        if service == "storage":
            body: dict[str, Any] = {"statusCode": str(status), "error": "Fault", "message": message}
        else:
            body = {"code": str(status), "details": None, "hint": None, "message": message}
        return _json_response(body, status)

    # ---- PostgREST ------------------------------------------------------------------------

    def schema(self) -> str:
        method = flask.request.method
        header = "Accept-Profile" if method in ("GET", "HEAD") else "Content-Profile"
        schema = flask.request.headers.get(header) or EXPOSED_SCHEMAS[0]
        if schema not in EXPOSED_SCHEMAS:
            hint = f"Only the following schemas are exposed: {', '.join(EXPOSED_SCHEMAS)}"
            raise _pgrst_error(406, "PGRST106", f"Invalid schema: {schema}", hint=hint)
        return schema

    def rest_table(self, table: str) -> flask.Response:
        role, schema = self.role(), self.schema()
        method = flask.request.method
        body = None if method in ("GET", "HEAD", "DELETE") else self.json_body()
        with self.rest_transaction(role, read_only=method in ("GET", "HEAD")) as conn:
            meta = load_table(conn, schema, table)
            if method in ("GET", "HEAD"):
                return self.rest_select(conn, role, meta)
            if method == "POST":
                return self.rest_insert(conn, role, meta, body)
            return self.rest_update_or_delete(conn, role, meta, body)

    def json_body(self) -> Any:
        raw = flask.request.get_data()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _pgrst_error(400, "PGRST102", "Empty or invalid json", details=str(exc)) from exc

    def wants_object(self) -> bool:
        return OBJECT_MEDIA_TYPE in (flask.request.headers.get("Accept") or "")

    def prefer(self) -> Prefer:
        return Prefer.from_headers(flask.request.headers.getlist("Prefer"))

    def rest_select(self, conn: Conn, role: Role, table: Table) -> flask.Response:
        args = flask.request.args
        pairs = parse_select(table, args.get("select"))
        where, params = build_where(table, args)
        limit, offset = int_arg(args, "limit"), int_arg(args, "offset") or 0
        paging: Query = sql.SQL("")
        if limit is not None:
            paging += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
        if offset:
            paging += sql.SQL(" OFFSET {}").format(sql.Literal(offset))
        become(conn, role)
        query = sql.SQL(
            "SELECT coalesce(json_agg(_r), '[]')::text, count(*) FROM "
            "(SELECT {proj} FROM {tbl} AS _t WHERE {where}{order}{paging}) _r"
        ).format(
            proj=projection(pairs, "_t"),
            tbl=table.ident,
            where=where,
            order=parse_order(table, args.get("order")),
            paging=paging,
        )
        row = conn.execute(query, params).fetchone()
        assert row is not None
        body, rows = row[0], row[1]
        total = None
        if self.prefer().count:
            count_query = sql.SQL("SELECT count(*) FROM {} AS _t WHERE {}").format(
                table.ident, where
            )
            total = _scalar(conn.execute(count_query, params).fetchone())
        headers = {"Content-Range": content_range(offset, rows, total)}
        if self.wants_object():
            return self.object_response(single_or_406(body, rows), 200, headers)
        partial = total is not None and (offset > 0 or rows < total)
        return _json_response(body, 206 if partial else 200, headers)

    def object_response(self, body: str, status: int, headers: dict[str, str]) -> flask.Response:
        content_type = f"{OBJECT_MEDIA_TYPE}; charset=utf-8"
        return flask.Response(body, status=status, headers=headers, content_type=content_type)

    def rest_insert(self, conn: Conn, role: Role, table: Table, body: Any) -> flask.Response:
        args, prefer = flask.request.args, self.prefer()
        rows = body if isinstance(body, list) else [body]
        if not all(isinstance(row, dict) for row in rows):
            raise _pgrst_error(400, "PGRST102", "All object keys must match")
        columns = column_list(table, args["columns"]) if "columns" in args else None
        for key in {k for row in rows for k in row} if columns is None else []:
            table.check_payload_column(key)
        conflict = self.conflict_target(table, prefer)
        pairs = parse_select(table, args.get("select"))
        flag = sql.SQL("(_t.xmax = 0)") if conflict else sql.SQL("true")
        become(conn, role)
        results = [
            run_write(
                conn,
                insert_statement(table, cols, conflict),
                [json.dumps(batch)] if cols else [],
                pairs,
                prefer.representation,
                flag,
            )
            for cols, batch in insert_batches(rows, columns, prefer.missing_default)
        ]
        result = merge_results(results) if results else WriteResult("[]", 0, 0)
        # PostgREST: 201 when anything was inserted; an upsert that only updated answers 200.
        only_updated = conflict and prefer.representation and rows and result.inserted == 0
        status = 200 if only_updated else 201
        headers = {"Content-Range": f"*/{result.rows if prefer.count else '*'}"}
        return self.write_response(result, status, prefer, headers)

    def conflict_target(self, table: Table, prefer: Prefer) -> tuple[list[str], str] | None:
        if prefer.resolution not in ("merge-duplicates", "ignore-duplicates"):
            return None
        raw = flask.request.args.get("on_conflict")
        targets = column_list(table, raw) if raw else list(table.primary_key)
        if not targets:
            raise _pgrst_error(400, "PGRST100", "upsert needs on_conflict or a primary key")
        return targets, prefer.resolution

    def write_response(
        self, result: WriteResult, status: int, prefer: Prefer, headers: dict[str, str]
    ) -> flask.Response:
        if self.wants_object() and prefer.representation:
            return self.object_response(single_or_406(result.body, result.rows), status, headers)
        if not prefer.representation:
            # minimal: 201 stays 201 for inserts; PATCH/DELETE answer 204.
            return flask.Response(status=status if status == 201 else 204, headers=headers)
        return _json_response(result.body, status, headers)

    def rest_update_or_delete(
        self, conn: Conn, role: Role, table: Table, body: Any
    ) -> flask.Response:
        args, prefer = flask.request.args, self.prefer()
        if "limit" in args or "offset" in args:
            raise _unsupported("limit/offset on PATCH or DELETE")
        where, params = build_where(table, args)
        pairs = parse_select(table, args.get("select"))
        statement: Query | None
        if flask.request.method == "DELETE":
            statement = sql.SQL("DELETE FROM {} AS _t WHERE {}").format(table.ident, where)
        else:
            statement, params = self.update_statement(table, body, where, params)
        become(conn, role)
        if statement is None:  # empty PATCH body: nothing to change
            result = WriteResult("[]", 0, 0)
        else:
            result = run_write(
                conn, statement, params, pairs, prefer.representation, sql.SQL("false")
            )
        headers = {
            "Content-Range": content_range(0, result.rows, result.rows if prefer.count else None)
        }
        return self.write_response(result, 200, prefer, headers)

    def update_statement(
        self, table: Table, body: Any, where: Query, params: list[Any]
    ) -> tuple[Query | None, list[Any]]:
        if not isinstance(body, dict):
            raise _unsupported("bulk PATCH with a JSON array")
        for key in body:
            table.check_payload_column(key)
        if not body:
            return None, params
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = _p.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in body
        )
        statement = sql.SQL(
            "UPDATE {tbl} AS _t SET {set} FROM json_populate_record(NULL::{tbl}, %s::json) AS _p "
            "WHERE {where}"
        ).format(tbl=table.ident, set=assignments, where=where)
        return statement, [json.dumps(body), *params]

    def rest_rpc(self, function: str) -> flask.Response:
        role, schema = self.role(), self.schema()
        is_get = flask.request.method in ("GET", "HEAD")
        if is_get:
            query = flask.request.args.items()
            raw_args: Any = {k: v for k, v in query if k not in _RESERVED_PARAMS}
        else:
            raw_args = self.json_body()
        given = set(raw_args) if isinstance(raw_args, dict) else None
        with self.rest_transaction(role, read_only=is_get) as conn:
            fn = find_function(conn, schema, function, given)
            become(conn, role)
            return self.call_function(conn, fn, raw_args)

    def call_function(self, conn: Conn, fn: Function, args: Any) -> flask.Response:
        call, arg_source = _call_with_args(fn, args)
        params = [json.dumps(args)] if fn.takes_single_json or arg_source is not None else []
        if fn.kind == "void":
            conn.execute(_select(sql.SQL("{}").format(call), arg_source), params)
            return flask.Response(status=204)
        if not fn.returns_set and fn.kind == "scalar":
            query = _select(sql.SQL("to_json({})::text").format(call), arg_source)
            row = conn.execute(query, params).fetchone()
            return _json_response("null" if row is None or row[0] is None else row[0])
        alias = sql.SQL("_c(_v)" if fn.kind == "scalar" else "_c")
        called = sql.SQL("{} AS {}").format(call, alias)
        if arg_source is not None:
            called = sql.SQL("{} CROSS JOIN LATERAL {}").format(arg_source, called)
        if not fn.returns_set:  # a single composite: one JSON object
            row = conn.execute(_select(sql.SQL("to_json(_c)::text"), called), params).fetchone()
            return _json_response("null" if row is None or row[0] is None else row[0])
        value = sql.SQL("_c._v" if fn.kind == "scalar" else "_c")
        aggregate = sql.SQL("coalesce(json_agg({}), '[]')::text, count(*)").format(value)
        row = conn.execute(_select(aggregate, called), params).fetchone()
        assert row is not None
        if self.wants_object():
            return self.object_response(single_or_406(row[0], row[1]), 200, {})
        return _json_response(row[0])

    # ---- Storage: objects -----------------------------------------------------------------

    def upload(self, bucket_id: str, key: str) -> flask.Response:
        role = self.role()
        check_key(key)
        data, content_type, cache_control, user_metadata = self.read_upload()
        upsert = flask.request.method == "POST" and flask.request.headers.get("x-upsert") == "true"
        with self.storage_transaction() as conn:
            self.check_upload_limits(load_bucket(conn, bucket_id), data, content_type)
            become(conn, role)
            metadata = object_metadata(data, content_type, cache_control)
            object_id = self.save_object_row(
                conn, bucket_id, key, metadata, user_metadata, upsert=upsert
            )
            self.write_blob(object_id, data)
        return _json_response({"Id": object_id, "Key": f"{bucket_id}/{key}"})

    def read_upload(self) -> tuple[bytes, str, str, Any]:
        request = flask.request
        if request.mimetype == "multipart/form-data":
            part = request.files.get("file")
            if part is None:
                raise _storage_error(400, "InvalidRequest", "Bad Request", "No file part in upload")
            content_type = request.form.get("contentType") or part.content_type
            metadata = request.form.get("metadata")
            return (
                part.read(),
                content_type or "application/octet-stream",
                cache_control_value(request.form.get("cacheControl")),
                json.loads(metadata) if metadata else None,
            )
        # Raw body upload (supabase-js with a Blob, curl --data-binary).
        return (
            request.get_data(),
            request.content_type or "application/octet-stream",
            cache_control_value(request.headers.get("cache-control")),
            None,
        )

    def check_upload_limits(self, bucket: Bucket, data: bytes, content_type: str) -> None:
        limit = self.config.max_file_size
        if bucket.file_size_limit is not None:
            limit = min(limit, bucket.file_size_limit)
        if len(data) > limit:
            message = "The object exceeded the maximum allowed size"
            raise _storage_error(413, "EntityTooLarge", "Payload too large", message)
        if not mime_allowed(content_type, bucket.allowed_mime_types):
            message = f"mime type {content_type} is not supported"
            raise _storage_error(415, "InvalidMimeType", "invalid_mime_type", message)

    def save_object_row(
        self,
        conn: Conn,
        bucket_id: str,
        key: str,
        metadata: dict[str, Any],
        user_metadata: Any,
        upsert: bool,
    ) -> str:
        user_json = None if user_metadata is None else json.dumps(user_metadata)
        params = [bucket_id, key, json.dumps(metadata), user_json]
        if flask.request.method == "PUT":
            row = conn.execute(
                "UPDATE storage.objects SET metadata = %s::jsonb, user_metadata = %s::jsonb, "
                "updated_at = now() WHERE bucket_id = %s AND name = %s RETURNING id::text",
                [params[2], params[3], bucket_id, key],
            ).fetchone()
            if row is None:
                raise _not_found_object()
            return str(row[0])
        on_conflict = (
            " ON CONFLICT (bucket_id, name) DO UPDATE SET metadata = EXCLUDED.metadata, "
            "user_metadata = EXCLUDED.user_metadata, updated_at = now(), last_accessed_at = now()"
            if upsert
            else ""
        )
        row = conn.execute(
            "INSERT INTO storage.objects (bucket_id, name, metadata, user_metadata) "
            "VALUES (%s, %s, %s::jsonb, %s::jsonb)" + on_conflict + " RETURNING id::text",
            params,
        ).fetchone()
        assert row is not None
        return str(row[0])

    def blob_path(self, object_id: str) -> Path:
        return self.blob_dir / str(uuid.UUID(object_id))  # the UUID round-trip keeps it a name

    def write_blob(self, object_id: str, data: bytes) -> None:
        """Atomic replace, so a concurrent download sees the old or the new bytes, never half."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            Path(tmp).replace(self.blob_path(object_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def serve_object(self, obj: StoredObject) -> flask.Response:
        try:
            data = self.blob_path(obj.id).read_bytes()
        except FileNotFoundError as exc:
            raise _not_found_object() from exc
        headers = {"Cache-Control": obj.cache_control, "Last-Modified": _http_date(obj.updated_at)}
        if obj.etag:
            headers["ETag"] = obj.etag
        return flask.Response(data, headers=headers, content_type=obj.content_type)

    def download(self, bucket_id: str, key: str) -> flask.Response:
        role = self.role()
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)  # RLS decides what the caller may read
            obj = find_object(conn, bucket_id, key)
        return self.serve_object(obj)

    def public_download(self, bucket_id: str, key: str) -> flask.Response:
        with self.storage_transaction() as conn:
            bucket = load_bucket(conn, bucket_id)
            if not bucket.public:
                raise _storage_error(400, "InvalidRequest", "Bad Request", "Bucket is not public")
            obj = find_object(conn, bucket_id, key)
        return self.serve_object(obj)

    def info(self, bucket_id: str, key: str) -> flask.Response:
        role = self.role()
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)
            row = conn.execute(
                "SELECT json_build_object('id', id, 'name', name, 'version', NULL, "
                "'bucket_id', bucket_id, 'size', (metadata->>'size')::bigint, "
                "'content_type', metadata->>'mimetype', "
                "'cache_control', metadata->>'cacheControl', "
                "'etag', metadata->>'eTag', 'metadata', user_metadata, "
                "'last_modified', updated_at, 'created_at', created_at)::text "
                "FROM storage.objects WHERE bucket_id = %s AND name = %s",
                [bucket_id, key],
            ).fetchone()
        if row is None:
            raise _not_found_object()
        return _json_response(row[0])

    def sign(self, bucket_id: str, key: str) -> flask.Response:
        role = self.role()
        expires_in = _expires_in(flask.request.get_json(silent=True))
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)  # signing needs read access to the object
            find_object(conn, bucket_id, key)
        return _json_response({"signedURL": self.signed_path(bucket_id, key, expires_in)})

    def sign_many(self, bucket_id: str) -> flask.Response:
        role = self.role()
        body = flask.request.get_json(silent=True) or {}
        expires_in, paths = _expires_in(body), body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _storage_error(400, "InvalidRequest", "Bad Request", "paths must be a list")
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)
            found = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM storage.objects WHERE bucket_id = %s AND name = ANY(%s)",
                    [bucket_id, paths],
                )
            }
        missing = "Either the object does not exist or you do not have access to it"
        return _json_response(
            [
                {
                    "error": None if path in found else missing,
                    "path": path,
                    "signedURL": self.signed_path(bucket_id, path, expires_in)
                    if path in found
                    else None,
                }
                for path in paths
            ]
        )

    def signed_path(self, bucket_id: str, key: str, expires_in: int) -> str:
        now = int(time.time())
        claims = {"url": f"{bucket_id}/{key}", "iat": now, "exp": now + expires_in}
        token = sign_hs256(claims, self.config.jwt_secret)
        return f"/object/sign/{quote(bucket_id)}/{quote(key)}?token={token}"

    def signed_download(self, bucket_id: str, key: str) -> flask.Response:
        token = flask.request.args.get("token")
        if not token:
            raise _storage_error(
                400, "InvalidJWT", "Error", "querystring must have property 'token'"
            )
        try:
            claims = verify_hs256(token, self.config.jwt_secret)
        except TokenError as exc:
            raise _storage_error(400, "InvalidJWT", "InvalidJWT", str(exc)) from exc
        if claims.get("url") != f"{bucket_id}/{key}":
            message = "The url do not match the signature"
            raise _storage_error(400, "InvalidSignature", "InvalidSignature", message)
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            obj = find_object(conn, bucket_id, key)  # the token is the authorisation
        return self.serve_object(obj)

    def remove_many(self, bucket_id: str) -> flask.Response:
        role = self.role()
        prefixes = (flask.request.get_json(silent=True) or {}).get("prefixes")
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise _storage_error(400, "InvalidRequest", "Bad Request", "prefixes must be a list")
        return _json_response(self.delete_objects(role, bucket_id, prefixes))

    def remove_one(self, bucket_id: str, key: str) -> flask.Response:
        if not self.delete_objects(self.role(), bucket_id, [key]):
            raise _not_found_object()
        return _json_response({"message": "Successfully deleted"})

    def delete_objects(self, role: Role, bucket_id: str, names: list[str]) -> list[dict[str, Any]]:
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)  # without a delete policy, anon silently deletes nothing
            rows = conn.execute(
                "DELETE FROM storage.objects WHERE bucket_id = %s AND name = ANY(%s) "
                "RETURNING id::text, to_json(storage.objects.*)::text",
                [bucket_id, names],
            ).fetchall()
        for row in rows:  # after commit: a rolled-back delete must keep its bytes
            self.blob_path(row[0]).unlink(missing_ok=True)
        return [json.loads(row[1]) for row in rows]

    def list_objects(self, bucket_id: str) -> flask.Response:
        role = self.role()
        body = flask.request.get_json(silent=True) or {}
        prefix = str(body.get("prefix") or "")
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)
            folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
            rows = conn.execute(
                "SELECT name, json_build_object('id', id, 'updated_at', updated_at, "
                "'created_at', created_at, 'last_accessed_at', last_accessed_at, "
                "'metadata', metadata)::text FROM storage.objects "
                "WHERE bucket_id = %s AND starts_with(name, %s)",
                [bucket_id, folder],
            ).fetchall()
        entries = list_entries([(r[0], r[1]) for r in rows], prefix)
        return _json_response(_search_sort_page(entries, body))

    # ---- Storage: buckets -----------------------------------------------------------------

    def list_buckets(self) -> flask.Response:
        role = self.role()
        with self.storage_transaction() as conn:
            become(conn, role)
            row = conn.execute(
                "SELECT coalesce(json_agg(" + _BUCKET_JSON + " ORDER BY b.id), '[]')::text "
                "FROM storage.buckets b"
            ).fetchone()
        assert row is not None
        return _json_response(row[0])

    def get_bucket(self, bucket_id: str) -> flask.Response:
        role = self.role()
        with self.storage_transaction() as conn:
            become(conn, role)
            row = conn.execute(
                "SELECT " + _BUCKET_JSON + "::text FROM storage.buckets b WHERE b.id = %s",
                [bucket_id],
            ).fetchone()
        if row is None:
            raise _storage_error(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
        return _json_response(row[0])

    def create_bucket(self) -> flask.Response:
        role = self.role()
        body = flask.request.get_json(silent=True) or {}
        bucket_id = body.get("id") or body.get("name")
        if not isinstance(bucket_id, str) or not re.fullmatch(r"[\w.!*'() &$@=;:+,?-]+", bucket_id):
            raise _storage_error(400, "InvalidBucketName", "Invalid Input", "Invalid bucket name")
        with self.storage_transaction() as conn:
            become(conn, role)
            conn.execute(
                "INSERT INTO storage.buckets "
                "(id, name, public, file_size_limit, allowed_mime_types) "
                "VALUES (%s, %s, %s, %s, %s)",
                [
                    bucket_id,
                    body.get("name") or bucket_id,
                    bool(body.get("public", False)),
                    _size_limit(body.get("file_size_limit")),
                    body.get("allowed_mime_types"),
                ],
            )
        return _json_response({"name": bucket_id})

    def update_bucket(self, bucket_id: str) -> flask.Response:
        role = self.role()
        body = flask.request.get_json(silent=True) or {}
        # Only the options that were sent change, as on the platform.
        fields = {k: body[k] for k in ("public", "allowed_mime_types") if k in body}
        if "file_size_limit" in body:
            fields["file_size_limit"] = _size_limit(body["file_size_limit"])
        assignments = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in fields]
        statement = sql.SQL("UPDATE storage.buckets SET {} WHERE id = %s").format(
            sql.SQL(", ").join([*assignments, sql.SQL("updated_at = now()")])
        )
        with self.storage_transaction() as conn:
            become(conn, role)
            cursor = conn.execute(statement, [*fields.values(), bucket_id])
        if cursor.rowcount == 0:
            raise _storage_error(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
        return _json_response({"message": "Successfully updated"})

    def empty_bucket(self, bucket_id: str) -> flask.Response:
        role = self.role()
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)
            rows = conn.execute(
                "DELETE FROM storage.objects WHERE bucket_id = %s RETURNING id::text", [bucket_id]
            ).fetchall()
        for row in rows:
            self.blob_path(row[0]).unlink(missing_ok=True)
        return _json_response({"message": "Successfully emptied"})

    def delete_bucket(self, bucket_id: str) -> flask.Response:
        role = self.role()
        with self.storage_transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)
            conn.execute("DELETE FROM storage.buckets WHERE id = %s", [bucket_id])
        return _json_response({"message": "Successfully deleted"})

    # ---- dev hooks ------------------------------------------------------------------------

    def faults_view(self) -> flask.Response:
        method = flask.request.method
        if method == "POST":
            return _json_response(
                self.faults.add(flask.request.get_json(silent=True)).to_json(), 201
            )
        if method == "DELETE":
            self.faults.clear()
            return flask.Response(status=204)
        return _json_response(self.faults.snapshot())

    def health(self) -> flask.Response:
        try:
            with self.db.transaction() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return _json_response({"status": "error", "database": str(exc)}, 503)
        return _json_response({"status": "ok"})


_BUCKET_JSON = (
    "json_build_object('id', b.id, 'name', b.name, 'owner', coalesce(b.owner::text, ''), "
    "'public', b.public, 'file_size_limit', b.file_size_limit, "
    "'allowed_mime_types', b.allowed_mime_types, 'created_at', b.created_at, "
    "'updated_at', b.updated_at)"
)


def _scalar(row: tuple[Any, ...] | None) -> Any:
    assert row is not None, "aggregate queries always return one row"
    return row[0]


def _select(columns: Query, source: Query | None) -> Query:
    if source is None:
        return sql.SQL("SELECT {}").format(columns)
    return sql.SQL("SELECT {} FROM {}").format(columns, source)


def _call_with_args(fn: Function, args: Any) -> tuple[Query, Query | None]:
    """The call expression and the FROM item that supplies its arguments (if any).

    Named arguments become `fn(a => _a.a)` over `json_to_record($1) AS _a(a <type>)`, so
    PostgreSQL converts the JSON to the declared types (arrays, timestamps, json...) the way
    PostgREST does. A lone unnamed json/jsonb parameter receives the whole body instead.
    """
    if fn.takes_single_json:
        return sql.SQL("{}(%s::{})").format(fn.ident, sql.SQL(fn.arg_types[0])), None
    names = sorted(args) if isinstance(args, dict) else []
    if not names:
        return sql.SQL("{}()").format(fn.ident), None
    arguments = sql.SQL(", ").join(
        sql.SQL("{} => _a.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in names
    )
    # Type names come from format_type() in the catalog, never from the request.
    definitions = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(fn.type_of(n))) for n in names
    )
    source = sql.SQL("json_to_record(%s::json) AS _a({})").format(definitions)
    return sql.SQL("{}({})").format(fn.ident, arguments), source


def _storage_pg_error(exc: psycopg.Error) -> HttpError:
    state = exc.sqlstate or ""
    if state == "23505":
        return _storage_error(409, "Duplicate", "Duplicate", "The resource already exists")
    if state == "42501":
        message = "new row violates row-level security policy"
        return _storage_error(403, "AccessDenied", "Unauthorized", message)
    if state == "23503":
        message = "The bucket you tried to delete is not empty"
        return _storage_error(409, "InvalidRequest", "InvalidRequest", message)
    if state.startswith("22") or state.startswith("23"):
        return _storage_error(400, "InvalidRequest", "Invalid Input", str(exc))
    _log.error("storage database error: %s", exc)
    return _storage_error(500, "DatabaseError", "internal", "Internal Server Error")


def _expires_in(body: Any) -> int:
    raw = body.get("expiresIn") if isinstance(body, dict) else None
    try:
        value = int(str(raw))  # the SDK sends a string; Fastify coerces it
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise _storage_error(400, "InvalidRequest", "Invalid Input", "expiresIn must be >= 1")
    return value


def _size_limit(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.isdigit():
        return int(raw)
    raise _storage_error(400, "InvalidRequest", "Invalid Input", "file_size_limit must be bytes")


def _search_sort_page(entries: list[dict[str, Any]], body: dict[str, Any]) -> list[dict[str, Any]]:
    search = str(body.get("search") or "").lower()
    if search:
        entries = [e for e in entries if e["name"].lower().startswith(search)]
    sort_by = body.get("sortBy") or {}
    column = sort_by.get("column", "name")
    if column not in ("name", "created_at", "updated_at", "last_accessed_at"):
        column = "name"
    entries.sort(key=lambda e: (e.get(column) is None, str(e.get(column) or "")))
    if str(sort_by.get("order", "asc")).lower() == "desc":
        entries.reverse()
    offset = int(body.get("offset") or 0)
    limit = int(body.get("limit") or 100)
    return entries[offset : offset + limit]


def _http_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def create_app(config: SupabaseConfig) -> flask.Flask:
    standin = SupabaseStandIn(config)
    app = flask.Flask("devstack.supabase")
    app.extensions["devstack.supabase"] = standin
    _register_routes(app, standin)
    app.before_request(standin.inject_fault)
    app.register_error_handler(HttpError, lambda exc: exc.response())
    app.register_error_handler(HTTPException, _http_exception)
    app.register_error_handler(Exception, _unexpected)
    return app


def _register_routes(app: flask.Flask, s: SupabaseStandIn) -> None:
    rules: list[tuple[str, Any, list[str]]] = [
        ("/rest/v1/rpc/<function>", s.rest_rpc, ["GET", "POST"]),
        ("/rest/v1/<table>", s.rest_table, ["GET", "POST", "PATCH", "DELETE"]),
        ("/storage/v1/object/public/<bucket_id>/<path:key>", s.public_download, ["GET"]),
        ("/storage/v1/object/authenticated/<bucket_id>/<path:key>", s.download, ["GET"]),
        ("/storage/v1/object/sign/<bucket_id>/<path:key>", s.sign, ["POST"]),
        ("/storage/v1/object/sign/<bucket_id>/<path:key>", s.signed_download, ["GET"]),
        ("/storage/v1/object/sign/<bucket_id>", s.sign_many, ["POST"]),
        ("/storage/v1/object/info/<bucket_id>/<path:key>", s.info, ["GET"]),
        ("/storage/v1/object/list/<bucket_id>", s.list_objects, ["POST"]),
        ("/storage/v1/object/<bucket_id>/<path:key>", s.upload, ["POST", "PUT"]),
        ("/storage/v1/object/<bucket_id>/<path:key>", s.download, ["GET"]),
        ("/storage/v1/object/<bucket_id>/<path:key>", s.remove_one, ["DELETE"]),
        ("/storage/v1/object/<bucket_id>", s.remove_many, ["DELETE"]),
        ("/storage/v1/bucket", s.list_buckets, ["GET"]),
        ("/storage/v1/bucket", s.create_bucket, ["POST"]),
        ("/storage/v1/bucket/<bucket_id>", s.get_bucket, ["GET"]),
        ("/storage/v1/bucket/<bucket_id>", s.update_bucket, ["PUT"]),
        ("/storage/v1/bucket/<bucket_id>", s.delete_bucket, ["DELETE"]),
        ("/storage/v1/bucket/<bucket_id>/empty", s.empty_bucket, ["POST"]),
        ("/__dev/faults", s.faults_view, ["GET", "POST", "DELETE"]),
        ("/__dev/health", s.health, ["GET"]),
    ]
    for index, (rule, view, methods) in enumerate(rules):
        app.add_url_rule(rule, f"{view.__name__}_{index}", view, methods=methods)


def _http_exception(exc: HTTPException) -> flask.Response:
    return _json_response({"message": exc.description or exc.name}, exc.code or 500)


def _unexpected(exc: Exception) -> flask.Response:
    _log.exception("unhandled error in the Supabase stand-in")
    return _json_response({"message": f"devstack internal error: {exc}"}, 500)


__all__ = [
    "DEV_PUBLISHABLE_KEY",
    "DEV_SECRET_KEY",
    "SupabaseConfig",
    "create_app",
]
