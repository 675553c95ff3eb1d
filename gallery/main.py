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

import re

import flask
import functions_framework
from console_pages import CONSOLE, console
from page_kit import not_found, secured
from person_pages import delete_picture, original_picture, pictures_page
from wall_page import WALL, wall

from shared import logs
from shared.edge import handler
from shared.gallery_links import token_hash
from shared.services import get_services

MAX_BODY_BYTES = 16 * 1024
_ROUTE = re.compile(
    r"^/p/(?P<token>[A-Za-z0-9_-]{43})(?:/(?P<action>original|delete)/(?P<id>[0-9a-f-]{36}))?/?$"
)


@functions_framework.http
@handler("gallery", MAX_BODY_BYTES)
def gallery(request: flask.Request) -> flask.Response:
    if request.path == CONSOLE or request.path.startswith(f"{CONSOLE}/"):
        return console(request, get_services())
    if request.path in (WALL, f"{WALL}/pictures.json"):
        return wall(request, get_services())
    route = _ROUTE.fullmatch(request.path)
    if route is None:
        return not_found()
    services = get_services()
    digest = token_hash(route["token"])
    owner = services.store.gallery_owner(digest) if digest else None
    if owner is None:
        logs.info("gallery link not found")
        return not_found()
    action, request_id = route["action"], route["id"]
    if action is None and request.method in ("GET", "HEAD"):
        return pictures_page(owner, route["token"], services)
    if action == "original" and request.method == "GET":
        return original_picture(owner, request_id, services)
    if action == "delete" and request.method == "POST":
        return delete_picture(request, route["token"], owner, request_id, services)
    return secured(flask.Response("method not allowed", status=405, mimetype="text/plain"))
