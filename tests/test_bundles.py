"""Each deploy bundle, installed alone into a fresh virtual environment from its own
requirements.txt and started by functions-framework from its own folder, does its job
against the local stack. This is the test that catches a file or package missing from a
deploy: nothing from the repository root is importable in these processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
import requests

from devstack.qstash import DEV_CURRENT_SIGNING_KEY, make_signature
from devstack.stack_client import StackClient, latest_request, queued_row, text_reply
from devstack.vendor_calls import callback_payload, provider_success
from tests.deployer import Deployer

pytestmark = pytest.mark.stack

# What the stack gives the functions (see devstack.stack); the rest of its env is for tests.
FUNCTION_SETTINGS = (
    "QSTASH_URL", "QSTASH_TOKEN", "QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY",
    "OPENAI_BASE_URL", "OPENAI_API_KEY", "SUPABASE_URL", "SUPABASE_SECRET_KEY",
    "TWILIO_API_BASE_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "OPERATOR_KEY",
    "TWILIO_FROM_NUMBER", "GOOGLE_CLOUD_PROJECT", "SECRET_MANAGER_ENDPOINT", "COMPOSITE_URL",
    "ALLOW_TEST_RECIPIENTS",
)  # fmt: skip


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    deployer = Deployer(tmp_path_factory.mktemp("deploy"))
    deployer.run("deploy")
    return deployer.build


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StartBundle(Protocol):
    def __call__(self, name: str, port: int, **settings: str) -> str: ...


@pytest.fixture
def run_bundle(build: Path, local_stack: StackClient, tmp_path: Path) -> Iterator[StartBundle]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(name: str, port: int, **overrides: str) -> str:
        bundle = build / name
        venv = tmp_path / f"venv-{name}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        install = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "-r", str(bundle / "requirements.txt")],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert install.returncode == 0, install.stderr[-2000:]
        url = f"http://127.0.0.1:{port}"
        env = {key: local_stack.env[key] for key in FUNCTION_SETTINGS if key in local_stack.env}
        env.update(PATH=os.environ["PATH"], HOME=str(tmp_path), PYTHONUNBUFFERED="1", **overrides)
        process = subprocess.Popen(
            [str(venv / "bin" / "python"), "-m", "functions_framework", "--target", name,
             "--source", "main.py", "--host", "127.0.0.1", "--port", str(port)],
            cwd=bundle, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(url, timeout=1)
                return url
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
                time.sleep(0.2)
        raise AssertionError(f"{name} bundle did not start")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_the_generate_bundle_accepts_a_request_on_its_own(
    run_bundle: StartBundle, local_stack: StackClient, caller: str
) -> None:
    port = _free_port()
    url = run_bundle("generate", port, GENERATE_URL=f"http://127.0.0.1:{port}")
    response = requests.post(
        url,
        json={"to": caller, "prompt": "a bundled fox"},
        headers={"X-Operator-Key": local_stack.env["OPERATOR_KEY"]},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    # The stack's composite finishes it: the bundle published a well-formed job.
    assert local_stack.wait_finished(response.json()["request_id"])["status"] == "delivered"


def test_the_composite_bundle_delivers_a_picture_on_its_own(
    run_bundle: StartBundle, local_stack: StackClient, caller: str
) -> None:
    port = _free_port()
    # It checks signatures against its own public URL, so that is this process's URL.
    url = run_bundle("composite", port, COMPOSITE_URL=f"http://127.0.0.1:{port}")
    request_id = queued_row(local_stack, caller)
    raw = json.dumps(callback_payload(200, provider_success())).encode()
    target = f"{url}?request={request_id}"
    signature = make_signature(DEV_CURRENT_SIGNING_KEY, target, raw)
    response = requests.post(
        target,
        data=raw,
        headers={"Upstash-Signature": signature, "Upstash-Message-Id": "msg_bundle"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "delivered"
    local_stack.stack.wait_idle(10)
    assert len(local_stack.messages_to(caller)) == 1


def test_the_gallery_bundle_shows_a_persons_page_and_the_wall_on_its_own(
    run_bundle: StartBundle, local_stack: StackClient, caller: str
) -> None:
    """Its modules beside main.py, its templates, Babel's dates and the catalogues all ship."""
    port = _free_port()
    url = run_bundle(
        "gallery", port, GALLERY_URL=f"http://127.0.0.1:{port}", WALL="on", DEFAULT_LANGUAGE="it"
    )
    text_reply(local_stack, caller, "ZEICHNE ein Fuchs im Bundle")
    row = latest_request(local_stack, caller)
    assert row is not None
    assert local_stack.wait_finished(str(row["id"]))["status"] == "delivered"
    link = re.search(r"/p/[A-Za-z0-9_-]{43}", text_reply(local_stack, caller, "MEINE BILDER"))
    assert link is not None
    page = requests.get(f"{url}{link[0]}", timeout=30)
    assert page.status_code == 200, page.text
    assert '<html lang="de">' in page.text and "ein Fuchs im Bundle" in page.text
    wall = requests.get(f"{url}/wall", timeout=30)
    assert wall.status_code == 200 and '<html lang="it">' in wall.text
    assert requests.get(f"{url}/admin/sign-in", timeout=30).status_code == 200
