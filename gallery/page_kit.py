"""What every gallery page shares: the templates, the security headers, redirects and 404s,
signed picture URLs, and a page's words in a language."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import flask
from jinja2 import Environment, FileSystemLoader, select_autoescape

from shared import logs, replies
from shared.catalogue import phrasebook
from shared.services import Services
from shared.settings import Settings

# Long enough to look at a page of pictures, short enough that a copied link soon dies.
SIGNED_URL_S = 15 * 60
TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def signed_urls(paths: list[str], services: Services) -> dict[str, str]:
    """Signed URLs of the pictures Storage has, in one request. One whose file is gone is left
    out (a lost file takes that picture off a page, not the page out of service); Storage
    failing is the page's error (503)."""
    urls = services.pictures.signed_urls(paths, SIGNED_URL_S)
    if lost := len(set(paths) - urls.keys()):
        logs.warning("pictures whose files are gone were left out", pictures=lost)
    return urls


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def storage_origin(services: Services) -> str:
    return origin(services.settings.supabase_url)


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


def base(services: Services) -> str:
    return (services.settings.gallery_url or "").rstrip("/")


def see_other(url: str) -> flask.Response:
    return flask.Response(status=303, headers={"Location": url})


def not_found() -> flask.Response:
    return secured(flask.Response("not found", status=404, mimetype="text/plain"))


def secured(
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
