"""The operator console (`/admin`) and the live wall (`/wall`), over HTTP: nothing without
signing in, a session cookie with the right flags, CSRF on every action, and the actions do
what they say on every channel."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import requests

from devstack.stack_client import StackClient, drawn, latest_request, text_reply

pytestmark = pytest.mark.stack


def console(stack: StackClient) -> str:
    return f"{stack.env['GALLERY_URL']}/admin"


def signed_in(stack: StackClient) -> requests.Session:
    session = requests.Session()
    reply = session.post(
        f"{console(stack)}/sign-in",
        data={"operator_key": stack.env["OPERATOR_KEY"]},
        allow_redirects=False,
        timeout=10,
    )
    assert reply.status_code == 303, reply.text
    return session


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert found, page[:500]
    return found.group(1)


def act(
    session: requests.Session, stack: StackClient, action: str, **form: str
) -> requests.Response:
    page = session.get(console(stack), timeout=10).text
    return session.post(
        f"{console(stack)}/{action}",
        data={"csrf": csrf_of(page), **form},
        allow_redirects=False,
        timeout=10,
    )


@pytest.fixture
def operator(stack: StackClient) -> Any:
    session = signed_in(stack)
    yield session
    act(session, stack, "resume")


def test_nothing_without_signing_in(stack: StackClient) -> None:
    page = requests.get(console(stack), allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["Location"].endswith("/admin/sign-in")
    assert requests.post(f"{console(stack)}/pause", timeout=10).status_code == 401
    forged = requests.get(
        console(stack), cookies={"pl_session": "1.x.y"}, allow_redirects=False, timeout=10
    )
    assert forged.status_code == 303
    wrong = requests.post(f"{console(stack)}/sign-in", data={"operator_key": "nope"}, timeout=10)
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert "Set-Cookie" not in wrong.headers


def test_sign_in_sets_a_strict_http_only_cookie(stack: StackClient) -> None:
    reply = requests.post(
        f"{console(stack)}/sign-in",
        data={"operator_key": stack.env["OPERATOR_KEY"]},
        allow_redirects=False,
        timeout=10,
    )
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
    assert "Secure" not in cookie  # served from this machine; Secure everywhere else


def test_the_console_shows_a_delivered_request_with_a_masked_number(
    stack: StackClient, caller: str, operator: requests.Session
) -> None:
    row = drawn(stack, caller, "a console lighthouse")
    page = operator.get(console(stack), timeout=10).text
    assert "a console lighthouse" in page and str(row["id"]) in page
    assert caller not in page and caller[:4] in page
    assert "Requests per hour" in page and "<rect" in page


def test_every_action_needs_the_csrf_token(stack: StackClient, operator: requests.Session) -> None:
    reply = operator.post(f"{console(stack)}/pause", data={"csrf": "0" * 64}, timeout=10)
    assert reply.status_code == 403
    assert "Running" in operator.get(console(stack), timeout=10).text


def test_pause_closes_every_channel_and_resume_opens_them(
    stack: StackClient, caller: str, operator: requests.Session
) -> None:
    assert act(operator, stack, "pause").status_code == 303
    assert "Paused" in operator.get(console(stack), timeout=10).text
    assert "closed for now" in text_reply(stack, caller, "DRAW a fox")
    assert latest_request(stack, caller) is None
    operator_json = stack.submit("a fox", to=caller)
    assert operator_json.status_code == 503
    act(operator, stack, "resume")
    assert "on its way" in text_reply(stack, caller, "DRAW a fox")


def test_a_blocked_number_gets_nothing_until_unblocked(
    stack: StackClient, caller: str, operator: requests.Session
) -> None:
    act(operator, stack, "block", address=caller)
    assert "isn't available to your number" in text_reply(stack, caller, "DRAW a fox")
    assert latest_request(stack, caller) is None
    act(operator, stack, "unblock", address=caller)
    assert "on its way" in text_reply(stack, caller, "DRAW a fox")


def test_the_wall_is_off_unless_switched_on(stack: StackClient) -> None:
    assert requests.get(f"{stack.env['GALLERY_URL']}/wall", timeout=10).status_code == 404


def test_the_wall_shows_pictures_without_numbers_and_hidden_ones_go(
    stack: StackClient,
    caller: str,
    operator: requests.Session,
    function_setting: Callable[[str, str], None],
) -> None:
    function_setting("WALL", "on")
    row = drawn(stack, caller, "a wall of wonders")
    feed = requests.get(f"{stack.env['GALLERY_URL']}/wall/pictures.json", timeout=10).json()
    assert any(p["id"] == str(row["id"]) and p["prompt"] == "a wall of wonders" for p in feed)
    page = requests.get(f"{stack.env['GALLERY_URL']}/wall", timeout=10)
    # No number, whole or masked ("+155******35"); the feed carries nothing else to hold one
    # (its last digits alone could turn up by chance inside a random picture path).
    assert caller not in page.text and caller not in str(feed)
    assert not re.search(r"\+\d+\*+\d+", page.text + str(feed))
    assert all(set(picture) == {"id", "prompt", "url"} for picture in feed)
    assert "script-src 'nonce-" in page.headers["Content-Security-Policy"]
    act(operator, stack, f"hide/{row['id']}")
    feed = requests.get(f"{stack.env['GALLERY_URL']}/wall/pictures.json", timeout=10).json()
    assert all(p["id"] != str(row["id"]) for p in feed)


def test_in_approve_mode_a_picture_waits_for_the_operator(
    stack: StackClient,
    caller: str,
    operator: requests.Session,
    function_setting: Callable[[str, str], None],
) -> None:
    function_setting("WALL", "approve")
    row = drawn(stack, caller, "an approved aardvark")
    feed_url = f"{stack.env['GALLERY_URL']}/wall/pictures.json"
    assert all(p["id"] != str(row["id"]) for p in requests.get(feed_url, timeout=10).json())
    assert "Approve for the wall" in operator.get(console(stack), timeout=10).text
    act(operator, stack, f"approve/{row['id']}")
    assert any(p["id"] == str(row["id"]) for p in requests.get(feed_url, timeout=10).json())


def test_console_mistakes_get_clear_answers(
    stack: StackClient, operator: requests.Session, function_setting: Callable[[str, str], None]
) -> None:
    assert act(operator, stack, "block", address="not a number").status_code == 400
    assert act(operator, stack, "launch-rockets").status_code == 404
    assert operator.get(f"{console(stack)}/pause", timeout=10).status_code == 404
    assert requests.put(f"{console(stack)}/sign-in", timeout=10).status_code == 404
    function_setting("WALL", "on")
    assert requests.post(f"{stack.env['GALLERY_URL']}/wall", timeout=10).status_code == 404
