"""A person's own pages, at the link PICTURES texts them: their pictures, the original of one,
and deleting one for good. The token (shared/gallery_links.py) is the only credential."""

from __future__ import annotations

import secrets

import flask
from page_kit import (
    SIGNED_URL_S,
    TEMPLATES,
    date_and_time,
    not_found,
    origin,
    page_words,
    secured,
    see_other,
    signed_urls,
    storage_origin,
)

from shared import logs
from shared.gallery_links import gallery_link
from shared.person_language import reply_language
from shared.records import RequestRecord
from shared.services import Services
from shared.store import PictureStore

PICTURES_SHOWN = 100


def pictures_page(owner: tuple[str, str], token: str, services: Services) -> flask.Response:
    address, sender = owner
    page = gallery_link(services.settings.gallery_url or "", token)
    records = services.store.gallery_pictures(address, sender, PICTURES_SHOWN)
    # The page speaks the person's language: the one they chose, else the number's.
    language = reply_language(
        (), services.store.language_for(address, sender), services.settings.default_language
    )
    nonce = secrets.token_urlsafe(16)
    html = TEMPLATES.get_template("pictures.html").render(
        brand=services.settings.brand_name,
        nonce=nonce,
        pictures=_shown_all(records, page, services, language),
        **page_words(language, services.settings, empty="page_empty"),
    )
    response = flask.Response(html, status=200, mimetype="text/html")
    return secured(response, nonce=nonce, images=storage_origin(services))


def _shown_all(
    records: list[RequestRecord], page: str, services: Services, language: str
) -> list[dict[str, str]]:
    # gallery_pictures lists delivered pictures only, each with its file
    urls = signed_urls([str(record.image_path) for record in records], services)
    return [
        _shown(record, urls[str(record.image_path)], page, language)
        for record in records
        if str(record.image_path) in urls
    ]


def _shown(record: RequestRecord, preview: str, page: str, language: str) -> dict[str, str]:
    when = record.delivered_at or record.created_at
    return {
        "id": record.id,
        "prompt": record.prompt,
        "preview_url": preview,
        "original_path": f"{page}/original/{record.id}",
        "delete_path": f"{page}/delete/{record.id}",
        "when_iso": when.isoformat() if when else "",
        "when_text": date_and_time(when, language) if when else "",
    }


def original_picture(owner: tuple[str, str], request_id: str, services: Services) -> flask.Response:
    address, sender = owner
    mine = {r.id: r for r in services.store.gallery_pictures(address, sender, PICTURES_SHOWN)}
    record = mine.get(request_id)
    if record is None or record.image_path is None:
        return not_found()
    original = PictureStore.original_path_for(record.image_path)
    url = services.pictures.signed_url(original, SIGNED_URL_S)
    return secured(see_other(url))


def delete_picture(
    request: flask.Request,
    token: str,
    owner: tuple[str, str],
    request_id: str,
    services: Services,
) -> flask.Response:
    if not _same_origin(request, services):
        logs.warning("gallery delete refused: not posted from the gallery page")
        return secured(flask.Response("forbidden", status=403, mimetype="text/plain"))
    address, sender = owner
    paths = services.store.delete_picture(address, sender, request_id)
    if paths:
        services.pictures.remove(list(paths))
        logs.info("picture deleted by its person")
    page = gallery_link(services.settings.gallery_url or "", token)
    return secured(see_other(page))


def _same_origin(request: flask.Request, services: Services) -> bool:
    """A browser names the page a POST comes from in `Origin`: it must be our gallery. Without
    it (an old browser), the Referer must be (sent to our own pages only: see `_secured`);
    neither: refused."""
    configured = services.settings.gallery_url or ""
    ours = origin(configured)
    given = request.headers.get("Origin") or origin(request.headers.get("Referer") or "")
    return bool(ours) and given == ours
