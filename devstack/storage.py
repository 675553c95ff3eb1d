"""Storage stand-in: the `/storage/v1` subset supabase-py sends, on real PostgreSQL and local files.

Object rows live in `storage.objects` (created by supabase_platform.sql), bytes in
`blob_dir/<object id>`. Like the platform's Storage server, each request is one transaction that
switches to the caller's role before touching objects, so row level security on `storage.objects`
decides what each API key may read or write, as in production. Bucket limits are looked up as the
connecting user: they apply whatever the caller may see.

Scope: object upload/update/download/public/authenticated/sign/info/list/remove, and buckets
(list/get/create/update/empty/delete). Errors take Storage's shape: the real status in the body's
`statusCode`, HTTP 400 for any 4xx (as the platform answers).

The request plumbing (`HttpError`, `Database`, `become`) comes from postgrest.py, which shares it.
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
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import flask
import psycopg
from psycopg import sql

from .postgrest import Conn, Database, HttpError, Role, Route, become, json_response

DEFAULT_MAX_FILE_SIZE = 50 * 1024 * 1024  # the platform's global limit on the Free plan
_log = logging.getLogger("devstack.supabase")  # one logger for the whole stand-in


# --------------------------------------------------------------------------------------------
# Storage errors: its JSON shape, and what database errors become.


def _storage_error(status_code: int, code: str, error: str, message: str) -> HttpError:
    # Storage reports the real status in the body and answers HTTP 400, except for 5xx.
    http_status = status_code if status_code >= 500 else 400
    body = {"statusCode": str(status_code), "code": code, "error": error, "message": message}
    return HttpError(http_status, body)


def _not_found_object() -> HttpError:
    return _storage_error(404, "NoSuchKey", "not_found", "Object not found")


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


# --------------------------------------------------------------------------------------------
# Helpers: metadata, keys, buckets, objects, listings.


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
    public: bool
    file_size_limit: int | None
    allowed_mime_types: list[str] | None


def load_bucket(conn: Conn, bucket_id: str) -> Bucket:
    """Looked up as the connecting user: limits apply whatever the caller may see."""
    row = conn.execute(
        "SELECT public, file_size_limit, allowed_mime_types FROM storage.buckets WHERE id = %s",
        [bucket_id],
    ).fetchone()
    if row is None:
        raise _storage_error(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
    return Bucket(row[0], row[1], row[2])


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
# The API: one view per route; `authorize` maps the request's API key to a role (or raises).


class StorageApi:
    """The `/storage/v1` views over a shared connection pool and a folder of object bytes."""

    def __init__(
        self,
        db: Database,
        authorize: Callable[[], Role],
        *,
        blob_dir: Path,
        max_file_size: int,
        signing_secret: str,
    ) -> None:
        self.db = db
        self.authorize = authorize
        self.blob_dir = blob_dir
        self.max_file_size = max_file_size  # global upload cap, on top of bucket limits
        self.signing_secret = signing_secret  # signs signed-URL tokens (HS256)

    def routes(self) -> list[Route]:
        return [
            ("/object/public/<bucket_id>/<path:key>", self.public_download, ["GET"]),
            ("/object/authenticated/<bucket_id>/<path:key>", self.download, ["GET"]),
            ("/object/sign/<bucket_id>/<path:key>", self.sign, ["POST"]),
            ("/object/sign/<bucket_id>/<path:key>", self.signed_download, ["GET"]),
            ("/object/sign/<bucket_id>", self.sign_many, ["POST"]),
            ("/object/info/<bucket_id>/<path:key>", self.info, ["GET"]),
            ("/object/list/<bucket_id>", self.list_objects, ["POST"]),
            ("/object/<bucket_id>/<path:key>", self.upload, ["POST", "PUT"]),
            ("/object/<bucket_id>/<path:key>", self.download, ["GET"]),
            ("/object/<bucket_id>/<path:key>", self.remove_one, ["DELETE"]),
            ("/object/<bucket_id>", self.remove_many, ["DELETE"]),
            ("/bucket", self.list_buckets, ["GET"]),
            ("/bucket", self.create_bucket, ["POST"]),
            ("/bucket/<bucket_id>", self.get_bucket, ["GET"]),
            ("/bucket/<bucket_id>", self.update_bucket, ["PUT"]),
            ("/bucket/<bucket_id>", self.delete_bucket, ["DELETE"]),
            ("/bucket/<bucket_id>/empty", self.empty_bucket, ["POST"]),
        ]

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Conn]:
        try:
            with self.db.transaction() as conn:
                yield conn
        except psycopg.Error as exc:
            raise _storage_pg_error(exc) from exc

    # ---- objects -------------------------------------------------------------------------

    def upload(self, bucket_id: str, key: str) -> flask.Response:
        role = self.authorize()
        check_key(key)
        data, content_type, cache_control, user_metadata = self.read_upload()
        upsert = flask.request.method == "POST" and flask.request.headers.get("x-upsert") == "true"
        with self.transaction() as conn:
            self.check_upload_limits(load_bucket(conn, bucket_id), data, content_type)
            become(conn, role)
            metadata = object_metadata(data, content_type, cache_control)
            object_id = self.save_object_row(
                conn, bucket_id, key, metadata, user_metadata, upsert=upsert
            )
            self.write_blob(object_id, data)
        return json_response({"Id": object_id, "Key": f"{bucket_id}/{key}"})

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
        limit = self.max_file_size
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
        role = self.authorize()
        with self.transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)  # RLS decides what the caller may read
            obj = find_object(conn, bucket_id, key)
        return self.serve_object(obj)

    def public_download(self, bucket_id: str, key: str) -> flask.Response:
        with self.transaction() as conn:
            bucket = load_bucket(conn, bucket_id)
            if not bucket.public:
                raise _storage_error(400, "InvalidRequest", "Bad Request", "Bucket is not public")
            obj = find_object(conn, bucket_id, key)
        return self.serve_object(obj)

    def info(self, bucket_id: str, key: str) -> flask.Response:
        role = self.authorize()
        with self.transaction() as conn:
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
        return json_response(row[0])

    def sign(self, bucket_id: str, key: str) -> flask.Response:
        role = self.authorize()
        expires_in = _expires_in(flask.request.get_json(silent=True))
        with self.transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)  # signing needs read access to the object
            find_object(conn, bucket_id, key)
        return json_response({"signedURL": self.signed_path(bucket_id, key, expires_in)})

    def sign_many(self, bucket_id: str) -> flask.Response:
        role = self.authorize()
        body = flask.request.get_json(silent=True) or {}
        expires_in, paths = _expires_in(body), body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _storage_error(400, "InvalidRequest", "Bad Request", "paths must be a list")
        with self.transaction() as conn:
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
        return json_response(
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
        token = sign_hs256(claims, self.signing_secret)
        return f"/object/sign/{quote(bucket_id)}/{quote(key)}?token={token}"

    def signed_download(self, bucket_id: str, key: str) -> flask.Response:
        token = flask.request.args.get("token")
        if not token:
            raise _storage_error(
                400, "InvalidJWT", "Error", "querystring must have property 'token'"
            )
        try:
            claims = verify_hs256(token, self.signing_secret)
        except TokenError as exc:
            raise _storage_error(400, "InvalidJWT", "InvalidJWT", str(exc)) from exc
        if claims.get("url") != f"{bucket_id}/{key}":
            message = "The url do not match the signature"
            raise _storage_error(400, "InvalidSignature", "InvalidSignature", message)
        with self.transaction() as conn:
            load_bucket(conn, bucket_id)
            obj = find_object(conn, bucket_id, key)  # the token is the authorisation
        return self.serve_object(obj)

    def remove_many(self, bucket_id: str) -> flask.Response:
        role = self.authorize()
        prefixes = (flask.request.get_json(silent=True) or {}).get("prefixes")
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise _storage_error(400, "InvalidRequest", "Bad Request", "prefixes must be a list")
        return json_response(self.delete_objects(role, bucket_id, prefixes))

    def remove_one(self, bucket_id: str, key: str) -> flask.Response:
        if not self.delete_objects(self.authorize(), bucket_id, [key]):
            raise _not_found_object()
        return json_response({"message": "Successfully deleted"})

    def delete_objects(self, role: Role, bucket_id: str, names: list[str]) -> list[dict[str, Any]]:
        with self.transaction() as conn:
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
        role = self.authorize()
        body = flask.request.get_json(silent=True) or {}
        prefix = str(body.get("prefix") or "")
        with self.transaction() as conn:
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
        return json_response(_search_sort_page(entries, body))

    # ---- buckets -------------------------------------------------------------------------

    def list_buckets(self) -> flask.Response:
        role = self.authorize()
        with self.transaction() as conn:
            become(conn, role)
            row = conn.execute(
                "SELECT coalesce(json_agg(" + _BUCKET_JSON + " ORDER BY b.id), '[]')::text "
                "FROM storage.buckets b"
            ).fetchone()
        assert row is not None
        return json_response(row[0])

    def get_bucket(self, bucket_id: str) -> flask.Response:
        role = self.authorize()
        with self.transaction() as conn:
            become(conn, role)
            row = conn.execute(
                "SELECT " + _BUCKET_JSON + "::text FROM storage.buckets b WHERE b.id = %s",
                [bucket_id],
            ).fetchone()
        if row is None:
            raise _storage_error(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
        return json_response(row[0])

    def create_bucket(self) -> flask.Response:
        role = self.authorize()
        body = flask.request.get_json(silent=True) or {}
        bucket_id = body.get("id") or body.get("name")
        if not isinstance(bucket_id, str) or not re.fullmatch(r"[\w.!*'() &$@=;:+,?-]+", bucket_id):
            raise _storage_error(400, "InvalidBucketName", "Invalid Input", "Invalid bucket name")
        with self.transaction() as conn:
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
        return json_response({"name": bucket_id})

    def update_bucket(self, bucket_id: str) -> flask.Response:
        role = self.authorize()
        body = flask.request.get_json(silent=True) or {}
        # Only the options that were sent change, as on the platform.
        fields = {k: body[k] for k in ("public", "allowed_mime_types") if k in body}
        if "file_size_limit" in body:
            fields["file_size_limit"] = _size_limit(body["file_size_limit"])
        assignments = [sql.SQL("{} = %s").format(sql.Identifier(k)) for k in fields]
        statement = sql.SQL("UPDATE storage.buckets SET {} WHERE id = %s").format(
            sql.SQL(", ").join([*assignments, sql.SQL("updated_at = now()")])
        )
        with self.transaction() as conn:
            become(conn, role)
            cursor = conn.execute(statement, [*fields.values(), bucket_id])
        if cursor.rowcount == 0:
            raise _storage_error(404, "NoSuchBucket", "Bucket not found", "Bucket not found")
        return json_response({"message": "Successfully updated"})

    def empty_bucket(self, bucket_id: str) -> flask.Response:
        role = self.authorize()
        with self.transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)
            rows = conn.execute(
                "DELETE FROM storage.objects WHERE bucket_id = %s RETURNING id::text", [bucket_id]
            ).fetchall()
        for row in rows:
            self.blob_path(row[0]).unlink(missing_ok=True)
        return json_response({"message": "Successfully emptied"})

    def delete_bucket(self, bucket_id: str) -> flask.Response:
        role = self.authorize()
        with self.transaction() as conn:
            load_bucket(conn, bucket_id)
            become(conn, role)
            conn.execute("DELETE FROM storage.buckets WHERE id = %s", [bucket_id])
        return json_response({"message": "Successfully deleted"})


_BUCKET_JSON = (
    "json_build_object('id', b.id, 'name', b.name, 'owner', coalesce(b.owner::text, ''), "
    "'public', b.public, 'file_size_limit', b.file_size_limit, "
    "'allowed_mime_types', b.allowed_mime_types, 'created_at', b.created_at, "
    "'updated_at', b.updated_at)"
)


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


__all__ = ["DEFAULT_MAX_FILE_SIZE", "StorageApi"]
