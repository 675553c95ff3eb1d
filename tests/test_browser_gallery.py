"""The gallery in a real headless browser: the link from a texted request shows the picture
and its prompt at phone and desktop widths, delete works, and a wrong or replaced link is not
found. Screenshots of each page land in .devstack/screenshots/."""

from __future__ import annotations

import re

import pytest

from devstack.stack_client import StackClient, drawn, latest_request, text_reply
from shared.catalogue import phrasebook
from tests.browser import DESKTOP, PHONE, Browser

pytestmark = pytest.mark.stack
LINK = re.compile(r"http://127\.0\.0\.1:\d+/p/[A-Za-z0-9_-]{43}")


def gallery_link(stack: StackClient, caller: str, prompt: str) -> str:
    drawn(stack, caller, prompt)
    found = LINK.search(text_reply(stack, caller, "PICTURES"))
    assert found
    return found.group(0)


def picture_loaded(browser: Browser) -> bool:
    return bool(
        browser.run_js(
            "const i = document.querySelector('figure img'); return i.complete && i.naturalWidth > 0;"
        )
    )


def test_the_gallery_link_shows_the_picture_and_its_prompt(
    stack: StackClient, caller: str, browser: Browser
) -> None:
    link = gallery_link(stack, caller, "a lighthouse keeper's cat")
    browser.open(link)
    browser.wait_for("figure img")
    assert "a lighthouse keeper's cat" in browser.text
    assert browser.title.startswith("Your pictures")
    assert picture_loaded(browser)
    for size in (PHONE, DESKTOP):
        with browser.at_width(size):
            figure = browser.find("figure")
            # Nothing sideways on a phone: the picture fits the width.
            assert figure.size["width"] <= size.width
            browser.screenshot("gallery", full_page=True)


def test_delete_in_the_browser_removes_the_picture(
    stack: StackClient, caller: str, browser: Browser
) -> None:
    link = gallery_link(stack, caller, "a paper crane")
    browser.open(link)
    browser.click("button.delete")
    browser.wait_for_text("No pictures yet")
    assert "a paper crane" not in browser.text
    for size in (PHONE, DESKTOP):
        with browser.at_width(size):
            browser.screenshot("gallery-empty")


def test_a_wrong_or_replaced_link_is_not_found_in_the_browser(
    stack: StackClient, caller: str, browser: Browser
) -> None:
    old = gallery_link(stack, caller, "a kite")
    browser.open(old[:-3] + "xyz")
    assert "not found" in browser.text
    found = LINK.search(text_reply(stack, caller, "NEWLINK"))
    assert found and found.group(0) != old
    browser.open(old)
    assert "not found" in browser.text
    browser.open(found.group(0))
    browser.wait_for("figure img")
    assert "a kite" in browser.text


def test_the_gallery_speaks_the_language_its_owner_writes_in(
    stack: StackClient, caller: str, browser: Browser
) -> None:
    """A person who texts in German sees their page in German: its words, its date as German
    writes dates, and delete in German too."""
    text_reply(stack, caller, "ZEICHNE ein Fuchs im Schnee")
    row = latest_request(stack, caller)
    assert row is not None
    when = stack.wait_finished(str(row["id"]))["delivered_at"]
    found = LINK.search(text_reply(stack, caller, "MEINE BILDER"))
    assert found
    book = phrasebook("de")
    browser.open(found.group(0))
    browser.wait_for("figure img")
    assert browser.title.startswith(book.text("page_title"))
    assert browser.run_js("return document.documentElement.lang") == "de"
    assert book.text("page_intro") in browser.text
    assert f"{when:%d.%m.%Y}, {when:%H:%M} UTC" in browser.text  # "01.12.2026, 14:03", not "Dec 1"
    for size in (PHONE, DESKTOP):
        with browser.at_width(size):
            browser.screenshot("gallery-de", full_page=True)
    browser.click("button.delete")
    browser.wait_for_text(book.text("page_empty", keyword="ZEICHNE"))
