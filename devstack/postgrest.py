"""PostgREST stand-in: the `/rest/v1` subset supabase-py sends, run as SQL on real PostgreSQL.

Every request runs in one transaction under `SET LOCAL ROLE anon|service_role`, so grants and row
level security are enforced by PostgreSQL itself, exactly as on the platform: a migration that
forgets `enable row level security` really leaks to the publishable key here too.

Scope (see tests/devstack/test_supabase.py for what is exercised through the SDK):
- `/rest/v1/<table>`: GET/HEAD/POST/PATCH/DELETE with `eq neq gt gte lt lte is in like ilike`
  (and `not.`), `select` (columns, `*`, `alias:col`), `order`, `limit`, `offset`, `columns`,
  `on_conflict`, and the `Prefer` options `return`, `resolution`, `count`, `missing`.
- `/rest/v1/rpc/<fn>`: POST (and GET) with named arguments.
Anything else answers PGRST100 "devstack does not support ..." rather than guessing.

Values never reach SQL text: identifiers are checked against the catalog and quoted with
`psycopg.sql.Identifier`; values are bound parameters that PostgreSQL converts itself.

The request plumbing at the top (`HttpError`, `Database`, `become`) is shared with storage.py:
the platform's Storage server is a PostgreSQL client that switches role per request in the same
way, so its stand-in borrows this rather than repeating it.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import flask
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from werkzeug.datastructures import MultiDict

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
OBJECT_MEDIA_TYPE = "application/vnd.pgrst.object+json"
EXPOSED_SCHEMAS = ("public",)

Role = Literal["anon", "service_role"]
Conn = psycopg.Connection[tuple[Any, ...]]
Query = sql.SQL | sql.Composed  # what Connection.execute accepts besides plain strings
# (rule relative to where the API is mounted, view, methods)
Route = tuple[str, Callable[..., flask.Response], list[str]]


# --------------------------------------------------------------------------------------------
# Request plumbing, shared with storage.py: one error type, one pool, one role switch.


class HttpError(Exception):
    """Raised anywhere in a request, by either API; already knows its HTTP rendering."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message"))
        self.status = status
        self.body = body

    def response(self) -> flask.Response:
        return json_response(self.body, self.status)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> flask.Response:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return flask.Response(text, status=status, headers=headers, content_type=JSON_CONTENT_TYPE)


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
# PostgREST errors: its JSON shape, and its SQLSTATE -> HTTP status table.


def _pgrst_error(
    status: int, code: str, message: str, details: str | None = None, hint: str | None = None
) -> HttpError:
    return HttpError(status, {"code": code, "details": details, "hint": hint, "message": message})


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
        SELECT array(SELECT a.attname::text FROM pg_attribute a
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
    return Table(schema, name, tuple(row[0]), tuple(row[1]))


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
# The API: one view per route; `authorize` maps the request's API key to a role (or raises).


class PostgrestApi:
    """The `/rest/v1` views over a shared connection pool."""

    def __init__(self, db: Database, authorize: Callable[[], Role]) -> None:
        self.db = db
        self.authorize = authorize

    def routes(self) -> list[Route]:
        return [
            ("/rpc/<function>", self.handle_rpc, ["GET", "POST"]),
            ("/<table>", self.handle_table, ["GET", "POST", "PATCH", "DELETE"]),
        ]

    @contextlib.contextmanager
    def transaction(self, role: Role, read_only: bool = False) -> Iterator[Conn]:
        try:
            with self.db.transaction(read_only=read_only) as conn:
                yield conn
        except psycopg.Error as exc:
            raise _pg_error(exc, role) from exc

    def schema(self) -> str:
        method = flask.request.method
        header = "Accept-Profile" if method in ("GET", "HEAD") else "Content-Profile"
        schema = flask.request.headers.get(header) or EXPOSED_SCHEMAS[0]
        if schema not in EXPOSED_SCHEMAS:
            hint = f"Only the following schemas are exposed: {', '.join(EXPOSED_SCHEMAS)}"
            raise _pgrst_error(406, "PGRST106", f"Invalid schema: {schema}", hint=hint)
        return schema

    def handle_table(self, table: str) -> flask.Response:
        role, schema = self.authorize(), self.schema()
        method = flask.request.method
        body = None if method in ("GET", "HEAD", "DELETE") else self.json_body()
        with self.transaction(role, read_only=method in ("GET", "HEAD")) as conn:
            meta = load_table(conn, schema, table)
            if method in ("GET", "HEAD"):
                return self.select(conn, role, meta)
            if method == "POST":
                return self.insert(conn, role, meta, body)
            return self.update_or_delete(conn, role, meta, body)

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

    def select(self, conn: Conn, role: Role, table: Table) -> flask.Response:
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
        return json_response(body, 206 if partial else 200, headers)

    def object_response(self, body: str, status: int, headers: dict[str, str]) -> flask.Response:
        content_type = f"{OBJECT_MEDIA_TYPE}; charset=utf-8"
        return flask.Response(body, status=status, headers=headers, content_type=content_type)

    def insert(self, conn: Conn, role: Role, table: Table, body: Any) -> flask.Response:
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
        return json_response(result.body, status, headers)

    def update_or_delete(self, conn: Conn, role: Role, table: Table, body: Any) -> flask.Response:
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

    def handle_rpc(self, function: str) -> flask.Response:
        role, schema = self.authorize(), self.schema()
        is_get = flask.request.method in ("GET", "HEAD")
        if is_get:
            query = flask.request.args.items()
            raw_args: Any = {k: v for k, v in query if k not in _RESERVED_PARAMS}
        else:
            raw_args = self.json_body()
        given = set(raw_args) if isinstance(raw_args, dict) else None
        with self.transaction(role, read_only=is_get) as conn:
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
            return json_response("null" if row is None or row[0] is None else row[0])
        alias = sql.SQL("_c(_v)" if fn.kind == "scalar" else "_c")
        called = sql.SQL("{} AS {}").format(call, alias)
        if arg_source is not None:
            called = sql.SQL("{} CROSS JOIN LATERAL {}").format(arg_source, called)
        if not fn.returns_set:  # a single composite: one JSON object
            row = conn.execute(_select(sql.SQL("to_json(_c)::text"), called), params).fetchone()
            return json_response("null" if row is None or row[0] is None else row[0])
        value = sql.SQL("_c._v" if fn.kind == "scalar" else "_c")
        aggregate = sql.SQL("coalesce(json_agg({}), '[]')::text, count(*)").format(value)
        row = conn.execute(_select(aggregate, called), params).fetchone()
        assert row is not None
        if self.wants_object():
            return self.object_response(single_or_406(row[0], row[1]), 200, {})
        return json_response(row[0])


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


__all__ = [
    "Conn",
    "Database",
    "HttpError",
    "PostgrestApi",
    "Role",
    "Route",
    "become",
    "json_response",
]
