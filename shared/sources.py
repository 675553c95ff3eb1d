"""Where an edit's input picture comes from: a short-lived signed Storage URL the provider
fetches (see publishing.py for why a URL rather than the picture in the body)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .publishing import source_url_lifetime_s
from .records import RequestRecord

if TYPE_CHECKING:
    from .services import Services


def source_url_for(record: RequestRecord, services: Services) -> str | None:
    """For an edit, a signed URL of its input picture; None for a new picture."""
    if record.source_path is None:
        return None
    lifetime = source_url_lifetime_s(services.settings)
    return services.pictures.signed_url(record.source_path, lifetime)
