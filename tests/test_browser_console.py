"""The operator console and the live wall in a real headless browser, with screenshots of each
page at phone and desktop widths in .devstack/screenshots/."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import requests

from devstack.stack_client import StackClient, drawn, text_reply
from tests.browser import DESKTOP, PHONE, Browser

pytestmark = pytest.mark.stack


def sign_in(browser: Browser, stack: StackClient) -> None:
    browser.open(f"{stack.env['GALLERY_URL']}/admin")
    browser.wait_for("#operator_key")  # redirected to the sign-in page
    browser.fill("#operator_key", stack.env["OPERATOR_KEY"])
    browser.submit("form")
    browser.wait_for("#recent")


def test_the_console_signs_in_shows_requests_and_pauses_the_service(
    stack: StackClient, caller: str, browser: Browser
) -> None:
    browser.open(f"{stack.env['GALLERY_URL']}/admin")
    browser.wait_for("#operator_key")
    for size in (PHONE, DESKTOP):
        with browser.at_width(size):
            browser.screenshot("console-sign-in")
    browser.fill("#operator_key", "not the key")
    browser.submit("form")
    browser.wait_for_text("That key is not right")
    row = drawn(stack, caller, "a console cormorant")
    sign_in(browser, stack)
    browser.wait_for(f"#request-{row['id']}")
    assert "a console cormorant" in browser.text and caller not in browser.text
    for size in (PHONE, DESKTOP):
        with browser.at_width(size):
            browser.screenshot("console", full_page=True)
    browser.click("#pause")
    browser.wait_for_text("Paused")
    assert "closed for now" in text_reply(stack, caller, "DRAW another cormorant")
    browser.click("#resume")
    browser.wait_for_text("Running")
    assert "on its way" in text_reply(stack, caller, "DRAW another cormorant")


def test_the_wall_shows_a_new_picture_without_a_reload(
    stack: StackClient,
    caller: str,
    browser: Browser,
    function_setting: Callable[[str, str], None],
) -> None:
    function_setting("WALL", "on")
    browser.open(f"{stack.env['GALLERY_URL']}/wall")
    browser.run_js("window.notReloaded = true;")
    row = drawn(stack, caller, "a wall-bound walrus")
    browser.wait_for(f"figure[data-id='{row['id']}']", timeout_s=15)
    assert browser.run_js("return window.notReloaded === true;")
    assert "a wall-bound walrus" in browser.text and caller not in browser.text
    for size in (PHONE, DESKTOP):
        with browser.at_width(size):
            browser.screenshot("wall")


def test_in_approve_mode_the_wall_waits_for_the_operator(
    stack: StackClient,
    caller: str,
    browser: Browser,
    function_setting: Callable[[str, str], None],
) -> None:
    function_setting("WALL", "approve")
    browser.open(f"{stack.env['GALLERY_URL']}/wall")
    row = drawn(stack, caller, "an unapproved umbrella")
    time.sleep(4)  # more than one refresh of the wall
    assert "an unapproved umbrella" not in browser.text
    operator = requests.Session()
    operator.post(
        f"{stack.env['GALLERY_URL']}/admin/sign-in",
        data={"operator_key": stack.env["OPERATOR_KEY"]},
        timeout=10,
    )
    page = operator.get(f"{stack.env['GALLERY_URL']}/admin", timeout=10).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert csrf
    operator.post(
        f"{stack.env['GALLERY_URL']}/admin/approve/{row['id']}",
        data={"csrf": csrf.group(1)},
        timeout=10,
    )
    browser.wait_for(f"figure[data-id='{row['id']}']", timeout_s=15)
