"""A real PostgreSQL for the Supabase stand-in: start it, give it the platform schema, migrate it.

`start_postgres` prefers `DATABASE_URL` (CI or a developer's own server) and otherwise runs the
PostgreSQL 16 bundled with the `pgserver` package, listening on a unix socket inside the data
directory. `bootstrap_platform` adds what a hosted Supabase project has before its first migration
(API roles, default grants, the `storage` schema). `apply_migrations` applies `supabase/migrations`
the way the Supabase CLI records them, so the same files work locally and on the platform.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

PLATFORM_SQL = Path(__file__).with_name("supabase_platform.sql")

_MIGRATIONS_TABLE_SQL = b"""
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  name text,
  applied_at timestamptz not null default now()
);
"""

# Any constant works; it only has to be the same for every process migrating this database.
_MIGRATION_LOCK_KEY = 7_302_551_901


@dataclass
class PostgresHandle:
    """A running server. `uri` is a libpq URI; `stop()` is idempotent, a no-op for DATABASE_URL."""

    uri: str
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def start_postgres(data_dir: Path) -> PostgresHandle:
    """Return a usable server: `DATABASE_URL` if set, else pgserver running in `data_dir`."""
    external = os.environ.get("DATABASE_URL")
    if external:
        return PostgresHandle(uri=external)
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir)
    with warnings.catch_warnings():
        # pgserver (via platformdirs) warns about XDG_RUNTIME_DIR on every import/start.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        server = get_server(data_dir, cleanup_mode="stop")
    return PostgresHandle(uri=server.get_uri(), _stop=lambda: _stop_pgserver(server))


def _stop_pgserver(server: Any) -> None:
    server.cleanup()
    # pgserver registered the same cleanup with atexit; leaving it would make a later server in
    # the same directory be treated as "already cleaned up" at exit and never stopped.
    atexit.unregister(server._cleanup)


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop pids of dead processes from pgserver's handle list.

    pgserver stops the server only when the last *listed* process lets go. A devstack that was
    killed leaves its pid behind, so every later run would leak a postgres process.
    """
    handles = data_dir / ".handle_pids.json"
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads(handles.read_text())
        alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def bootstrap_platform(uri: str) -> None:
    """Create roles, grants and the storage schema a hosted project already has (idempotent)."""
    with psycopg.connect(uri) as conn:
        conn.execute(PLATFORM_SQL.read_bytes())


def apply_migrations(uri: str, migrations_dir: Path) -> list[str]:
    """Apply pending `*.sql` files in filename order, one transaction each; return their filenames.

    Versions (the filename part before the first `_`) are recorded in
    `supabase_migrations.schema_migrations` like the Supabase CLI does; applied ones are skipped.
    """
    files = _migration_files(migrations_dir)
    applied_now: list[str] = []
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(_MIGRATIONS_TABLE_SQL)
        # Session-level lock: two devstacks starting together must not both apply a file.
        conn.execute("select pg_advisory_lock(%s)", [_MIGRATION_LOCK_KEY])
        try:
            done = _applied_versions(conn)
            for version, path in files:
                if version not in done:
                    _apply_one(conn, version, path)
                    applied_now.append(path.name)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", [_MIGRATION_LOCK_KEY])
    return applied_now


def _migration_files(migrations_dir: Path) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    seen: dict[str, str] = {}
    for path in sorted(migrations_dir.glob("*.sql"), key=lambda p: p.name):
        version = path.name.split("_", 1)[0].removesuffix(".sql")
        if version in seen:
            raise ValueError(f"migrations {seen[version]} and {path.name} share version {version}")
        seen[version] = path.name
        files.append((version, path))
    return files


def _applied_versions(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute("select version from supabase_migrations.schema_migrations").fetchall()
    return {str(row[0]) for row in rows}


def _apply_one(conn: psycopg.Connection[Any], version: str, path: Path) -> None:
    name = path.stem.split("_", 1)[1] if "_" in path.stem else path.stem
    try:
        with conn.transaction():
            # No parameters: psycopg sends the file as-is, so it may hold many statements and `%`.
            conn.execute(path.read_bytes())
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name) values (%s, %s)",
                [version, name],
            )
    except psycopg.Error as exc:
        raise RuntimeError(f"migration {path.name} failed: {exc}") from exc
