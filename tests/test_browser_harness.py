"""tests/browser.py against a tiny page served from this process: what the gallery's and the
operator console's tests will lean on works in a real headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from werkzeug.wrappers import Request, Response

from devstack.serving import serve_in_thread
from tests import browser as browser_module
from tests.browser import DESKTOP, PHONE, SCREENSHOT_DIR, Browser

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Harness page</title>
  <style>
    body { font-family: sans-serif; margin: 0; padding: 16px; }
    .tall { height: 2400px; background: linear-gradient(#fde, #def); }
  </style>
</head>
<body>
  <h1>Picture Line harness</h1>
  <p id="status">Nothing pressed yet</p>
  <button id="press" type="button">Press me</button>
  <form id="greet">
    <input id="name" name="name" required>
    <button type="submit">Greet</button>
  </form>
  <p id="greeting"></p>
  <div class="tall"></div>
  <script>
    document.getElementById("press").addEventListener("click", () => {
      document.getElementById("status").textContent = "Pressed once";
      document.title = "Harness page (pressed)";
    });
    document.getElementById("greet").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = document.getElementById("name").value;
      setTimeout(() => {
        document.getElementById("greeting").textContent = "Hello, " + name;
      }, 200);
    });
  </script>
</body>
</html>
"""


@Request.application
def _harness_app(request: Request) -> Response:
    return Response(PAGE, mimetype="text/html")


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    server = serve_in_thread(_harness_app)
    try:
        yield server.url + "/"
    finally:
        server.stop()


def test_browser_reads_text_and_title(browser: Browser, page_url: str) -> None:
    browser.open(page_url)

    assert browser.title == "Harness page"
    assert "Picture Line harness" in browser.text
    assert "Nothing pressed yet" in browser.text
    assert browser.url == page_url


def test_browser_click_runs_the_pages_javascript(browser: Browser, page_url: str) -> None:
    browser.open(page_url)

    browser.click("#press")

    browser.wait_for_text("Pressed once", timeout_s=5)
    assert browser.title == "Harness page (pressed)"
    assert browser.find("#status").text == "Pressed once"


def test_browser_fill_and_submit_run_the_forms_handler(browser: Browser, page_url: str) -> None:
    browser.open(page_url)

    browser.fill("#name", "Ada")
    browser.submit("#greet")

    browser.wait_for_text("Hello, Ada")
    assert browser.wait_for("#greeting").text == "Hello, Ada"


def test_browser_wait_for_text_names_the_page_when_the_text_never_comes(
    browser: Browser, page_url: str
) -> None:
    browser.open(page_url)

    with pytest.raises(AssertionError, match="'Never shown' did not appear") as failure:
        browser.wait_for_text("Never shown", timeout_s=0.3)
    assert page_url in str(failure.value)
    assert "Nothing pressed yet" in str(failure.value)


def test_browser_wait_for_fails_on_a_missing_element(browser: Browser, page_url: str) -> None:
    browser.open(page_url)

    with pytest.raises(AssertionError, match="no visible element matches '#absent'"):
        browser.wait_for("#absent", timeout_s=0.3)


def test_browser_at_width_shows_the_page_at_that_size_then_goes_back(
    browser: Browser, page_url: str
) -> None:
    browser.open(page_url)
    viewport = "return [innerWidth, innerHeight, matchMedia('(pointer: coarse)').matches]"

    with browser.at_width(PHONE):
        assert browser.size == PHONE
        assert browser.run_js(viewport) == [390, 844, True]

    assert browser.size == DESKTOP
    assert browser.run_js(viewport) == [1280, 900, False]


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_browser_screenshots_at_both_widths(browser: Browser, page_url: str) -> None:
    browser.open(page_url)
    for path in (SCREENSHOT_DIR / f"browser-harness-{size.name}.png" for size in (PHONE, DESKTOP)):
        path.unlink(missing_ok=True)

    with browser.at_width(PHONE):
        phone = browser.screenshot("browser-harness")
    desktop = browser.screenshot("browser-harness")

    assert phone == SCREENSHOT_DIR / "browser-harness-phone.png"
    assert desktop == SCREENSHOT_DIR / "browser-harness-desktop.png"
    assert _png_size(phone) == (390, 844)
    assert _png_size(desktop) == (1280, 900)


def test_browser_full_page_screenshots_keep_the_width(browser: Browser, page_url: str) -> None:
    browser.open(page_url)

    phone, desktop = browser.screenshot_each_width("browser-harness-full", full_page=True)

    assert phone.name == "browser-harness-full-phone.png"
    phone_width, phone_height = _png_size(phone)
    desktop_width, desktop_height = _png_size(desktop)
    assert (phone_width, desktop_width) == (390, 1280)
    # The page is taller than either viewport.
    assert phone_height > 2400
    assert desktop_height > 2400
    assert browser.size == DESKTOP


def test_browser_reset_forgets_cookies_storage_windows_and_size(
    browser: Browser, page_url: str
) -> None:
    browser.open(page_url)
    browser.run_js("document.cookie = 'seen=1'; localStorage.setItem('seen', '1')")
    browser.run_js("window.open('about:blank')")
    browser.resize(PHONE)

    browser.reset()

    assert browser.url == "about:blank"
    assert browser.size == DESKTOP
    assert len(browser.driver.window_handles) == 1
    browser.open(page_url)
    remembered = "return [document.cookie, localStorage.getItem('seen'), innerWidth]"
    assert browser.run_js(remembered) == ["", None, 1280]


def test_start_browser_skips_with_the_install_command_when_chromium_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(browser_module, "CHROMIUM", tmp_path / "chromium")

    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium chromium-driver"):
        browser_module.start_browser()
