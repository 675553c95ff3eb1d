"""Secrets: from the environment first, else from Google Secret Manager, fetched on first use.

On Cloud Functions, `deploy.sh` mounts each secret as an environment variable with
`--set-secrets`, so the Secret Manager client (and its ~0.3 s import) is only reached when a
secret is missing from the environment. A `Secret` never shows its value in `repr` or `str`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError


class SecretSource:
    """Resolves secret names to values; one per instance, thread-safe, caching each value."""

    def __init__(
        self,
        environ: Mapping[str, str],
        *,
        project: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self._environ = environ
        self._project = project
        self._endpoint = endpoint
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()
        self._client: Any = None

    def get(self, name: str) -> str:
        value = self._environ.get(name)
        if value:
            return value
        with self._lock:
            if name not in self._cache:
                self._cache[name] = self._fetch(name)
            return self._cache[name]

    def _fetch(self, name: str) -> str:
        if not self._project:
            raise ConfigError(
                f"{name} is not set, and GOOGLE_CLOUD_PROJECT is not set to read it from "
                "Secret Manager"
            )
        from google.api_core import exceptions as google_errors

        path = f"projects/{self._project}/secrets/{name}/versions/latest"
        try:
            response = self._secret_manager().access_secret_version(name=path)
        except google_errors.NotFound as exc:
            raise ConfigError(f"{name} is not set and {path} does not exist") from exc
        except google_errors.GoogleAPICallError as exc:
            raise ConfigError(f"{name} could not be read from Secret Manager: {exc.code}") from exc
        value = bytes(response.payload.data).decode("utf-8").strip()
        if not value:
            raise ConfigError(f"{name} is empty in Secret Manager")
        return value

    def _secret_manager(self) -> Any:
        if self._client is None:
            from google.cloud import secretmanager

            if self._endpoint:
                # Local stand-in only: plain HTTP, no Google credentials.
                from google.auth.credentials import AnonymousCredentials

                self._client = secretmanager.SecretManagerServiceClient(
                    transport="rest",
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options={"api_endpoint": self._endpoint},
                )
            else:
                self._client = secretmanager.SecretManagerServiceClient()
        return self._client


class Secret:
    """A named secret resolved lazily through a `SecretSource`."""

    __slots__ = ("_source", "name")

    def __init__(self, name: str, source: SecretSource) -> None:
        self.name = name
        self._source = source

    def reveal(self) -> str:
        return self._source.get(self.name)

    def __repr__(self) -> str:
        return f"Secret({self.name!r})"

    __str__ = __repr__
