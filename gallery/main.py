"""`gallery`: a person's private page of their pictures, at the link PICTURES texts them.

- `GET /p/<token>`: their delivered pictures, newest first, each with its prompt and date, a
  right-sized preview (the framed MMS picture) and the full-resolution original on demand;
- `GET /p/<token>/original/<id>`: a redirect to a short-lived signed URL of the original;
- `POST /p/<token>/delete/<id>`: deletes the picture and its prompt for good.

The token is the only credential (see shared/gallery_links.py): a wrong or replaced one is a
404, as is any other path. Pictures are served through signed Storage URLs, never a listing of
the bucket. Every page escapes what people wrote (Jinja autoescape), forbids framing and scripts
(CSP), leaks no token in a Referer, and a POST must come from this page (its Origin).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import flask
import functions_framework
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared import logs
from shared.edge import handler
from shared.gallery_links import gallery_link, token_hash
from shared.records import RequestRecord
from shared.services import Services, get_services
from shared.store import PictureStore

MAX_BODY_BYTES = 16 * 1024
PICTURES_SHOWN = 100
# Long enough to look at a page of pictures, short enough that a copied link soon dies.
SIGNED_URL_S = 15 * 60
_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
)
_ROUTE = re.compile(
    r"^/p/(?P<token>[A-Za-z0-9_-]{43})(?:/(?P<action>original|delete)/(?P<id>[0-9a-f-]{36}))?/?$"
)


@functions_framework.http
@handler("gallery", MAX_BODY_BYTES)
def gallery(request: flask.Request) -> flask.Response:
    route = _ROUTE.fullmatch(request.path)
    if route is None:
        return _not_found()
    services = get_services()
    digest = token_hash(route["token"])
    owner = services.store.gallery_owner(digest) if digest else None
    if owner is None:
        logs.info("gallery link not found")
        return _not_found()
    action, request_id = route["action"], route["id"]
    if action is None and request.method in ("GET", "HEAD"):
        return _page(owner, route["token"], services)
    if action == "original" and request.method == "GET":
        return _original(owner, request_id, services)
    if action == "delete" and request.method == "POST":
        return _delete(request, route["token"], owner, request_id, services)
    return _secured(flask.Response("method not allowed", status=405, mimetype="text/plain"))


def _page(owner: tuple[str, str], token: str, services: Services) -> flask.Response:
    address, sender = owner
    page = gallery_link(services.settings.gallery_url or "", token)
    records = services.store.gallery_pictures(address, sender, PICTURES_SHOWN)
    nonce = secrets.token_urlsafe(16)
    html = _TEMPLATES.get_template("pictures.html").render(
        brand=services.settings.brand_name,
        nonce=nonce,
        pictures=[_shown(record, page, services) for record in records],
    )
    response = flask.Response(html, status=200, mimetype="text/html")
    return _secured(response, nonce=nonce, images=_storage_origin(services))


def _shown(record: RequestRecord, page: str, services: Services) -> dict[str, str]:
    assert record.image_path is not None  # gallery_pictures lists delivered pictures only
    when = record.delivered_at or record.created_at
    return {
        "id": record.id,
        "prompt": record.prompt,
        "preview_url": services.pictures.signed_url(record.image_path, SIGNED_URL_S),
        "original_path": f"{page}/original/{record.id}",
        "delete_path": f"{page}/delete/{record.id}",
        "when_iso": when.isoformat() if when else "",
        "when_text": f"{when:%d %b %Y, %H:%M} UTC" if when else "",
    }


def _original(owner: tuple[str, str], request_id: str, services: Services) -> flask.Response:
    address, sender = owner
    mine = {r.id: r for r in services.store.gallery_pictures(address, sender, PICTURES_SHOWN)}
    record = mine.get(request_id)
    if record is None or record.image_path is None:
        return _not_found()
    original = PictureStore.original_path_for(record.image_path)
    url = services.pictures.signed_url(original, SIGNED_URL_S)
    return _secured(_see_other(url))


def _delete(
    request: flask.Request,
    token: str,
    owner: tuple[str, str],
    request_id: str,
    services: Services,
) -> flask.Response:
    if not _same_origin(request, services):
        logs.warning("gallery delete refused: not posted from the gallery page")
        return _secured(flask.Response("forbidden", status=403, mimetype="text/plain"))
    address, sender = owner
    paths = services.store.delete_picture(address, sender, request_id)
    if paths:
        services.pictures.remove(list(paths))
        logs.info("picture deleted by its person")
    page = gallery_link(services.settings.gallery_url or "", token)
    return _secured(_see_other(page))


def _same_origin(request: flask.Request, services: Services) -> bool:
    """A browser names the page a POST comes from in `Origin`: it must be our gallery. Without
    it (an old browser), the Referer must be (sent to our own pages only: see `_secured`);
    neither: refused."""
    configured = services.settings.gallery_url or ""
    ours = _origin(configured)
    given = request.headers.get("Origin") or _origin(request.headers.get("Referer") or "")
    return bool(ours) and given == ours


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def _storage_origin(services: Services) -> str:
    return _origin(services.settings.supabase_url)


def _see_other(url: str) -> flask.Response:
    return flask.Response(status=303, headers={"Location": url})


def _not_found() -> flask.Response:
    return _secured(flask.Response("not found", status=404, mimetype="text/plain"))


def _secured(
    response: flask.Response, *, nonce: str | None = None, images: str | None = None
) -> flask.Response:
    """Headers every gallery answer carries: no framing, no scripts, no token in a Referer to
    anyone else (`same-origin`; `no-referrer` would make a browser post `Origin: null`), not
    cached, not sniffed."""
    policy = [
        "default-src 'none'",
        f"img-src {images}" if images else "img-src 'none'",
        f"style-src 'nonce-{nonce}'" if nonce else "style-src 'none'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    response.headers["Content-Security-Policy"] = "; ".join(policy)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response
