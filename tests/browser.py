"""A real headless Chromium for the tests of our web pages, driven through chromedriver.

Debian's `chromium` and `chromium-driver` packages (`/usr/bin/chromium`, `/usr/bin/chromedriver`)
with Selenium 4. Without them :func:`start_browser` skips the test and says how to install them.

One browser serves the whole test session (the `browser` fixture in `tests/conftest.py`); after
each test that used it, :meth:`Browser.reset` leaves it on a blank page at desktop size with no
cookies, no storage and no extra windows.

Pages are shown at the two sizes we keep screenshots at, :data:`PHONE` (390x844, as a phone:
touch, `<meta name="viewport">` honoured) and :data:`DESKTOP` (1280x900), both at one device
pixel per CSS pixel, so a screenshot is exactly that many pixels wide. Screenshots land in
`.devstack/screenshots/<name>-<phone|desktop>.png` under the repo root.

The helpers that look something up wait for it (:data:`DEFAULT_TIMEOUT_S`) and raise
AssertionError with what the page showed when it does not come, so a test reads as its steps.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DESKTOP",
    "PHONE",
    "SCREENSHOT_DIR",
    "SIZES",
    "Browser",
    "Size",
    "missing_browser",
    "start_browser",
]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "sudo apt-get install chromium chromium-driver"

REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT_DIR = REPO_ROOT / ".devstack" / "screenshots"

DEFAULT_TIMEOUT_S = 5.0
PAGE_LOAD_TIMEOUT_S = 20.0
# How much of the page's text an AssertionError quotes.
_QUOTED_TEXT_CHARS = 600


@dataclass(frozen=True)
class Size:
    """A viewport in CSS pixels; `name` ends the screenshot's file name."""

    name: str
    width: int
    height: int
    mobile: bool = False


PHONE = Size("phone", 390, 844, mobile=True)
DESKTOP = Size("desktop", 1280, 900)
SIZES = (PHONE, DESKTOP)


def missing_browser() -> str | None:
    """Why no browser can start here (for a skip message), or None when both programs exist."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return None
    return (
        f"no headless browser: {' and '.join(missing)} not found;"
        f" install Debian's packages with `{INSTALL_HINT}`"
    )


def start_browser(screenshot_dir: Path = SCREENSHOT_DIR) -> Browser:
    """Start headless Chromium, or skip the calling test when it is not installed.

    A browser that is installed but fails to start is an error, not a skip.
    """
    reason = missing_browser()
    if reason:
        pytest.skip(reason)
    profile_dir = Path(tempfile.mkdtemp(prefix="picture-line-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        # /dev/shm is tiny in containers; Chromium writes there otherwise and crashes.
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile_dir}",
        "--no-first-run",
        "--no-default-browser-check",
        # No calls home: CI may have no internet, and the tests only talk to loopback.
        "--disable-background-networking",
        "--disable-component-update",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    if os.geteuid() == 0:
        # Chromium refuses to run as root with its sandbox on.
        options.add_argument("--no-sandbox")
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile_dir, ignore_errors=True)
        raise RuntimeError(f"{CHROMIUM} did not start through {CHROMEDRIVER}: {exc.msg}") from exc
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    browser = Browser(driver, profile_dir=profile_dir, screenshot_dir=screenshot_dir)
    browser.resize(DESKTOP)
    return browser


class Browser:
    """One Chromium window, at one of :data:`SIZES` at a time (:data:`DESKTOP` to begin with)."""

    def __init__(
        self, driver: webdriver.Chrome, *, profile_dir: Path, screenshot_dir: Path
    ) -> None:
        self.driver = driver
        self.screenshot_dir = screenshot_dir
        self._profile_dir = profile_dir
        self._size = DESKTOP

    # --- the window ---------------------------------------------------------------------------

    @property
    def size(self) -> Size:
        return self._size

    def resize(self, size: Size) -> None:
        """Show pages at `size` from now on (the page on screen relays itself out)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": size.width,
                "height": size.height,
                "deviceScaleFactor": 1,
                "mobile": size.mobile,
            },
        )
        self.driver.execute_cdp_cmd(
            "Emulation.setTouchEmulationEnabled", {"enabled": size.mobile, "maxTouchPoints": 5}
        )
        self._size = size

    @contextmanager
    def at_width(self, size: Size) -> Iterator[Browser]:
        """Show pages at `size` inside the `with` block, then at the size before it."""
        before = self._size
        self.resize(size)
        try:
            yield self
        finally:
            self.resize(before)

    def reset(self) -> None:
        """Back to how the browser started: a blank page at desktop size, one window, no
        cookies, no cache, and no storage for the origin the test left it on."""
        handles = self.driver.window_handles
        for handle in handles[1:]:
            self.driver.switch_to.window(handle)
            self.driver.close()
        self.driver.switch_to.window(handles[0])
        origin = self.run_js("return location.origin")
        if isinstance(origin, str) and origin.startswith("http"):
            self.driver.execute_cdp_cmd(
                "Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"}
            )
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        self.driver.get("about:blank")
        self.resize(DESKTOP)

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self._profile_dir, ignore_errors=True)

    # --- the page -----------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Go to `url` and return once it has loaded (its `load` event)."""
        self.driver.get(url)

    @property
    def url(self) -> str:
        return self.driver.current_url

    @property
    def title(self) -> str:
        """The page's `document.title`."""
        return self.driver.title

    @property
    def text(self) -> str:
        """The page's text as a reader sees it (`document.body.innerText`)."""
        text = self.run_js("return document.body ? document.body.innerText : ''")
        return str(text)

    def run_js(self, script: str, *args: Any) -> Any:
        """Run `script` as a function body in the page; `return` gives its value back."""
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> WebElement:
        """The first element matching `css` now, without waiting; AssertionError if none."""
        found = self.find_all(css)
        if not found:
            raise AssertionError(f"no element matches {css!r} on {self._page()}")
        return found[0]

    def find_all(self, css: str) -> list[WebElement]:
        """Every element matching `css` now, without waiting (maybe none)."""
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    # --- waiting ------------------------------------------------------------------------------

    def wait_for(self, css: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> WebElement:
        """The first element matching `css` once it is visible."""
        condition = expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
        try:
            element: WebElement = WebDriverWait(self.driver, timeout_s).until(condition)
        except TimeoutException as exc:
            raise AssertionError(
                f"no visible element matches {css!r} after {timeout_s} s on {self._page()}"
            ) from exc
        return element

    def wait_for_text(self, text: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Return once `text` is part of the page's visible text (:attr:`text`)."""
        try:
            WebDriverWait(self.driver, timeout_s).until(lambda _driver: text in self.text)
        except TimeoutException as exc:
            raise AssertionError(
                f"{text!r} did not appear within {timeout_s} s on {self._page()}"
            ) from exc

    # --- acting -------------------------------------------------------------------------------

    def click(self, css: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Click the first element matching `css` once it is visible and enabled."""
        condition = expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, css))
        try:
            element: WebElement = WebDriverWait(self.driver, timeout_s).until(condition)
        except TimeoutException as exc:
            raise AssertionError(
                f"nothing clickable matches {css!r} after {timeout_s} s on {self._page()}"
            ) from exc
        element.click()

    def fill(self, css: str, value: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Replace the contents of the field matching `css` with `value`, typed as keys."""
        field = self.wait_for(css, timeout_s)
        field.clear()
        field.send_keys(value)

    def submit(self, css: str = "form", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Submit the form matching `css` as its submit button would: the form's own checks
        and `submit` handlers run (WebElement.submit() would skip both)."""
        form = self.wait_for(css, timeout_s)
        self.run_js("arguments[0].requestSubmit()", form)

    # --- screenshots --------------------------------------------------------------------------

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        """Save what is on screen as `<screenshot_dir>/<name>-<phone|desktop>.png`.

        Args:
            name: The first part of the file name, e.g. "gallery".
            full_page: The whole page, however long, rather than the viewport. Either way the
                image is as wide as the current size.

        Returns:
            The path of the PNG file written.
        """
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.screenshot_dir / f"{name}-{self._size.name}.png"
        if full_page:
            metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
            height = max(self._size.height, metrics["cssContentSize"]["height"])
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "width": self._size.width,
                        "height": height,
                        "scale": 1,
                    },
                },
            )
            path.write_bytes(base64.b64decode(shot["data"]))
        else:
            path.write_bytes(self.driver.get_screenshot_as_png())
        return path

    def screenshot_each_width(self, name: str, *, full_page: bool = False) -> list[Path]:
        """:meth:`screenshot` at each of :data:`SIZES`, phone first."""
        paths = []
        for size in SIZES:
            with self.at_width(size):
                paths.append(self.screenshot(name, full_page=full_page))
        return paths

    def _page(self) -> str:
        """The page, for an AssertionError: its URL and the start of its text."""
        text = self.text
        if len(text) > _QUOTED_TEXT_CHARS:
            text = text[:_QUOTED_TEXT_CHARS] + "…"
        return f"{self.url}, which shows {text!r}"
