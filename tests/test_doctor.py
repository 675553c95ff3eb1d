"""The doctor (`make doctor`, `./deploy.sh doctor`): every check on the local stack, healthy and
with each fault injected; the judging functions on their own; and `./deploy.sh doctor`
against the fake gcloud, which must never put a secret on a command line."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from deploy import doctor
from deploy.doctor import (
    FAIL,
    OK,
    WARN,
    DeployedFunction,
    DeployedSecret,
    Line,
    ModelFound,
    Target,
)
from deploy.studio import FLOW_NAME, twilio_client
from deploy.studio import main as publish_studio_flow
from devstack.stack_client import StackClient, configured_secrets
from devstack.twilio import DEFAULT_MESSAGING_SERVICE_SID
from shared import deadline, moderation, publishing
from shared.self_test import answer_self_test, self_test_body, self_test_nonce
from tests.deployer import Deployer

ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 12, 1)


def target(deployed: bool = False, **environ: str) -> Target:
    return Target(dict(environ), deployed, "a test", project="p", region="r", today=TODAY)


def marks(lines: list[Line]) -> dict[str, str]:
    return {line.subject: line.mark for line in lines}


def line(lines: list[Line], subject: str) -> Line:
    [found] = [item for item in lines if item.subject == subject]
    return found


# --- the judging functions, on their own -----------------------------------------------------


@pytest.mark.parametrize(
    ("shutdown", "fallback", "mark", "says"),
    [
        (None, None, OK, "no shutdown announced"),
        ("2027-06-01", None, OK, "in 182 days"),
        ("2027-01-01", None, OK, "in 31 days"),
        ("2026-12-31", None, WARN, "no IMAGE_MODEL_FALLBACK is set"),
        (
            "2026-12-11",
            "gpt-image-2.6-sunburst",
            WARN,
            "IMAGE_MODEL_FALLBACK gpt-image-2.6-sunburst",
        ),
        ("2026-12-01", None, FAIL, "shut down on 2026-12-01"),
        ("2026-10-23", "gpt-image-2.6-sunburst", FAIL, "shut down on 2026-10-23"),
    ],
)
def test_judge_model_by_its_shutdown_date(
    shutdown: str | None, fallback: str | None, mark: str, says: str
) -> None:
    found = ModelFound(200, shutdown)
    judged = doctor.judge_model(
        "IMAGE_MODEL", "gpt-image-2.6-flare", found, TODAY, fallback, target()
    )
    assert judged.mark == mark and says in judged.found
    if mark != OK:
        assert judged.fix and "IMAGE_MODEL=" in judged.fix


def test_judge_model_gone_or_refused() -> None:
    gone = doctor.judge_model(
        "IMAGE_MODEL", "gpt-image-1.5", ModelFound(404), TODAY, None, target()
    )
    assert gone.mark == FAIL and "404" in gone.found
    assert gone.fix and "IMAGE_MODEL=gpt-image-2.6-flare" in gone.fix  # the named replacement
    refused = doctor.judge_model("IMAGE_MODEL", "x", ModelFound(401), TODAY, None, target())
    assert refused.mark == FAIL and "OPENAI_API_KEY" in refused.found


def total(store_timeout_s: float, moderation_on: bool = False) -> float:
    return sum(step.seconds for step in doctor.studio_path_steps(store_timeout_s, moderation_on))


def test_the_default_store_timeout_fits_studio() -> None:
    judged = doctor.judge_studio_time(doctor.DEFAULT_STORE_TIMEOUT_S, False, target())
    assert judged.mark == OK, judged.found
    assert total(doctor.DEFAULT_STORE_TIMEOUT_S) <= doctor.STUDIO_LIMIT_S


def test_a_slow_store_timeout_names_one_that_fits() -> None:
    judged = doctor.judge_studio_time(60, False, target())
    assert judged.mark == FAIL and "at worst" in judged.found
    assert judged.fix and judged.fix.startswith("restart `make stack` with STORE_TIMEOUT_SECONDS=")
    suggested = int(judged.fix.split("STORE_TIMEOUT_SECONDS=")[1].split()[0])
    assert suggested < 60 and total(suggested) <= doctor.STUDIO_LIMIT_S
    # ... and one that still leaves the publish its whole connect and read timeouts.
    publish = [
        step for step in doctor.studio_path_steps(suggested, False) if "publish" in step.what
    ]
    assert publish[0].seconds == publishing.ONE_TRY_S


def test_the_studio_path_follows_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadline, "STUDIO_BUDGET_S", 7.0)
    monkeypatch.setattr(publishing, "CONNECT_TIMEOUT_S", 2.0)
    monkeypatch.setattr(publishing, "READ_TIMEOUT_S", 3.0)
    monkeypatch.setattr(publishing, "ONE_TRY_S", 5.0)
    monkeypatch.setattr(publishing, "MIN_TIMEOUT_S", 0.5)
    steps = doctor.studio_path_steps(4, moderation_on=False)
    # 3 s left for the publish: 2 s connect + 3 s read; no retry, no time to note the id.
    assert [(s.what, s.seconds) for s in steps] == [
        ("record the request", 4),
        ("publish to QStash", 5),
    ]
    # A store call that uses up the deadline leaves the publish its minimum.
    assert [s.seconds for s in doctor.studio_path_steps(8, False)] == [8, 1.0]
    # Whole tries only: at 7 s there is never time for a retry, but the id is noted.
    assert [s.what for s in doctor.studio_path_steps(0.1, False)][-1] == "note the message id"
    monkeypatch.setattr(deadline, "STUDIO_BUDGET_S", 12.0)
    assert [s.what for s in doctor.studio_path_steps(0.1, False)] == [
        "record the request",
        "publish to QStash",
        "publish again",
        "note the message id",
    ]


def test_moderation_that_never_fits_the_budget_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deadline, "STUDIO_BUDGET_S", 7.0)
    monkeypatch.setattr(moderation, "CHECK_S", 10.0)
    judged = doctor.judge_studio_time(4, True, target())
    assert judged.mark == WARN and "never runs for Studio" in judged.found
    monkeypatch.setattr(moderation, "CHECK_S", 6.0)
    assert doctor.studio_path_steps(4, True)[0].what == "moderation"


def test_no_setting_can_fit_a_publish_longer_than_studio_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deadline, "STUDIO_BUDGET_S", 30.0)
    monkeypatch.setattr(publishing, "READ_TIMEOUT_S", 20.0)
    judged = doctor.judge_studio_time(4, False, target())
    assert judged.mark == FAIL and judged.fix and judged.fix.startswith("no setting can")


def test_a_setting_deploy_sh_does_not_pass_says_so() -> None:
    fix = target(deployed=True).fix_setting("STORE_TIMEOUT_SECONDS=2", "IMAGE_MODEL=x")
    assert fix.startswith("set STORE_TIMEOUT_SECONDS=2 IMAGE_MODEL=x in deploy.env")
    passed = doctor.plain_settings((ROOT / "deploy.sh").read_text())
    assert "IMAGE_MODEL" in passed
    if "STORE_TIMEOUT_SECONDS" not in passed:
        assert "add STORE_TIMEOUT_SECONDS to PLAIN_SETTINGS" in fix


def test_secrets_needed_are_deploy_sh_s() -> None:
    needed = doctor.secrets_needed((ROOT / "deploy.sh").read_text())
    assert set(needed["generate"]) >= {"QSTASH_TOKEN", "OPERATOR_KEY", "STUDIO_FLOW_KEY"}
    assert set(needed["composite"]) >= {"QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"}


SA = "picture-line@p.iam.gserviceaccount.com"


@pytest.mark.parametrize(
    ("changes", "mark", "says"),
    [
        ({}, OK, f"{SA} can read it"),
        ({"policy_error": "ERROR: NOT_FOUND: Secret [x] not found"}, FAIL, "not in Secret Manager"),
        ({"has_value": False}, FAIL, "no readable version"),
        ({"readers": frozenset()}, FAIL, "cannot read it"),
        ({"unmounted": ("generate",)}, FAIL, "generate does not mount it"),
    ],
)
def test_judge_deployed_secret(changes: dict[str, Any], mark: str, says: str) -> None:
    fields: dict[str, Any] = {
        "name": "OPERATOR_KEY",
        "users": ("generate",),
        "policy_error": None,
        "has_value": True,
        "readers": frozenset({f"serviceAccount:{SA}"}),
        "accounts": {"generate": SA},
        "unmounted": (),
        **changes,
    }
    judged = doctor.judge_deployed_secret(DeployedSecret(**fields), target(deployed=True))
    assert judged.mark == mark and says in judged.found
    if changes.get("readers") is not None:
        assert judged.fix and "add-iam-policy-binding OPERATOR_KEY" in judged.fix


def test_url_settings_that_are_not_the_functions_urls_are_found() -> None:
    composite = DeployedFunction("https://c", SA, {"COMPOSITE_URL": "https://c"}, frozenset())
    generate = DeployedFunction(
        "https://g", SA, {"COMPOSITE_URL": "https://old", "GENERATE_URL": "https://g"}, frozenset()
    )
    problems = doctor.url_setting_problems({"generate": generate, "composite": composite})
    assert problems == {
        "generate": ["its COMPOSITE_URL is https://old, but composite is at https://c"]
    }


@pytest.mark.parametrize(
    ("schema", "mark"),
    [
        ({"latest_migration": "20261201010000", "doctor_migration": "20261201010000"}, OK),
        ({"latest_migration": "20261124000000", "doctor_migration": "20261201010000"}, FAIL),
        ({"latest_migration": None, "doctor_migration": "20261201010000"}, OK),
        ({"latest_migration": None, "doctor_migration": "20261101000000"}, FAIL),
    ],
)
def test_judge_migrations(schema: dict[str, Any], mark: str) -> None:
    assert doctor.judge_migrations("20261201010000", schema, None, target()).mark == mark


def test_judge_rls_names_the_open_table() -> None:
    every = dict.fromkeys(doctor.RLS_TABLES, True)
    judged = doctor.judge_rls({"rls": {**every, "person_languages": False}})
    assert judged.mark == FAIL and "person_languages" in judged.found
    assert "alter table public.person_languages enable row level security" in str(judged.fix)
    assert doctor.judge_rls({"rls": every}).mark == OK


def test_judge_rls_says_a_missing_table_is_a_missing_migration() -> None:
    """A database from before the languages migration does not report person_languages."""
    judged = doctor.judge_rls({"rls": {"requests": True, "opt_outs": True}})
    assert judged.mark == FAIL
    assert "person_languages" in judged.found and "not all applied" in judged.found


def test_the_env_file_reads_back_what_the_stack_writes(tmp_path: Path) -> None:
    text = "# a comment\nexport A='it'\"'\"'s'\nexport B=plain\nexport C='a b=c'\n"
    assert doctor.parse_env_file(text) == {"A": "it's", "B": "plain", "C": "a b=c"}


@pytest.mark.parametrize(
    ("body", "nonce"),
    [
        (self_test_body("n" * 24), "n" * 24),
        ({"picture_line": "self_test", "nonce": "short"}, None),
        ({"picture_line": "self_test", "nonce": "n" * 24, "request": "x"}, None),
        ({"picture_line": "sweep"}, None),
        ([], None),
    ],
)
def test_self_test_bodies(body: Any, nonce: str | None) -> None:
    assert self_test_nonce(json.dumps(body).encode()) == nonce


def test_without_signature_checks_a_self_test_records_nothing() -> None:
    services: Any = SimpleNamespace(
        settings=SimpleNamespace(insecure_skip_signatures=True), store=None
    )
    answer = answer_self_test("n" * 24, "n" * 24, True, services)
    assert answer == {"self_test": "not recorded: signatures are not checked"}


def test_no_secret_is_ever_printed() -> None:
    assert doctor.redact("Bearer sk-abc123 failed", {"OPENAI_API_KEY": "sk-abc123"}) == (
        "Bearer <OPENAI_API_KEY> failed"
    )


# --- the local stack (`make doctor`) ---------------------------------------------------------


@pytest.fixture(scope="module")
def published(local_stack: StackClient) -> Iterator[StackClient]:
    """The stack as `deploy.sh studio` leaves it: the flow published, the number wired to it.
    Afterwards the number's webhooks are what they were and the flow is gone."""
    env = local_stack.env
    client = twilio_client(
        env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"], env["TWILIO_API_BASE_URL"]
    )
    [number] = client.incoming_phone_numbers.list(phone_number=env["TWILIO_FROM_NUMBER"])
    before = {"voice_url": number.voice_url or "", "sms_url": number.sms_url or ""}
    assert (
        publish_studio_flow(
            ["--generate-url", env["GENERATE_URL"], "--number", env["TWILIO_FROM_NUMBER"]]
        )
        == 0
    )
    yield local_stack
    client.incoming_phone_numbers(number.sid).update(**before)
    for flow in client.studio.v2.flows.list():
        if flow.friendly_name == FLOW_NAME:
            client.studio.v2.flows(flow.sid).delete()


SUBJECTS = (
    "settings",
    "function generate",
    "function composite",
    *(f"secret {name}" for name in configured_secrets()),
    "supabase key",
    "supabase migrations",
    "supabase RLS",
    "supabase bucket",
    "openai IMAGE_MODEL",
    "qstash token",
    "qstash signing keys",
    "qstash → composite",
    "qstash signed URL",
    "twilio number",
    "twilio wiring",
    "studio flow",
    "studio flow requests",
    "twilio messaging svc",
    "studio time",
)


def check(stack: StackClient, timeout_s: float = 10.0, **overrides: str) -> list[Line]:
    """Run every check on the local stack, with some of `.devstack/env` changed."""
    t = Target({**stack.env, **overrides}, False, "the local stack", self_test_timeout_s=timeout_s)
    return doctor.run_checks(t)


def studio_time_mark() -> str:
    """What the timing check says of the defaults (the stack sets no STORE_TIMEOUT_SECONDS)."""
    return doctor.judge_studio_time(doctor.DEFAULT_STORE_TIMEOUT_S, False, target()).mark


def assert_only(lines: list[Line], *failing: str) -> None:
    """Every line ✔ but `failing` (✘), and the Studio timing as its pure judge says."""
    expected = {item.subject: OK for item in lines} | {"studio time": studio_time_mark()}
    expected |= dict.fromkeys(failing, FAIL)
    assert marks(lines) == expected, "\n".join(item.render() for item in lines)


@pytest.mark.stack
def test_a_healthy_stack_passes_every_check(
    published: StackClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "env"
    published.stack.write_env_file(env_file)
    code = doctor.main(["--env-file", str(env_file)], environ={})
    out = capsys.readouterr().out
    # (The functions run in this process: their log lines are printed too.)
    printed = [text for text in out.splitlines() if text[:1] in (OK, WARN, FAIL)]
    lines = check(published)
    assert_only(lines)
    assert code == (1 if studio_time_mark() == FAIL else 0)
    assert len(printed) == len(lines)
    subjects = {item.subject for item in lines}
    everything_but_secrets = {subject for subject in SUBJECTS if not subject.startswith("secret")}
    assert everything_but_secrets | {"secret SAFETY_IDENTIFIER_SALT"} <= subjects
    assert "from Secret Manager" in line(lines, "secret SAFETY_IDENTIFIER_SALT").found
    assert "with its query" in line(lines, "qstash signed URL").found
    for value in configured_secrets().values():
        assert value not in out


@pytest.mark.stack
def test_a_missing_bucket(published: StackClient) -> None:
    lines = check(published, SUPABASE_BUCKET="no-such-bucket")
    assert_only(lines, "supabase bucket")
    assert "'no-such-bucket' does not exist" in line(lines, "supabase bucket").found


@pytest.mark.stack
def test_a_wrong_supabase_key(published: StackClient) -> None:
    lines = check(published, SUPABASE_SECRET_KEY="sb_secret_not_the_real_one_000000000000")
    assert marks(lines)["supabase key"] == FAIL
    assert "supabase bucket" not in marks(lines)  # the other Supabase checks are not run
    assert marks(lines)["qstash → composite"] == FAIL  # its record could not be read back
    assert "could not be read back" in line(lines, "qstash → composite").found
    assert published.sql("select * from public.self_tests") == []  # so it was never sent


@pytest.mark.stack
def test_a_wrong_signing_key_in_the_settings(published: StackClient) -> None:
    lines = check(published, QSTASH_CURRENT_SIGNING_KEY="sig_0000000000000000000000000000")
    assert_only(lines, "qstash signing keys")
    assert "QSTASH_CURRENT_SIGNING_KEY" in line(lines, "qstash signing keys").found


@pytest.mark.stack
def test_a_composite_with_a_wrong_signing_key_fails_the_self_test(
    published: StackClient, stack: StackClient, function_setting: Any
) -> None:
    function_setting("QSTASH_CURRENT_SIGNING_KEY", "sig_0000000000000000000000000000")
    lines = check(stack, timeout_s=2, QSTASH_CURRENT_SIGNING_KEY="sig_0000000000000000000000000000")
    assert marks(lines)["qstash signing keys"] == FAIL
    assert marks(lines)["qstash → composite"] == FAIL
    assert "did not confirm the self-test" in line(lines, "qstash → composite").found
    assert marks(lines)["qstash signed URL"] == WARN
    assert stack.sql("select * from public.self_tests") == []  # an unverified post records nothing


@pytest.mark.stack
def test_an_unsigned_self_test_is_refused_and_records_nothing(stack: StackClient) -> None:
    nonce = "unsigned-self-test-000000"
    reply = requests.post(
        f"{stack.env['COMPOSITE_URL']}?self_test={nonce}", json=self_test_body(nonce), timeout=5
    )
    assert reply.status_code == 401
    assert stack.sql("select * from public.self_tests where nonce = %s", nonce) == []


@pytest.mark.stack
def test_the_self_test_reports_a_sub_without_the_query(
    published: StackClient, stack: StackClient
) -> None:
    stack.qstash_config(sub_includes_query=False)
    try:
        lines = check(stack)
    finally:
        stack.qstash_config(sub_includes_query=True)
    assert_only(lines)
    assert "without its query" in line(lines, "qstash signed URL").found
    assert stack.sql("select * from public.self_tests") == []  # read back, then deleted


@pytest.fixture
def model_shutdown(published: StackClient) -> Iterator[Any]:
    """Move the OpenAI stand-in's shutdown date of a model; put it back afterwards."""
    base = published.env["OPENAI_BASE_URL"].removesuffix("/v1")
    moved: list[str] = []

    def move(model: str, shutdown: date | None) -> None:
        body = {"id": model, "shutdown_date": shutdown.isoformat() if shutdown else None}
        assert requests.post(f"{base}/__dev/models", json=body, timeout=5).status_code < 300
        moved.append(model)

    yield move
    for model in moved:
        requests.post(f"{base}/__dev/models", json={"id": model, "shutdown_date": None}, timeout=5)


@pytest.mark.stack
def test_a_retired_model(published: StackClient, model_shutdown: Any) -> None:
    model_shutdown("gpt-image-2.6-flare", date.today() - timedelta(days=1))
    lines = check(published)
    assert_only(lines, "openai IMAGE_MODEL")
    assert "404" in line(lines, "openai IMAGE_MODEL").found


@pytest.mark.stack
def test_a_model_about_to_retire_names_the_fallback(
    published: StackClient, model_shutdown: Any
) -> None:
    model_shutdown("gpt-image-2.6-flare", date.today() + timedelta(days=10))
    lines = check(published, IMAGE_MODEL_FALLBACK="gpt-image-2.6-sunburst")
    model = line(lines, "openai IMAGE_MODEL")
    assert model.mark == WARN and "in 10 days" in model.found
    assert "IMAGE_MODEL_FALLBACK gpt-image-2.6-sunburst takes over" in model.found
    assert line(lines, "openai IMAGE_MODEL_FALLBACK").mark == OK


@pytest.fixture
def number(published: StackClient) -> Iterator[Any]:
    """The stack's number through the twilio SDK; its webhooks are put back afterwards."""
    env = published.env
    client = twilio_client(
        env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"], env["TWILIO_API_BASE_URL"]
    )
    [found] = client.incoming_phone_numbers.list(phone_number=env["TWILIO_FROM_NUMBER"])
    yield client.incoming_phone_numbers(found.sid)
    client.incoming_phone_numbers(found.sid).update(
        voice_url=found.voice_url, sms_url=found.sms_url
    )


@pytest.mark.stack
def test_an_unwired_number(published: StackClient, number: Any) -> None:
    number.update(voice_url="", sms_url="")
    lines = check(published)
    assert_only(lines, "twilio wiring")
    wiring = line(lines, "twilio wiring")
    assert "go to nowhere" in wiring.found and wiring.fix and "deploy.studio" in wiring.fix


@pytest.mark.stack
def test_texts_may_go_straight_to_generate(published: StackClient, number: Any) -> None:
    number.update(sms_url=published.env["GENERATE_URL"])
    lines = check(published)
    assert_only(lines)
    assert "texts to generate" in line(lines, "twilio wiring").found


@pytest.mark.stack
@pytest.mark.parametrize(
    ("sid", "mark", "says"),
    [
        (DEFAULT_MESSAGING_SERVICE_SID, OK, "holds +15005550006"),
        ("MG" + "0" * 32, FAIL, "does not exist"),
    ],
)
def test_the_messaging_service(published: StackClient, sid: str, mark: str, says: str) -> None:
    env = published.env
    client = twilio_client(
        env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"], env["TWILIO_API_BASE_URL"]
    )
    judged = doctor.judge_messaging_service(client, sid, env["TWILIO_FROM_NUMBER"], target())
    assert judged.mark == mark and says in judged.found


# --- a deployment (`./deploy.sh doctor`, the fake gcloud) --------------------------------------


@pytest.fixture
def deployment(published: StackClient, tmp_path: Path) -> Iterator[tuple[Deployer, dict[str, str]]]:
    """deploy.sh's `secrets` and `deploy` run against the fake gcloud, with the functions'
    URLs then pointed at the local stack's, so that every check has something real to ask."""
    env = published.env
    deployer = Deployer(tmp_path)
    plain = {
        name: env[name]
        for name in (
            "SUPABASE_URL",
            "QSTASH_URL",
            "OPENAI_BASE_URL",
            "TWILIO_ACCOUNT_SID",
            "TWILIO_FROM_NUMBER",
        )
    }
    deployer.run("secrets", extra={**plain, **configured_secrets()})
    deployer.run("deploy", extra=plain)
    state_file = deployer.state / "state.json"
    state = json.loads(state_file.read_text())
    for name, setting in (("generate", "GENERATE_URL"), ("composite", "COMPOSITE_URL")):
        state["functions"][name]["uri"] = env[setting]
        for function in state["functions"].values():
            if setting in function["env"]:
                function["env"][setting] = env[setting]
    state_file.write_text(json.dumps(state))
    # Every command line the doctor's Python gets, through a wrapper named by PYTHON.
    argv_log = tmp_path / "python-argv.log"
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{argv_log}"\nexec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    extra = {**plain, "TWILIO_API_BASE_URL": env["TWILIO_API_BASE_URL"], "PYTHON": str(wrapper)}
    deployer.reset_log()
    yield deployer, extra


def doctor_lines(stdout: str) -> dict[str, str]:
    """subject -> the whole printed line."""
    found = {}
    for text in stdout.splitlines()[1:-1]:
        mark, rest = text[0], text[2:]
        for subject in SUBJECTS:
            if rest.startswith(subject + " "):
                found[subject] = mark + " " + rest
    return found


@pytest.mark.stack
def test_deploy_sh_doctor_runs_every_check_without_a_secret_on_a_command_line(
    deployment: tuple[Deployer, dict[str, str]], tmp_path: Path
) -> None:
    deployer, extra = deployment
    result = deployer.run("doctor", extra=extra, check=False)
    printed = doctor_lines(result.stdout)
    assert set(printed) == set(SUBJECTS), result.stdout + result.stderr
    failing = {s for s, text in printed.items() if not text.startswith(OK)} - {"studio time"}
    assert failing == set(), result.stdout
    assert result.returncode == (1 if studio_time_mark() == FAIL else 0)
    assert (
        "picture-line@picture-line-test.iam.gserviceaccount.com can read it"
        in printed["secret OPERATOR_KEY"]
    )
    assert printed["settings"].startswith(OK)
    # gcloud was asked for each secret's IAM policy and each function's description.
    assert len(deployer.commands("secrets", "get-iam-policy")) == len(configured_secrets())
    assert len(deployer.commands("functions", "describe")) >= 2
    command_lines = json.dumps(deployer.calls()) + (tmp_path / "python-argv.log").read_text()
    curl_log = deployer.state / "curl.jsonl"
    command_lines += curl_log.read_text() if curl_log.exists() else ""
    for value in configured_secrets().values():
        assert value not in command_lines
        assert value not in result.stdout + result.stderr


@pytest.mark.stack
def test_deploy_sh_doctor_finds_a_missing_secret(
    deployment: tuple[Deployer, dict[str, str]],
) -> None:
    deployer, extra = deployment
    state_file = deployer.state / "state.json"
    state = json.loads(state_file.read_text())
    del state["secrets"]["OPERATOR_KEY"]
    state["secret_iam"]["SAFETY_IDENTIFIER_SALT"] = []  # and one the functions cannot read
    state_file.write_text(json.dumps(state))
    result = deployer.run("doctor", extra=extra, check=False)
    printed = doctor_lines(result.stdout)
    assert result.returncode != 0
    assert printed["secret OPERATOR_KEY"].startswith(FAIL)
    assert "not in Secret Manager" in printed["secret OPERATOR_KEY"]
    assert "fix: ./deploy.sh secrets" in printed["secret OPERATOR_KEY"]
    salt = printed["secret SAFETY_IDENTIFIER_SALT"]
    assert (
        salt.startswith(FAIL)
        and "gcloud secrets add-iam-policy-binding SAFETY_IDENTIFIER_SALT" in salt
    )


def test_deploy_sh_doctor_dry_run_runs_nothing(tmp_path: Path) -> None:
    deployer = Deployer(tmp_path)
    result = deployer.run("--dry-run", "doctor", extra={"PYTHON": sys.executable})
    assert deployer.calls() == []
    assert "-m deploy.doctor --gcloud --project=picture-line-test" in result.stdout


def test_make_doctor_without_a_stack_says_to_start_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert doctor.main(["--env-file", str(tmp_path / "env")], environ=dict(os.environ)) == 2
    assert "make stack" in capsys.readouterr().err
