"""deploy.sh, proven offline: against a fake gcloud that records what it is asked."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.callbacks import SWEEP_BODY
from tests.deployer import ROOT, Deployer, flag

# Distinctive values, so any leak into an argument or file is easy to find.
SECRETS = {
    "QSTASH_TOKEN": "qstash-token-SECRET-1",
    "QSTASH_CURRENT_SIGNING_KEY": "sig_current-SECRET-2",
    "QSTASH_NEXT_SIGNING_KEY": "sig_next-SECRET-3",
    "OPENAI_API_KEY": "sk-openai-SECRET-4",
    "SUPABASE_SECRET_KEY": "sb_secret_SECRET-5",
    "TWILIO_AUTH_TOKEN": "twilio-token-SECRET-6",
    "OPERATOR_KEY": "operator-SECRET-7",
    "SAFETY_IDENTIFIER_SALT": "salt-SECRET-8",
    "STUDIO_FLOW_KEY": "flow-key-SECRET-9",
}


def test_deploy_puts_composite_first_and_gives_each_function_its_own_url(
    deployer: Deployer,
) -> None:
    deployer.run("deploy")
    deploys = deployer.commands("functions", "deploy")
    names = [[a for a in d["args"] if not a.startswith("--")][2] for d in deploys]
    # First install: each is deployed twice, the second time knowing its own URL; gallery
    # first, as composite and generate text its links.
    assert names == ["gallery", "gallery", "composite", "composite", "generate", "generate"]
    gallery_env, composite_env = deploys[1]["env_file"], deploys[3]["env_file"]
    generate_env = deploys[5]["env_file"]
    assert "COMPOSITE_URL: 'https://composite-x7k2q9-uc.a.run.app'" in composite_env
    assert "GALLERY_URL: 'https://gallery-x7k2q9-uc.a.run.app'" in gallery_env
    assert "GALLERY_URL: 'https://gallery-x7k2q9-uc.a.run.app'" in composite_env
    assert "COMPOSITE_URL: 'https://composite-x7k2q9-uc.a.run.app'" in generate_env
    assert "GALLERY_URL: 'https://gallery-x7k2q9-uc.a.run.app'" in generate_env
    assert "GENERATE_URL: 'https://generate-x7k2q9-uc.a.run.app'" in generate_env
    assert "BRAND_NAME: 'Bob''s Pictures'" in generate_env  # YAML single-quote escaping


@pytest.mark.parametrize(
    ("name", "secrets"),
    [
        (
            "generate",
            {
                "QSTASH_TOKEN",
                "OPENAI_API_KEY",
                "SUPABASE_SECRET_KEY",
                "TWILIO_AUTH_TOKEN",
                "OPERATOR_KEY",
                "SAFETY_IDENTIFIER_SALT",
                "STUDIO_FLOW_KEY",
            },
        ),
        (
            "composite",
            {
                "QSTASH_TOKEN",
                "QSTASH_CURRENT_SIGNING_KEY",
                "QSTASH_NEXT_SIGNING_KEY",
                "SUPABASE_SECRET_KEY",
                "TWILIO_AUTH_TOKEN",
                # To ask again with IMAGE_MODEL_FALLBACK when a model is gone.
                "OPENAI_API_KEY",
                "SAFETY_IDENTIFIER_SALT",
            },
        ),
    ],
)
def test_deploy_flags(deployer: Deployer, name: str, secrets: set[str]) -> None:
    deployer.run("deploy")
    call = [d for d in deployer.commands("functions", "deploy", name)][-1]
    args = call["args"]
    for expected in (
        "--gen2",
        "--runtime=python312",
        "--trigger-http",
        "--allow-unauthenticated",
        "--concurrency=1",
        "--quiet",
    ):
        assert expected in args
    assert flag(call, "project") == "picture-line-test"
    assert flag(call, "region") == "europe-west1"
    assert flag(call, "entry-point") == name
    assert flag(call, "source") == str(deployer.build / name)
    assert flag(call, "service-account") == "picture-line@picture-line-test.iam.gserviceaccount.com"
    assert flag(call, "timeout") == {"generate": "30s", "composite": "120s"}[name]
    mounted = dict(pair.split("=") for pair in (flag(call, "set-secrets") or "").split(","))
    assert mounted == {secret: f"{secret}:latest" for secret in secrets}


def test_no_secret_value_reaches_gcloud_arguments_or_files(deployer: Deployer) -> None:
    deployer.run("secrets", extra=SECRETS)
    deployer.run("deploy", extra=SECRETS)
    deployer.run("call", "a fox", "+15551230001", extra=SECRETS)
    recorded = json.dumps([c for c in deployer.calls() if "call" not in c["args"]])
    written = "".join(p.read_text() for p in deployer.build.glob("*.yaml"))
    for value in SECRETS.values():
        assert value not in recorded
        assert value not in written


def test_a_second_deploy_changes_nothing_but_the_revisions(deployer: Deployer) -> None:
    deployer.run("deploy")
    first_envs = {d["env_file"] for d in deployer.commands("functions", "deploy")[1::2]}
    deployer.reset_log()
    deployer.run("deploy")
    deploys = deployer.commands("functions", "deploy")
    assert len(deploys) == 3  # one new revision each, nothing else created
    assert {d["env_file"] for d in deploys} == first_envs
    assert deployer.commands("secrets") == []
    assert deployer.commands("iam", "service-accounts", "create") == []


def test_functions_are_built_by_our_own_build_service_account(deployer: Deployer) -> None:
    """New projects' default Cloud Build account may not build functions [DOC build-custom-sa]."""
    deployer.run("deploy")
    build_account = "picture-line-build@picture-line-test.iam.gserviceaccount.com"
    [created] = deployer.commands("iam", "service-accounts", "create")
    assert "picture-line-build" in created["args"]
    grants = [
        g
        for g in deployer.commands("projects", "add-iam-policy-binding")
        if flag(g, "member") == f"serviceAccount:{build_account}"
    ]
    assert {flag(g, "role") for g in grants} == {"roles/cloudbuild.builds.builder"}
    for deploy in deployer.commands("functions", "deploy"):
        assert flag(deploy, "build-service-account") == (
            f"projects/picture-line-test/serviceAccounts/{build_account}"
        )


def test_secrets_are_stored_once_and_readable_by_the_functions(deployer: Deployer) -> None:
    result = deployer.run("secrets", extra=SECRETS)
    assert len(deployer.commands("iam", "service-accounts", "create")) == 1
    assert len(deployer.commands("secrets", "create")) == len(SECRETS)
    assert len(deployer.commands("secrets", "versions", "add")) == len(SECRETS)
    grants = deployer.commands("secrets", "add-iam-policy-binding")
    assert {flag(g, "role") for g in grants} == {"roles/secretmanager.secretAccessor"}
    state = json.loads((deployer.state / "state.json").read_text())
    assert {name: versions[-1] for name, versions in state["secrets"].items()} == SECRETS
    assert "storing a new version of OPENAI_API_KEY" in result.stderr

    deployer.reset_log()
    again = deployer.run("secrets", extra=SECRETS)
    assert deployer.commands("secrets", "create") == []
    assert deployer.commands("secrets", "versions", "add") == []
    assert deployer.commands("iam", "service-accounts", "create") == []
    assert "OPENAI_API_KEY is up to date" in again.stderr

    deployer.reset_log()
    deployer.run("secrets", extra={**SECRETS, "OPENAI_API_KEY": "sk-rotated-SECRET-9"})
    added = deployer.commands("secrets", "versions", "add")
    assert [[a for a in c["args"] if not a.startswith("--")][3] for c in added] == [
        "OPENAI_API_KEY"
    ]


def test_secrets_makes_up_the_flow_key_once_and_keeps_it(deployer: Deployer) -> None:
    without = {k: v for k, v in SECRETS.items() if k != "STUDIO_FLOW_KEY"}
    deployer.run("secrets", extra=without)
    state = json.loads((deployer.state / "state.json").read_text())
    [made] = state["secrets"]["STUDIO_FLOW_KEY"]
    assert len(made) >= 40
    deployer.run("secrets", extra=without)
    state = json.loads((deployer.state / "state.json").read_text())
    assert state["secrets"]["STUDIO_FLOW_KEY"] == [made]


def test_secrets_without_a_value_or_a_terminal_fail_clearly(deployer: Deployer) -> None:
    result = deployer.run(
        "secrets", extra={k: v for k, v in SECRETS.items() if k != "OPERATOR_KEY"}, check=False
    )
    assert result.returncode != 0
    assert "OPERATOR_KEY is not set" in result.stderr


def test_dry_run_prints_every_command_and_touches_nothing(deployer: Deployer) -> None:
    result = deployer.run("--dry-run", "deploy")
    assert deployer.calls() == []
    assert not deployer.build.exists()
    lines = [line for line in result.stdout.splitlines() if line.startswith("+ gcloud")]
    deploys = [line for line in lines if " functions deploy " in line]
    assert [line.split(" functions deploy ")[1].split()[0] for line in deploys] == [
        "gallery",
        "composite",
        "generate",
    ]
    assert all("--project=picture-line-test" in line for line in lines)
    assert "+ write" in result.stdout and "GENERATE_URL:" in result.stdout
    secrets_plan = deployer.run("--dry-run", "secrets", extra=SECRETS)
    assert deployer.calls() == []
    assert "secrets versions add OPENAI_API_KEY --data-file=-" in secrets_plan.stdout
    assert not any(value in secrets_plan.stdout for value in SECRETS.values())


@pytest.mark.parametrize("missing", ["GOOGLE_CLOUD_PROJECT", "SUPABASE_URL", "TWILIO_ACCOUNT_SID"])
def test_deploy_fails_early_without_a_setting(deployer: Deployer, missing: str) -> None:
    env = {**deployer.env}
    del env[missing]
    result = subprocess.run(
        [str(ROOT / "deploy.sh")], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert missing in result.stderr
    assert deployer.calls() == []


def test_deploy_fails_early_without_gcloud(deployer: Deployer, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("bash", "dirname", "sed", "cp", "rm", "mkdir", "cat"):
        if found := shutil.which(tool):
            (bare / tool).symlink_to(found)
    result = deployer.run(extra={"PATH": str(bare)}, check=False)
    assert result.returncode != 0
    assert "gcloud is needed" in result.stderr


def test_call_asks_generate_through_gcloud(deployer: Deployer) -> None:
    deployer.run("call", 'a "quoted" fox', "+15551230001", extra={"OPERATOR_KEY": "k"})
    call = deployer.commands("functions", "call", "generate")[0]
    assert json.loads(flag(call, "data") or "") == {
        "to": "+15551230001",
        "prompt": 'a "quoted" fox',
        "operator_key": "k",
    }


def test_call_needs_a_prompt_and_a_number(deployer: Deployer) -> None:
    result = deployer.run("call", "a fox", check=False)
    assert result.returncode != 0 and "usage" in result.stderr


def test_logs_reads_every_function(deployer: Deployer) -> None:
    deployer.run("logs")
    read = deployer.commands("functions", "logs", "read")
    assert [[a for a in c["args"] if not a.startswith("--")][3] for c in read] == [
        "generate",
        "composite",
        "gallery",
    ]


def test_unknown_command(deployer: Deployer) -> None:
    result = deployer.run("launch", check=False)
    assert result.returncode != 0 and "unknown command" in result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_deploy_script_is_shellcheck_clean() -> None:
    result = subprocess.run(
        ["shellcheck", str(ROOT / "deploy.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_bundles_hold_main_shared_and_pinned_requirements(deployer: Deployer) -> None:
    deployer.run("deploy")
    for name in ("generate", "composite", "gallery"):
        bundle = deployer.build / name
        assert (bundle / "main.py").read_text() == (ROOT / name / "main.py").read_text()
        assert sorted(p.name for p in (bundle / "shared").glob("*.*")) == sorted(
            p.name for p in (ROOT / "shared").glob("*.*")
        )
        assert not any(p.is_symlink() for p in bundle.rglob("*"))
        requirements = [
            line
            for line in (bundle / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")
        ]
        assert requirements and all("==" in line for line in requirements)
    # The gallery's pages travel with it.
    templates = sorted(p.name for p in (deployer.build / "gallery" / "templates").iterdir())
    assert templates == sorted(p.name for p in (ROOT / "gallery" / "templates").iterdir())
    generate_requirements = (deployer.build / "generate" / "requirements.txt").read_text()
    # Pillow (with pillow-heif) only for a photo someone sends; loaded when one arrives.
    assert "pillow-heif==" in generate_requirements and "PyJWT" not in generate_requirements


def test_schedule_creates_the_sweep_schedule_without_putting_the_token_on_the_command_line(
    deployer: Deployer,
) -> None:
    deployer.run("deploy")
    deployer.run("schedule", extra={"QSTASH_TOKEN": SECRETS["QSTASH_TOKEN"]})
    [call] = [json.loads(line) for line in (deployer.state / "curl.jsonl").read_text().splitlines()]
    assert (
        call["args"][-1]
        == "https://qstash.upstash.io/v2/schedules/https://composite-x7k2q9-uc.a.run.app"
    )
    # The signed body, not the URL, says "sweep": whether QStash signs the query is unconfirmed.
    assert json.loads(call["args"][call["args"].index("--data") + 1]) == SWEEP_BODY
    assert "Upstash-Schedule-Id: picture-line-sweep" in call["args"]
    assert "Upstash-Cron: */10 * * * *" in call["args"]
    assert SECRETS["QSTASH_TOKEN"] not in json.dumps(call["args"])
    assert call["stdin"] == f"Authorization: Bearer {SECRETS['QSTASH_TOKEN']}\n"


def test_schedule_needs_composite_deployed(deployer: Deployer) -> None:
    result = deployer.run("schedule", extra={"QSTASH_TOKEN": "t"}, check=False)
    assert result.returncode != 0 and "not deployed yet" in result.stderr


def test_generate_alone_can_be_kept_warm(deployer: Deployer) -> None:
    deployer.run("deploy", extra={"GENERATE_MIN_INSTANCES": "1"})
    minimum = {
        flag(d, "entry-point"): flag(d, "min-instances")
        for d in deployer.commands("functions", "deploy")
    }
    assert minimum == {"generate": "1", "composite": "0", "gallery": "0"}
