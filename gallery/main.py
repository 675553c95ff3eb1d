"""`gallery`: a person's private page of their pictures, the operator console, and the wall.

The person's pages, at the link PICTURES texts them:

- `GET /p/<token>`: their delivered pictures, newest first, each with its prompt and date, a
  right-sized preview (the framed MMS picture) and the full-resolution original on demand;
- `GET /p/<token>/original/<id>`: a redirect to a short-lived signed URL of the original;
- `POST /p/<token>/delete/<id>`: deletes the picture and its prompt for good.

The token is the only credential (see shared/gallery_links.py): a wrong or replaced one is a
404, as is any other path.

The operator console at `/admin` (sign in with OPERATOR_KEY; shared/console_sessions.py): the
day at a glance, computed in SQL (`console_stats`), and the actions: pause and resume the
service, block and unblock a number, hide, delete or (WALL=approve) approve a picture. Every
POST carries the session's CSRF token. The wall at `/wall` (WALL=on|approve) shows new
pictures as they arrive, refreshing itself; it shows no phone number, ever.

Pictures are served through signed Storage URLs, never a listing of the bucket. Every page
escapes what people wrote (Jinja autoescape), forbids framing, runs no script but the wall's
own (CSP with a nonce), leaks no token in a Referer, and a person's POST must come from their
page (its Origin).
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import flask
import functions_framework
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared import console_view, logs, replies
from shared.catalogue import phrasebook
from shared.console_sessions import (
    COOKIE,
    COOKIE_PATH,
    CSRF_FIELD,
    KEY_FIELD,
    cookie_is_secure,
    csrf_ok,
    csrf_token,
    key_matches,
    new_session_cookie,
    read_session,
)
from shared.edge import handler
from shared.errors import BadRequest, StoreError
from shared.gallery_links import gallery_link, token_hash
from shared.intake import parse_address
from shared.person_language import reply_language
from shared.records import RequestRecord
from shared.services import Services, get_services
from shared.settings import Settings, WallMode
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
    if request.path == CONSOLE or request.path.startswith(f"{CONSOLE}/"):
        return _console(request, get_services())
    if request.path in (WALL, f"{WALL}/pictures.json"):
        return _wall(request, get_services())
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
    # The page speaks the person's language: the one they chose, else the number's.
    language = reply_language(
        (), services.store.language_for(address, sender), services.settings.default_language
    )
    nonce = secrets.token_urlsafe(16)
    html = _TEMPLATES.get_template("pictures.html").render(
        brand=services.settings.brand_name,
        nonce=nonce,
        pictures=_shown_all(records, page, services, language),
        **page_words(language, services.settings, empty="page_empty"),
    )
    response = flask.Response(html, status=200, mimetype="text/html")
    return _secured(response, nonce=nonce, images=_storage_origin(services))


def _shown_all(
    records: list[RequestRecord], page: str, services: Services, language: str
) -> list[dict[str, str]]:
    # gallery_pictures lists delivered pictures only, each with its file
    urls = _signed_urls([str(record.image_path) for record in records], services)
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


def _signed_urls(paths: list[str], services: Services) -> dict[str, str]:
    """Signed URLs of the pictures Storage will sign. One whose file is gone is left out (a
    lost file takes that picture off a page, not the page out of service); when none can be
    signed, Storage itself is failing, and that is the page's error (503)."""
    urls: dict[str, str] = {}
    failure: StoreError | None = None
    for path in paths:
        try:
            urls[path] = services.pictures.signed_url(path, SIGNED_URL_S)
        except StoreError as exc:
            logs.warning("a picture could not be signed; it is left out", error=exc.message)
            failure = exc
    if failure is not None and not urls:
        raise failure
    return urls


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


# --- the operator console --------------------------------------------------------------------

CONSOLE = "/admin"
WALL = "/wall"
_ACTION = re.compile(r"^/admin/(?P<action>[a-z-]+)(?:/(?P<id>[0-9a-f-]{36}))?$")


def _console(request: flask.Request, services: Services) -> flask.Response:
    settings = services.settings
    operator_key = settings.secret("OPERATOR_KEY").reveal()
    lifetime = settings.console_session_hours * 3600
    if request.path == f"{CONSOLE}/sign-in":
        return _sign_in(request, operator_key, services)
    session = read_session(request.cookies.get(COOKIE), operator_key, lifetime)
    if session is None:
        if request.method == "GET" and request.path == CONSOLE:
            return _secured(_see_other(f"{_base(services)}{CONSOLE}/sign-in"))
        return _secured(flask.Response("unauthorized", status=401, mimetype="text/plain"))
    if request.path == CONSOLE and request.method in ("GET", "HEAD"):
        return _dashboard(csrf_token(operator_key, session), services)
    route = _ACTION.fullmatch(request.path)
    if route is None or request.method != "POST":
        return _not_found()
    if not csrf_ok(request.form.get(CSRF_FIELD), operator_key, session):
        logs.warning("console action refused: wrong or missing CSRF token")
        return _secured(flask.Response("forbidden", status=403, mimetype="text/plain"))
    return _act(route["action"], route["id"], request, services)


def _sign_in(request: flask.Request, operator_key: str, services: Services) -> flask.Response:
    if request.method == "POST":
        if key_matches(request.form.get(KEY_FIELD), operator_key):
            logs.info("operator signed in to the console")
            response = _see_other(f"{_base(services)}{CONSOLE}")
            response.set_cookie(
                COOKIE,
                new_session_cookie(operator_key),
                max_age=services.settings.console_session_hours * 3600,
                path=COOKIE_PATH,
                httponly=True,
                secure=cookie_is_secure(_base(services)),
                samesite="Strict",
            )
            return _secured(response)
        logs.warning("console sign-in refused: wrong operator key")
        return _sign_in_page(services, "That key is not right.", status=401)
    if request.method in ("GET", "HEAD"):
        return _sign_in_page(services, None, status=200)
    return _not_found()


def _sign_in_page(services: Services, error: str | None, *, status: int) -> flask.Response:
    nonce = secrets.token_urlsafe(16)
    html = _TEMPLATES.get_template("sign_in.html").render(
        brand=services.settings.brand_name,
        nonce=nonce,
        error=error,
        action=f"{_base(services)}{CONSOLE}/sign-in",
    )
    return _secured(flask.Response(html, status=status, mimetype="text/html"), nonce=nonce)


def _dashboard(csrf: str, services: Services) -> flask.Response:
    settings = services.settings
    stats = services.store.console_stats(settings.limits.budget_usd)
    nonce = secrets.token_urlsafe(16)
    recent = [{**row, "journey": console_view.journey(row)} for row in stats.get("recent", [])]
    html = _TEMPLATES.get_template("console.html").render(
        brand=settings.brand_name,
        nonce=nonce,
        csrf=csrf,
        base=f"{_base(services)}{CONSOLE}",
        chart=console_view.chart(stats.get("requests_per_hour", [])),
        stats={
            "paused": bool(stats.get("paused")),
            "spend_today_usd": float(stats.get("spend_today_usd") or 0),
            "budget_usd": stats.get("budget_usd"),
            "p50": console_view.duration(stats.get("to_mms_seconds_p50")),
            "p95": console_view.duration(stats.get("to_mms_seconds_p95")),
            "outcomes": console_view.counts(stats.get("outcomes")),
            "failure_reasons": console_view.counts(stats.get("failure_reasons")),
            "recent": recent,
        },
        model=console_view.model_status(settings.image.model),
        blocked=services.store.blocked_numbers(),
        wall_approve=settings.wall is WallMode.APPROVE,
    )
    return _secured(flask.Response(html, status=200, mimetype="text/html"), nonce=nonce)


def _act(
    action: str, request_id: str | None, request: flask.Request, services: Services
) -> flask.Response:
    store = services.store
    if action == "sign-out":
        response = _see_other(f"{_base(services)}{CONSOLE}/sign-in")
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return _secured(response)
    if action in ("pause", "resume"):
        store.set_paused(action == "pause")
        logs.warning("the service was paused" if action == "pause" else "the service resumed")
    elif action in ("block", "unblock"):
        try:
            address = parse_address(request.form.get("address"), "address")
        except BadRequest as exc:
            return _secured(flask.Response(exc.message, status=400, mimetype="text/plain"))
        if action == "block":
            store.block_number(address, None)
        else:
            store.unblock_number(address)
        logs.info(f"number {action}ed by the operator", number=address)
    elif action == "hide" and request_id:
        store.hide_picture(request_id)
    elif action == "approve" and request_id:
        store.approve_picture(request_id)
    elif action == "delete" and request_id:
        record = store.get(request_id)
        if record is not None:
            paths = store.delete_picture(record.recipient, record.sender, request_id)
            services.pictures.remove(list(paths))
    else:
        return _not_found()
    return _secured(_see_other(f"{_base(services)}{CONSOLE}"))


# --- the wall --------------------------------------------------------------------------------

WALL_PICTURES = 60
WALL_REFRESH_MS = 3000


def _wall(request: flask.Request, services: Services) -> flask.Response:
    settings = services.settings
    if settings.wall is WallMode.OFF or request.method not in ("GET", "HEAD"):
        return _not_found()
    approved_only = settings.wall is WallMode.APPROVE
    rows = services.store.wall_pictures(None, approved_only, WALL_PICTURES)
    urls = _signed_urls([str(row["image_path"]) for row in rows], services)
    pictures = [
        {"id": str(row["id"]), "prompt": str(row["prompt"]), "url": urls[str(row["image_path"])]}
        for row in rows
        if str(row["image_path"]) in urls
    ]
    if request.path.endswith(".json"):
        response = flask.Response(json.dumps(pictures), status=200, mimetype="application/json")
        return _secured(response)
    nonce = secrets.token_urlsafe(16)
    html = _TEMPLATES.get_template("wall.html").render(
        brand=settings.brand_name,
        nonce=nonce,
        pictures=pictures,
        feed=f"{_base(services)}{WALL}/pictures.json",
        refresh_ms=WALL_REFRESH_MS,
        # The wall is nobody's in particular: it speaks the number's language.
        **page_words(settings.default_language, settings, empty="wall_empty"),
    )
    response = flask.Response(html, status=200, mimetype="text/html")
    return _secured(response, nonce=nonce, images=_storage_origin(services), scripts=True)


def page_words(language: str, settings: Settings, *, empty: str) -> dict[str, object]:
    """What a page says, in `language`: `lang` for <html lang>, and `words` by message key."""
    book = phrasebook(language)
    keys = ("page_title", "page_intro", "page_download", "page_delete", "wall_tagline")
    words = {key: book.text(key) for key in keys}
    keyword = replies.keyword_in(language, settings)
    if empty == "page_empty" and not keyword:
        empty = "page_empty_open"
    words["empty"] = book.text(empty, keyword=keyword)
    return {"lang": language, "words": words}


def date_and_time(when: datetime, language: str) -> str:
    """A picture's date and time (to the minute, UTC) as the language writes them: Babel's
    CLDR medium date, short time, and the language's way of joining the two."""
    from babel.dates import format_date, format_time, get_datetime_format

    date = format_date(when, "medium", locale=language)
    time = format_time(when, "short", tzinfo=UTC, locale=language)
    joined = str(get_datetime_format("medium", locale=language))
    return f"{joined.replace('{1}', date).replace('{0}', time)} UTC"


def _base(services: Services) -> str:
    return (services.settings.gallery_url or "").rstrip("/")


def _see_other(url: str) -> flask.Response:
    return flask.Response(status=303, headers={"Location": url})


def _not_found() -> flask.Response:
    return _secured(flask.Response("not found", status=404, mimetype="text/plain"))


def _secured(
    response: flask.Response,
    *,
    nonce: str | None = None,
    images: str | None = None,
    scripts: bool = False,
) -> flask.Response:
    """Headers every gallery answer carries: no framing, no scripts, no token in a Referer to
    anyone else (`same-origin`; `no-referrer` would make a browser post `Origin: null`), not
    cached, not sniffed."""
    policy = [
        "default-src 'none'",
        f"img-src {images}" if images else "img-src 'none'",
        f"style-src 'nonce-{nonce}'" if nonce else "style-src 'none'",
        f"script-src 'nonce-{nonce}'" if scripts and nonce else "script-src 'none'",
        "connect-src 'self'" if scripts else "connect-src 'none'",
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
