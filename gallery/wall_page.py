"""The live wall at /wall (WALL=on|approve): new pictures as they arrive, refreshing itself
with one nonce'd script that writes prompts as text. It shows no phone number, ever:
`wall_pictures` returns none."""

from __future__ import annotations

import json
import secrets

import flask
from page_kit import TEMPLATES, base, not_found, page_words, secured, signed_urls, storage_origin

from shared.services import Services
from shared.settings import WallMode

WALL = "/wall"
WALL_PICTURES = 60
WALL_REFRESH_MS = 3000


def wall(request: flask.Request, services: Services) -> flask.Response:
    settings = services.settings
    if settings.wall is WallMode.OFF or request.method not in ("GET", "HEAD"):
        return not_found()
    approved_only = settings.wall is WallMode.APPROVE
    rows = services.store.wall_pictures(None, approved_only, WALL_PICTURES)
    urls = signed_urls([str(row["image_path"]) for row in rows], services)
    pictures = [
        {"id": str(row["id"]), "prompt": str(row["prompt"]), "url": urls[str(row["image_path"])]}
        for row in rows
        if str(row["image_path"]) in urls
    ]
    if request.path.endswith(".json"):
        response = flask.Response(json.dumps(pictures), status=200, mimetype="application/json")
        return secured(response)
    nonce = secrets.token_urlsafe(16)
    html = TEMPLATES.get_template("wall.html").render(
        brand=settings.brand_name,
        nonce=nonce,
        pictures=pictures,
        feed=f"{base(services)}{WALL}/pictures.json",
        refresh_ms=WALL_REFRESH_MS,
        # The wall is nobody's in particular: it speaks the number's language.
        **page_words(settings.default_language, settings, empty="wall_empty"),
    )
    response = flask.Response(html, status=200, mimetype="text/html")
    return secured(response, nonce=nonce, images=storage_origin(services), scripts=True)
