"""Stand-in for Google Secret Manager's REST API (only `versions/*:access`).

The real `google-cloud-secret-manager` client talks to it unchanged when built with
`transport="rest"`, `AnonymousCredentials()` and `client_options={"api_endpoint": url}`.
Answers carry the payload as standard base64 plus its CRC32C (decimal string), as Google's do;
errors use Google's JSON envelope so the client raises `NotFound`, `PermissionDenied`, etc.

Dev-only endpoints: `POST /__dev/secrets` adds a version (so `latest` moves) and
`GET /__dev/access-log` shows which secret names were read, never their values.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import flask

try:  # Google's C implementation, when present; the table below is the fallback.
    import google_crc32c as _google_crc32c
except ImportError:  # pragma: no cover - depends on the environment
    _google_crc32c = None


@dataclass
class SecretManagerConfig:
    project: str = "devstack-project"
    secrets: dict[str, str] = field(default_factory=dict)  # name -> value (version 1)


# ---- CRC32C (Castagnoli), reflected polynomial 0x82F63B78 ------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C of `data`, as Secret Manager reports it in `payload.dataCrc32c`."""
    if _google_crc32c is not None:
        return int(_google_crc32c.value(data))
    crc = 0xFFFFFFFF
    for byte in data:  # payloads are at most 64 KiB, so a byte loop is fast enough
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---- errors -----------------------------------------------------------------------------------


class GoogleError(Exception):
    """An error in Google's JSON envelope: {"error": {code, message, status}}."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def response(self) -> flask.Response:
        body = {"error": {"code": self.code, "message": self.message, "status": self.status}}
        resp = flask.jsonify(body)
        resp.status_code = self.code
        return resp


# Secret IDs: letters, digits, '-' and '_', up to 255 characters.
_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")


# ---- store ------------------------------------------------------------------------------------


@dataclass
class _Store:
    config: SecretManagerConfig
    lock: threading.Lock = field(default_factory=threading.Lock)
    versions: dict[str, list[bytes]] = field(default_factory=dict)  # name -> [v1, v2, ...]
    access_log: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, value: bytes) -> int:
        with self.lock:
            self.versions.setdefault(name, []).append(value)
            return len(self.versions[name])

    def get(self, name: str, version: str) -> tuple[int, bytes] | None:
        """(version number, value) for `latest` or a number, or None if there is none."""
        with self.lock:
            values = self.versions.get(name, [])
            number = len(values) if version == "latest" else int(version)
            if not 1 <= number <= len(values):
                return None
            return number, values[number - 1]

    def log(self, resource: str, resolved: str | None, status: int) -> None:
        with self.lock:
            entry = {"time": time.time(), "name": resource, "resolved": resolved, "status": status}
            self.access_log.append(entry)
            del self.access_log[:-1000]  # keep the newest; a dev stack may run for days


def _prefix(project: str, location: str | None) -> str:
    return f"projects/{project}" + (f"/locations/{location}" if location else "")


def _access(
    store: _Store, project: str, location: str | None, secret: str, version: str
) -> dict[str, Any]:
    """The AccessSecretVersionResponse JSON, or a GoogleError."""
    prefix = _prefix(project, location)
    resource = f"{prefix}/secrets/{secret}/versions/{version}"
    if project != store.config.project:
        # Google answers 403, not 404, for projects the caller cannot see: no existence leak.
        raise GoogleError(
            403,
            "PERMISSION_DENIED",
            f"Permission 'secretmanager.versions.access' denied for resource '{resource}' "
            "(or it may not exist).",
        )
    if not _SECRET_ID.fullmatch(secret) or not (version == "latest" or version.isdigit()):
        raise GoogleError(400, "INVALID_ARGUMENT", f"Invalid resource name [{resource}].")
    found = store.get(secret, version)
    if found is None:
        if version == "latest" or store.get(secret, "latest") is None:
            message = f"Secret [{prefix}/secrets/{secret}] not found or has no versions."
        else:
            message = f"Secret Version [{resource}] not found."
        raise GoogleError(404, "NOT_FOUND", message)
    number, value = found
    return {
        "name": f"{prefix}/secrets/{secret}/versions/{number}",
        "payload": {
            "data": base64.b64encode(value).decode("ascii"),
            # int64 fields travel as decimal strings in Google's JSON mapping.
            "dataCrc32c": str(crc32c(value)),
        },
    }


def _access_response(
    store: _Store, project: str, location: str | None, secret: str, version: str
) -> flask.Response:
    resource = f"{_prefix(project, location)}/secrets/{secret}/versions/{version}"
    try:
        body = _access(store, project, location, secret, version)
    except GoogleError as err:
        store.log(resource, None, err.code)
        return err.response()
    store.log(resource, body["name"], 200)
    return flask.jsonify(body)


def _register_dev_routes(app: flask.Flask, store: _Store) -> None:
    @app.post("/__dev/secrets")
    def add_secret() -> tuple[flask.Response, int]:
        body = flask.request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return flask.jsonify({"error": "body must be a JSON object"}), 400
        name, value = body.get("name"), body.get("value")
        if not isinstance(name, str) or not _SECRET_ID.fullmatch(name):
            return flask.jsonify({"error": "name must match [A-Za-z0-9_-]{1,255}"}), 400
        if not isinstance(value, str):
            return flask.jsonify({"error": "value must be a string"}), 400
        number = store.add(name, value.encode())
        project = store.config.project
        return flask.jsonify(
            {"name": f"projects/{project}/secrets/{name}/versions/{number}", "version": number}
        ), 201

    @app.get("/__dev/access-log")
    def access_log() -> flask.Response:
        with store.lock:
            return flask.jsonify(list(store.access_log))


def create_app(config: SecretManagerConfig) -> flask.Flask:
    """A Flask app serving `GET /v1/projects/*/[locations/*/]secrets/*/versions/*:access`."""
    store = _Store(config)
    for name, value in config.secrets.items():
        store.add(name, value.encode())
    app = flask.Flask(__name__)

    # The client sends `?$alt=json;enum-encoding=int`; the answer has no enums, so it is ignored.
    @app.get("/v1/projects/<project>/secrets/<secret>/versions/<version>:access")
    def access(project: str, secret: str, version: str) -> flask.Response:
        return _access_response(store, project, None, secret, version)

    @app.get(
        "/v1/projects/<project>/locations/<location>/secrets/<secret>/versions/<version>:access"
    )
    def access_regional(project: str, location: str, secret: str, version: str) -> flask.Response:
        # Regional and global secrets share one store here; only the reported name differs.
        return _access_response(store, project, location, secret, version)

    @app.errorhandler(404)
    @app.errorhandler(405)
    def unknown_route(exc: Exception) -> flask.Response:
        code = getattr(exc, "code", 404)
        status = "NOT_FOUND" if code == 404 else "UNIMPLEMENTED"
        path = flask.request.path
        return GoogleError(code, status, f"No handler for {flask.request.method} {path}").response()

    _register_dev_routes(app, store)
    return app
