"""Handing out a person's gallery link (see gallery_links.py for the token): by PICTURES and
NEWLINK, and when their picture's MMS never reached their phone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import logs
from .gallery_links import gallery_link, gallery_token, token_hash

if TYPE_CHECKING:
    from .services import Services


def gallery_link_for(
    address: str, ours: str, services: Services, *, new_link: bool = False
) -> str | None:
    """The person's link (the one they have, or a first one); with `new_link`, a new one,
    and the old one stops working. None when this deployment has no gallery."""
    settings = services.settings
    if not settings.gallery_url:
        return None
    generation = services.store.gallery_generation(address, ours)
    if generation is None or new_link:
        generation = 0 if generation is None else generation + 1
    secret = settings.secret("SAFETY_IDENTIFIER_SALT").reveal()
    token = gallery_token(secret, address, ours, generation)
    digest = token_hash(token)
    assert digest is not None  # our own tokens always have the shape
    services.store.set_gallery_link(address, ours, generation, digest)
    logs.info("gallery link handed out", new_link=new_link, generation=generation)
    return gallery_link(settings.gallery_url, token)
