"""The clients one function instance uses, built once from the settings on first use."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import requests

from .messaging import Messenger
from .publishing import QStashPublisher
from .settings import Settings, load_settings
from .store import PictureStore, RequestStore


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: RequestStore
    pictures: PictureStore
    publisher: QStashPublisher
    messenger: Messenger
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
