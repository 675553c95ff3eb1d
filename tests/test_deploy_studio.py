"""`./deploy.sh studio` against the local Twilio stand-in (Studio Flows v2 and numbers)."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from deploy.studio import FLOW_FILE, main
from devstack.serving import RunningServer, serve_in_thread
from devstack.twilio import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, TwilioConfig, create_app
from tests.deployer import Deployer

NUMBER = "+15005550006"
GENERATE = "https://generate-x7k2q9-uc.a.run.app"

FLOW_KEY = "flow-key-for-the-studio-tests"
STUDIO_SECRETS = {"TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN, "STUDIO_FLOW_KEY": FLOW_KEY}


@pytest.fixture
def twilio() -> Iterator[RunningServer]:
    app = create_app(TwilioConfig(outbox_dir=Path(tempfile.mkdtemp()), phone_numbers=(NUMBER,)))
    server = serve_in_thread(app)
    yield server
    server.stop()
    app.extensions["twilio"].close()


@pytest.fixture
def deployer(tmp_path: Path, twilio: RunningServer) -> Deployer:
    deployer = Deployer(tmp_path)
    deployer.run("deploy")  # so that `functions describe generate` has a URL
    deployer.env.update(
        TWILIO_API_BASE_URL=twilio.url,
        TWILIO_ACCOUNT_SID=DEV_ACCOUNT_SID,
        TWILIO_FROM_NUMBER=NUMBER,
        PYTHON=sys.executable,
    )
    return deployer


def flows(twilio: RunningServer) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = requests.get(f"{twilio.url}/__dev/flows", timeout=5).json()[
        "flows"
    ]
    return found


def number(twilio: RunningServer) -> dict[str, Any]:
    numbers = requests.get(f"{twilio.url}/__dev/numbers", timeout=5).json()["numbers"]
    return next(n for n in numbers if n["phone_number"] == NUMBER)


def test_studio_publishes_the_flow_with_the_url_and_wires_the_number(
    deployer: Deployer, twilio: RunningServer
) -> None:
    result = deployer.run("studio", extra=STUDIO_SECRETS)
    assert "created flow FW" in result.stdout
    [flow] = flows(twilio)
    assert flow["status"] == "published"
    urls = {
        s["properties"]["url"]
        for s in flow["definition"]["states"]
        if s["type"] == "make-http-request"
    }
    assert urls == {GENERATE}
    assert "YOUR-GENERATE-FUNCTION-URL" not in json.dumps(flow["definition"])
    keys = {
        p["value"]
        for s in flow["definition"]["states"]
        if s["type"] == "make-http-request"
        for p in s["properties"]["parameters"]
        if p["key"] == "flow_key"
    }
    assert keys == {FLOW_KEY}
    wired = number(twilio)
    assert wired["voice_url"] == wired["sms_url"] == flow["webhook_url"]
    # The auth token and the flow key reached the script through the environment.
    assert DEV_AUTH_TOKEN not in json.dumps(deployer.calls())
    assert FLOW_KEY not in json.dumps(deployer.calls())


def test_studio_twice_changes_nothing(deployer: Deployer, twilio: RunningServer) -> None:
    deployer.run("studio", extra=STUDIO_SECRETS)
    again = deployer.run("studio", extra=STUDIO_SECRETS)
    assert "is up to date" in again.stdout and "already points at the flow" in again.stdout
    assert [f["revision"] for f in flows(twilio)] == [1]


def test_studio_dry_run_changes_nothing(deployer: Deployer, twilio: RunningServer) -> None:
    result = deployer.run("--dry-run", "studio", extra=STUDIO_SECRETS)
    assert "would create the flow" in result.stdout
    assert flows(twilio) == [] and number(twilio)["voice_url"] in ("", None)


def test_studio_reads_the_token_from_secret_manager(
    deployer: Deployer, twilio: RunningServer
) -> None:
    deployer.run(
        "secrets",
        extra={
            name: "x"
            for name in (
                "QSTASH_TOKEN",
                "QSTASH_CURRENT_SIGNING_KEY",
                "QSTASH_NEXT_SIGNING_KEY",
                "OPENAI_API_KEY",
                "SUPABASE_SECRET_KEY",
                "OPERATOR_KEY",
                "SAFETY_IDENTIFIER_SALT",
            )
        }
        | {"TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN},
    )
    result = deployer.run("studio")  # no token or flow key in the environment this time
    assert "created flow" in result.stdout
    [flow] = flows(twilio)
    assert "YOUR-STUDIO-FLOW-KEY" not in json.dumps(flow["definition"])


def test_studio_without_a_stored_flow_key_says_to_run_secrets(deployer: Deployer) -> None:
    result = deployer.run("studio", extra={"TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN}, check=False)
    assert result.returncode != 0
    assert "STUDIO_FLOW_KEY is not in Secret Manager yet" in result.stderr


def test_a_wrong_token_or_number_fails_clearly(deployer: Deployer) -> None:
    wrong = deployer.run(
        "studio", extra={**STUDIO_SECRETS, "TWILIO_AUTH_TOKEN": "0" * 32}, check=False
    )
    assert wrong.returncode != 0 and "20003" in wrong.stderr
    missing = deployer.run(
        "studio",
        extra={**STUDIO_SECRETS, "TWILIO_FROM_NUMBER": "+15550009999"},
        check=False,
    )
    assert missing.returncode != 0 and "not a number of this Twilio account" in missing.stderr


def test_an_invalid_flow_is_refused_before_anything_changes(
    twilio: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = json.loads(FLOW_FILE.read_text())
    broken["states"][1]["transitions"][0]["next"] = "no_such_widget"
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(broken))
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", DEV_ACCOUNT_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", DEV_AUTH_TOKEN)
    monkeypatch.setenv("TWILIO_API_BASE_URL", twilio.url)
    code = main(["--generate-url", GENERATE, "--number", NUMBER, "--flow-file", str(path)])
    assert code == 1
    assert "81022" in capsys.readouterr().err
    assert flows(twilio) == []
