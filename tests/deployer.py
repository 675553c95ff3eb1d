"""deploy.sh run offline, against the fake gcloud in tests/fakes that records what it is asked:
`Deployer` runs it and reads the record, `flag` reads one flag of a recorded call."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "fakes"

SETTINGS = {
    "GOOGLE_CLOUD_PROJECT": "picture-line-test",
    "REGION": "europe-west1",
    "SUPABASE_URL": "https://abcdefghijklmnop.supabase.co",
    "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
    "TWILIO_FROM_NUMBER": "+15005550006",
    "BRAND_NAME": "Bob's Pictures",
}


class Deployer:
    """Runs deploy.sh with the fake gcloud first on PATH, and reads what it recorded."""

    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "gcloud"
        self.state.mkdir()
        self.build = tmp / "build"
        self.env = {
            "PATH": f"{FAKES}:{os.environ['PATH']}",
            "HOME": str(tmp),
            "FAKE_GCLOUD_DIR": str(self.state),
            "DEPLOY_BUILD_DIR": str(self.build),
            "DEPLOY_ENV_FILE": str(tmp / "no-such-deploy.env"),
            **SETTINGS,
        }

    def run(
        self, *args: str, extra: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(ROOT / "deploy.sh"), *args],
            env={**self.env, **(extra or {})},
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def calls(self) -> list[dict[str, Any]]:
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def commands(self, *prefix: str) -> list[dict[str, Any]]:
        """Calls whose words (flags dropped) start with `prefix`."""
        found = []
        for call in self.calls():
            words = [a for a in call["args"] if not a.startswith("--")]
            if words[: len(prefix)] == list(prefix):
                found.append(call)
        return found

    def reset_log(self) -> None:
        (self.state / "calls.jsonl").unlink(missing_ok=True)


def flag(call: dict[str, Any], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in call["args"] if a.startswith(f"--{name}=")), None)
