"""The clients one function instance uses, built once from the settings on first use.

`Services` names each client by what the pipeline needs of it (the protocols below), so the
fast unit tests hand in in-memory fakes (tests/memory_services.py) while the function and the
stack tests use the real SDK clients: Supabase (store.py), QStash (publishing.py) and Twilio
(messaging.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import requests

from .deadline import Deadline
from .messaging import Messenger, SentMessage
from .publishing import GenerationJob, QStashPublisher
from .records import FailureReason, OptOutSource, RequestRecord
from .secrets import Secret
from .settings import Settings, load_settings
from .store import Claim, Creation, NewRequest, PictureStore, RequestStore

if TYPE_CHECKING:
    from .self_test import SelfTestResult


class RequestStorage(Protocol):
    """The `requests` and `opt_outs` tables and their SQL functions (store.RequestStore)."""

    def create(self, new: NewRequest) -> Creation: ...
    def get(self, request_id: str) -> RequestRecord | None: ...
    def record_published(self, request_id: str, message_id: str) -> None: ...
    def fail_unpublished(self, request_id: str, detail: str) -> bool: ...
    def switch_model(self, request_id: str, old: str, new: str) -> bool: ...
    def record_attempt(self, request_id: str, message_id: str | None, error: str) -> int | None: ...
    def claim(self, request_id: str, owner: str, lease_s: int) -> Claim: ...
    def release(self, request_id: str, token: str, error: str | None) -> None: ...
    def update_claimed(self, request_id: str, token: str, fields: dict[str, Any]) -> bool: ...
    def mark_sending(
        self, request_id: str, token: str, *, image_path: str | None, extra: dict[str, Any]
    ) -> bool: ...
    def mark_delivered(
        self, request_id: str, token: str, message_sid: str, timings: dict[str, int]
    ) -> bool: ...
    def mark_failed(
        self,
        request_id: str,
        token: str,
        reason: FailureReason,
        detail: str,
        *,
        notified: bool,
        message_sid: str | None,
    ) -> bool: ...
    def record_message_status(
        self, request_id: str, message_sid: str, status: str, error_code: int | None
    ) -> bool: ...
    def set_opt_out(
        self, address: str, sender: str, *, opted_out: bool, source: OptOutSource
    ) -> None: ...
    def is_opted_out(self, address: str, sender: str) -> bool: ...
    def fail_waiting(self, address: str, sender: str, detail: str) -> list[str | None]: ...
    def unfinished_before(self, cutoff: datetime, limit: int) -> list[RequestRecord]: ...
    def finished_before(
        self, cutoff: datetime, limit: int
    ) -> list[tuple[str, tuple[str, ...]]]: ...
    def delete(self, request_ids: list[str]) -> int: ...
    def record_self_test(self, result: SelfTestResult) -> None: ...

    def recent_for(self, address: str, sender: str, limit: int) -> list[RequestRecord]: ...

    def pending_photo(self, address: str, sender: str) -> tuple[str, datetime] | None: ...

    def keep_photo(self, address: str, sender: str, path: str) -> str | None: ...

    def language_for(self, address: str, sender: str) -> str | None: ...

    def remember_language(self, address: str, sender: str, language: str) -> None: ...

    def forget_photo(self, address: str, sender: str) -> None: ...

    def photos_before(self, cutoff: datetime, limit: int) -> list[tuple[str, str, str]]: ...

    def set_gallery_link(
        self, address: str, sender: str, generation: int, token_sha256: str
    ) -> None: ...

    def gallery_generation(self, address: str, sender: str) -> int | None: ...

    def gallery_owner(self, token_sha256: str) -> tuple[str, str] | None: ...

    def gallery_pictures(self, address: str, sender: str, limit: int) -> list[RequestRecord]: ...

    def delete_picture(self, address: str, sender: str, request_id: str) -> tuple[str, ...]: ...

    def mark_link_sent(self, request_id: str, message_sid: str) -> RequestRecord | None: ...

    def is_paused(self) -> bool: ...

    def set_paused(self, paused: bool) -> None: ...

    def block_number(self, address: str, note: str | None) -> None: ...

    def unblock_number(self, address: str) -> None: ...

    def blocked_numbers(self) -> list[str]: ...

    def hide_picture(self, request_id: str) -> bool: ...

    def approve_picture(self, request_id: str) -> bool: ...

    def console_stats(self, budget_usd: float | None) -> dict[str, Any]: ...

    def wall_pictures(
        self, since: datetime | None, approved_only: bool, limit: int
    ) -> list[dict[str, Any]]: ...


class PictureStorage(Protocol):
    """The picture bucket (store.PictureStore)."""

    def upload(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str: ...
    def public_url(self, path: str) -> str: ...

    def signed_url(self, path: str, expires_s: int) -> str: ...

    def signed_urls(self, paths: list[str], expires_s: int) -> dict[str, str]: ...
    def remove(self, paths: list[str]) -> None: ...


class JobPublisher(Protocol):
    """QStash (publishing.QStashPublisher)."""

    def publish(
        self, job: GenerationJob, provider_key: Secret, deadline: Deadline | None = None
    ) -> str: ...
    def cancel(self, message_id: str) -> bool: ...


class MessageSender(Protocol):
    """Twilio's Messages API (messaging.Messenger)."""

    def send(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        media_url: str | None = None,
        status_callback: str | None = None,
    ) -> SentMessage: ...
    def find_sent(
        self, *, to: str, from_: str, bodies: Collection[str], created_at: datetime | None
    ) -> str | None: ...


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: RequestStorage
    pictures: PictureStorage
    publisher: JobPublisher
    messenger: MessageSender
    http: requests.Session  # for small JSON calls (moderation)


def build_services(settings: Settings) -> Services:
    store = RequestStore.connect(
        settings.supabase_url,
        settings.secret("SUPABASE_SECRET_KEY").reveal(),
        timeout_s=settings.store_timeout_s,
    )
    session = requests.Session()
    return Services(
        settings=settings,
        store=store,
        pictures=PictureStore(store.client, settings.bucket),
        publisher=QStashPublisher(settings.qstash_url, settings.secret("QSTASH_TOKEN"), session),
        http=session,
        messenger=Messenger(
            settings.twilio_account_sid,
            settings.secret("TWILIO_AUTH_TOKEN"),
            settings.twilio_api_base_url,
            settings.twilio_messaging_service_sid,
        ),
    )


_services: Services | None = None
_lock = threading.Lock()


def get_services() -> Services:
    """This instance's services, built from `os.environ` on the first call."""
    global _services
    with _lock:
        if _services is None:
            _services = build_services(load_settings(os.environ))
        return _services


def reset_services() -> None:
    """Forget the cached services (tests change the environment between cases)."""
    global _services
    with _lock:
        _services = None
