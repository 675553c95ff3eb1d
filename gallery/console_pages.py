"""The operator console at /admin: sign in with OPERATOR_KEY (shared/console_sessions.py),
the day at a glance (computed in SQL, `console_stats`), and the actions: pause and resume,
block and unblock a number, hide, delete or approve a picture. Every POST carries the
session's CSRF token."""

from __future__ import annotations

import re
import secrets

import flask
from page_kit import TEMPLATES, base, not_found, secured, see_other

from shared import console_view, logs
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
from shared.errors import BadRequest
from shared.intake import parse_address
from shared.services import Services
from shared.settings import WallMode

CONSOLE = "/admin"
_ACTION = re.compile(r"^/admin/(?P<action>[a-z-]+)(?:/(?P<id>[0-9a-f-]{36}))?$")


def console(request: flask.Request, services: Services) -> flask.Response:
    settings = services.settings
    operator_key = settings.secret("OPERATOR_KEY").reveal()
    lifetime = settings.console_session_hours * 3600
    if request.path == f"{CONSOLE}/sign-in":
        return _sign_in(request, operator_key, services)
    session = read_session(request.cookies.get(COOKIE), operator_key, lifetime)
    if session is None:
        if request.method == "GET" and request.path == CONSOLE:
            return secured(see_other(f"{base(services)}{CONSOLE}/sign-in"))
        return secured(flask.Response("unauthorized", status=401, mimetype="text/plain"))
    if request.path == CONSOLE and request.method in ("GET", "HEAD"):
        return _dashboard(csrf_token(operator_key, session), services)
    route = _ACTION.fullmatch(request.path)
    if route is None or request.method != "POST":
        return not_found()
    if not csrf_ok(request.form.get(CSRF_FIELD), operator_key, session):
        logs.warning("console action refused: wrong or missing CSRF token")
        return secured(flask.Response("forbidden", status=403, mimetype="text/plain"))
    return _act(route["action"], route["id"], request, services)


def _sign_in(request: flask.Request, operator_key: str, services: Services) -> flask.Response:
    if request.method == "POST":
        if key_matches(request.form.get(KEY_FIELD), operator_key):
            logs.info("operator signed in to the console")
            response = see_other(f"{base(services)}{CONSOLE}")
            response.set_cookie(
                COOKIE,
                new_session_cookie(operator_key),
                max_age=services.settings.console_session_hours * 3600,
                path=COOKIE_PATH,
                httponly=True,
                secure=cookie_is_secure(base(services)),
                samesite="Strict",
            )
            return secured(response)
        logs.warning("console sign-in refused: wrong operator key")
        return _sign_in_page(services, "That key is not right.", status=401)
    if request.method in ("GET", "HEAD"):
        return _sign_in_page(services, None, status=200)
    return not_found()


def _sign_in_page(services: Services, error: str | None, *, status: int) -> flask.Response:
    nonce = secrets.token_urlsafe(16)
    html = TEMPLATES.get_template("sign_in.html").render(
        brand=services.settings.brand_name,
        nonce=nonce,
        error=error,
        action=f"{base(services)}{CONSOLE}/sign-in",
    )
    return secured(flask.Response(html, status=status, mimetype="text/html"), nonce=nonce)


def _dashboard(csrf: str, services: Services) -> flask.Response:
    settings = services.settings
    stats = services.store.console_stats(settings.limits.budget_usd)
    nonce = secrets.token_urlsafe(16)
    recent = [{**row, "journey": console_view.journey(row)} for row in stats.get("recent", [])]
    html = TEMPLATES.get_template("console.html").render(
        brand=settings.brand_name,
        nonce=nonce,
        csrf=csrf,
        base=f"{base(services)}{CONSOLE}",
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
    return secured(flask.Response(html, status=200, mimetype="text/html"), nonce=nonce)


def _act(
    action: str, request_id: str | None, request: flask.Request, services: Services
) -> flask.Response:
    store = services.store
    if action == "sign-out":
        response = see_other(f"{base(services)}{CONSOLE}/sign-in")
        response.delete_cookie(COOKIE, path=COOKIE_PATH)
        return secured(response)
    if action in ("pause", "resume"):
        store.set_paused(action == "pause")
        logs.warning("the service was paused" if action == "pause" else "the service resumed")
    elif action in ("block", "unblock"):
        try:
            address = parse_address(request.form.get("address"), "address")
        except BadRequest as exc:
            return secured(flask.Response(exc.message, status=400, mimetype="text/plain"))
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
        return not_found()
    return secured(see_other(f"{base(services)}{CONSOLE}"))
