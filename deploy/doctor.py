"""`./deploy.sh doctor` and `make doctor`: prove that a deployment works, one line per check.

    python -m deploy.doctor --env-file .devstack/env   the local stack (what `make doctor` runs)
    python -m deploy.doctor --gcloud --project=P ...   a deployment (`./deploy.sh doctor` runs it)

Each line is ✔ (fine), ⚠ (works, act soon) or ✘ (broken), what was found, and for a ✘ the
command or console step that fixes it. The exit status is 1 when any line is ✘.

It changes nothing, but for one message: the QStash self-test publishes a signed message to
`composite`, which does no work and records only what it saw (shared/self_test.py); the doctor
reads that record back and deletes it. Secrets come from the environment (`deploy.sh` puts them
there from Secret Manager) or, for the local stack, from its Secret Manager stand-in; they are
never printed, and none is put on a command line.

The checks, in the order they run. Each `check_*` function does the I/O; the `judge_*`
functions beside it decide ✔, ⚠ or ✘ from what was found, and do no I/O.

    settings      the functions' settings load (shared/settings.py)
    functions     both functions answer a GET with 405; their URL settings are their URLs
    secrets       every secret each function needs exists, and its service account can read it
    supabase      the secret key works; the migrations are applied; RLS is on; the bucket is public
    openai        IMAGE_MODEL (and IMAGE_MODEL_FALLBACK) is served and not about to shut down
    qstash        the token works; the signing keys are QStash's; a self-test through QStash
    twilio        the number is ours and takes MMS, and is wired to the flow; the flow is valid
                  and calls generate with the flow key; the Messaging Service holds the number
    studio time   generate's slowest Studio answer fits Studio's 10 s
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import requests
from postgrest.exceptions import APIError
from storage3.utils import StorageException
from supabase import Client as SupabaseClient
from supabase import ClientOptions, create_client
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client as TwilioClient

from deploy.studio import FLOW_NAME, twilio_client
from shared import deadline, moderation, publishing
from shared.endpoints import self_test_url
from shared.errors import AppError, ConfigError
from shared.image_models import RETIRED_MODELS
from shared.secrets import SecretSource
from shared.self_test import (
    SelfTestResult,
    forget_self_test,
    read_self_test,
    self_test_body,
)
from shared.settings import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_OPENAI_BASE_URL,
    DEFAULT_QSTASH_URL,
    Settings,
    load_settings,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_SCRIPT = ROOT / "deploy.sh"
MIGRATIONS = ROOT / "supabase" / "migrations"

OK, WARN, FAIL = "✔", "⚠", "✘"
HTTP_TIMEOUT = (3.05, 10.0)
# Studio's HTTP widget takes its `failed` branch without a 2xx within 10 s [DOC].
STUDIO_LIMIT_S = 10.0
# A model that shuts down within this many days is a warning [DOC: at least 3 months' notice].
SHUTDOWN_WARNING_DAYS = 30
SELF_TEST_TIMEOUT_S = 30.0
# Tables that hold phone numbers, prompts, tokens or the service's state: row level security
# must be on (doctor_schema() reports them; see the languages migration).
RLS_TABLES = (
    "requests",
    "opt_outs",
    "pending_photos",
    "gallery_links",
    "person_languages",
    "blocked_numbers",
    "service_state",
)
# Roles that let a member read a secret's value [DOC secret-manager/docs/access-control].
SECRET_READER_ROLES = frozenset(
    {"roles/secretmanager.secretAccessor", "roles/secretmanager.admin", "roles/owner"}
)
FUNCTIONS = {"generate": "GENERATE_URL", "composite": "COMPOSITE_URL"}
DEFAULT_STORE_TIMEOUT_S = Settings.store_timeout_s  # what the functions use when it is unset


# --- one line of the report ---------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    mark: str  # OK, WARN or FAIL
    subject: str  # what was checked, e.g. "openai IMAGE_MODEL"
    found: str
    fix: str | None = None

    def render(self, width: int = 20) -> str:
        text = f"{self.mark} {self.subject:<{width}} {self.found}"
        return f"{text} — fix: {self.fix}" if self.fix else text


def ok(subject: str, found: str) -> Line:
    return Line(OK, subject, found)


def warn(subject: str, found: str, fix: str | None = None) -> Line:
    return Line(WARN, subject, found, fix)


def fail(subject: str, found: str, fix: str) -> Line:
    return Line(FAIL, subject, found, fix)


# --- what is checked, and where its settings and secrets come from --------------------------


@dataclass(frozen=True)
class DeployedFunction:
    """What `gcloud functions describe --format=json` says of one deployed function."""

    uri: str
    service_account: str | None
    env: dict[str, str]
    mounted_secrets: frozenset[str]


@dataclass
class Target:
    """A deployment (`deployed`: found through gcloud) or the local stack, and how to fix it."""

    environ: dict[str, str]
    deployed: bool
    where: str  # for the report's first line
    project: str | None = None
    region: str | None = None
    service_account: str | None = None
    functions: dict[str, DeployedFunction | None] = field(default_factory=dict)
    self_test_timeout_s: float = SELF_TEST_TIMEOUT_S
    today: date = field(default_factory=lambda: datetime.now(UTC).date())
    http: requests.Session = field(default_factory=requests.Session)
    revealed: dict[str, str] = field(default_factory=dict)  # secret values read, to redact

    def setting(self, name: str, default: str | None = None) -> str | None:
        return self.environ.get(name, "").strip() or default

    def secret(self, name: str) -> str | None:
        """A secret's value (from the environment; locally also the Secret Manager stand-in)."""
        value = self.environ.get(name) or None
        if value is None and not self.deployed:
            source = SecretSource(
                self.environ,
                project=self.setting("GOOGLE_CLOUD_PROJECT"),
                endpoint=self.setting("SECRET_MANAGER_ENDPOINT"),
            )
            try:
                value = source.get(name)
            except ConfigError:
                value = None
        if value:
            self.revealed[name] = value
        return value

    # How to fix things here: in deploy.env and Secret Manager, or in the local stack.

    def fix_setting(self, *changes: str) -> str:
        """How to change settings, each given as NAME=value."""
        wanted = " ".join(changes)
        if not self.deployed:
            return f"restart `make stack` with {wanted} in its environment"
        passed = plain_settings(DEPLOY_SCRIPT.read_text())
        missing = [c.split("=", 1)[0] for c in changes if c.split("=", 1)[0] not in passed]
        note = f" (first add {' '.join(missing)} to PLAIN_SETTINGS in deploy.sh)" if missing else ""
        return f"set {wanted} in deploy.env, then ./deploy.sh{note}"

    def fix_secret(self, name: str) -> str:
        if self.deployed:
            return f"export {name}=<the right value>; ./deploy.sh secrets; ./deploy.sh"
        return f"restart `make stack` with the right {name}"

    def fix_deploy(self) -> str:
        return "./deploy.sh" if self.deployed else "restart `make stack`"

    def fix_logs(self) -> str:
        return "read ./deploy.sh logs" if self.deployed else "read `make stack`'s output"

    def fix_studio(self) -> str:
        if self.deployed:
            return "./deploy.sh studio"
        return (
            "source .devstack/env && .venv/bin/python -m deploy.studio"
            ' --generate-url "$GENERATE_URL" --number "$TWILIO_FROM_NUMBER"'
        )


def parse_env_file(text: str) -> dict[str, str]:
    """`.devstack/env` as `make stack` writes it: `export NAME='value'` lines."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            words = words[1:]
        for word in words:
            name, equals, value = word.partition("=")
            if equals and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                found[name] = value
    return found


def local_target(env_file: Path, environ: Mapping[str, str]) -> Target:
    """The local stack: what the functions of `make stack` were given (the file wins)."""
    return Target(
        {**environ, **parse_env_file(env_file.read_text())}, False, f"the local stack ({env_file})"
    )


def deployed_target(
    environ: Mapping[str, str], project: str, region: str, service_account: str
) -> Target:
    """A deployment: deploy.env and the environment, then what the functions were deployed with."""
    functions = {name: describe_function(name, project, region) for name in FUNCTIONS}
    settings = dict(environ)
    for name in ("composite", "generate"):
        if (function := functions[name]) is not None:
            settings.update(function.env)
    for name, url_setting in FUNCTIONS.items():
        if (function := functions[name]) is not None:
            settings[url_setting] = function.uri
    return Target(
        settings,
        True,
        f"the deployment in project {project} ({region})",
        project=project,
        region=region,
        service_account=service_account,
        functions=functions,
    )


def gcloud_json(*args: str, project: str | None) -> tuple[Any, str | None]:
    """Run `gcloud ... --format=json`: (its parsed output, None) or (None, its error line)."""
    command = ["gcloud", *([f"--project={project}"] if project else []), *args, "--format=json"]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"gcloud could not run ({type(exc).__name__})"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"gcloud exited {result.returncode}"]
        return None, lines[-1][:300]
    try:
        return json.loads(result.stdout or "null"), None
    except ValueError:
        return None, "gcloud printed something other than JSON"


def describe_function(name: str, project: str, region: str) -> DeployedFunction | None:
    found, _ = gcloud_json(
        "functions", "describe", name, "--gen2", f"--region={region}", project=project
    )
    service = found.get("serviceConfig") if isinstance(found, dict) else None
    if not isinstance(service, dict) or not service.get("uri"):
        return None
    mounted = service.get("secretEnvironmentVariables") or []
    return DeployedFunction(
        uri=str(service["uri"]),
        service_account=service.get("serviceAccountEmail"),
        env={str(k): str(v) for k, v in (service.get("environmentVariables") or {}).items()},
        mounted_secrets=frozenset(
            str(item.get("key")) for item in mounted if isinstance(item, dict)
        ),
    )


# --- settings ------------------------------------------------------------------------------


def check_settings(t: Target) -> Iterator[Line]:
    try:
        load_settings(t.environ)
    except AppError as exc:
        fix = "fix them in deploy.env, then ./deploy.sh" if t.deployed else t.fix_deploy()
        yield fail("settings", exc.message, fix)
        return
    yield ok("settings", "the functions' settings load")


# --- functions -----------------------------------------------------------------------------


def check_functions(t: Target) -> Iterator[Line]:
    problems = url_setting_problems(t.functions) if t.deployed else {}
    for name, url_setting in FUNCTIONS.items():
        url = t.setting(url_setting)
        status, error = None, None
        if url:
            try:
                status = t.http.get(url, timeout=HTTP_TIMEOUT, allow_redirects=False).status_code
            except requests.RequestException as exc:
                error = type(exc).__name__
        yield judge_function(name, url, status, error, problems.get(name, []), t)


def url_setting_problems(functions: Mapping[str, DeployedFunction | None]) -> dict[str, list[str]]:
    """Where a deployed function's URL settings are not the URLs the functions really have."""
    problems: dict[str, list[str]] = {}
    urls = {name: f.uri for name, f in functions.items() if f is not None}
    for name, function in functions.items():
        if function is None:
            continue
        for other, url_setting in FUNCTIONS.items():
            configured = function.env.get(url_setting)
            if configured is not None and other in urls and configured != urls[other]:
                problems.setdefault(name, []).append(
                    f"its {url_setting} is {configured}, but {other} is at {urls[other]}"
                )
    return problems


def judge_function(
    name: str,
    url: str | None,
    status: int | None,
    error: str | None,
    problems: list[str],
    t: Target,
) -> Line:
    subject = f"function {name}"
    if not url:
        return fail(subject, "not deployed (no URL)", t.fix_deploy())
    if error is not None:
        return fail(subject, f"GET {url} failed: {error}", t.fix_deploy())
    if status == 405:
        if problems:
            return fail(subject, f"up, but {'; '.join(problems)}", t.fix_deploy())
        return ok(subject, f"GET {url} → 405 (up; it takes only POST)")
    if status == 404:
        return fail(subject, f"GET {url} → 404: no function there", t.fix_deploy())
    if status == 403 and t.deployed:
        fix = (
            f"gcloud functions add-invoker-policy-binding {name} --region={t.region}"
            f" --project={t.project} --member=allUsers"
        )
        return fail(
            subject, f"GET {url} → 403: not public, so Twilio and QStash cannot call it", fix
        )
    if status is not None and status >= 500:
        return fail(subject, f"GET {url} → {status}: it cannot start", t.fix_logs())
    return fail(subject, f"GET {url} → {status}, expected 405", t.fix_logs())


# --- secrets -------------------------------------------------------------------------------


def secrets_needed(script: str) -> dict[str, tuple[str, ...]]:
    """GENERATE_SECRETS and COMPOSITE_SECRETS from deploy.sh: the secrets each function mounts."""
    needed: dict[str, tuple[str, ...]] = {}
    for name in FUNCTIONS:
        match = re.search(rf"^{name.upper()}_SECRETS=\(([^)]*)\)", script, re.MULTILINE)
        needed[name] = tuple(match.group(1).split()) if match else ()
    return needed


def plain_settings(script: str) -> frozenset[str]:
    """PLAIN_SETTINGS from deploy.sh: the settings it passes from deploy.env to the functions."""
    match = re.search(r"^PLAIN_SETTINGS=\(([^)]*)\)", script, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


@dataclass(frozen=True)
class DeployedSecret:
    """What Secret Manager and the functions say of one secret."""

    name: str
    users: tuple[str, ...]  # the functions that need it
    policy_error: str | None  # None: its IAM policy was read
    has_value: bool  # its latest version could be read (by deploy.sh)
    readers: frozenset[str]  # members that may read it, on the secret or the project
    accounts: dict[str, str]  # function -> the service account it runs as
    unmounted: tuple[str, ...]  # deployed functions that need it but do not mount it


def check_secrets(t: Target) -> Iterator[Line]:
    needed = secrets_needed(DEPLOY_SCRIPT.read_text())
    names = list(dict.fromkeys(name for names in needed.values() for name in names))
    project_readers: frozenset[str] = frozenset()
    if t.deployed:
        policy, _ = gcloud_json("projects", "get-iam-policy", t.project or "", project=t.project)
        project_readers = policy_readers(policy)
    for name in names:
        users = tuple(function for function, needs in needed.items() if name in needs)
        if not t.deployed:
            yield judge_local_secret(name, users, local_secret_source(t, name), t)
            continue
        policy, error = gcloud_json("secrets", "get-iam-policy", name, project=t.project)
        accounts = {
            user: (deployed.service_account if deployed else None) or t.service_account or ""
            for user in users
            for deployed in [t.functions.get(user)]
        }
        unmounted = tuple(
            user
            for user in users
            if (deployed := t.functions.get(user)) is not None
            and name not in deployed.mounted_secrets
        )
        found = DeployedSecret(
            name=name,
            users=users,
            policy_error=error,
            has_value=bool(t.secret(name)),
            readers=policy_readers(policy) | project_readers,
            accounts=accounts,
            unmounted=unmounted,
        )
        yield judge_deployed_secret(found, t)


def policy_readers(policy: Any) -> frozenset[str]:
    """The members an IAM policy (gcloud's JSON) lets read a secret's value."""
    bindings = policy.get("bindings", []) if isinstance(policy, dict) else []
    return frozenset(
        str(member)
        for binding in bindings
        if isinstance(binding, dict) and binding.get("role") in SECRET_READER_ROLES
        for member in binding.get("members", [])
    )


def judge_deployed_secret(s: DeployedSecret, t: Target) -> Line:
    subject = f"secret {s.name}"
    needed_by = " and ".join(s.users)
    if s.policy_error is not None:
        if "NOT_FOUND" in s.policy_error:
            return fail(
                subject, f"not in Secret Manager (needed by {needed_by})", "./deploy.sh secrets"
            )
        return fail(
            subject,
            f"its IAM policy could not be read: {s.policy_error}",
            "gcloud auth login (as an account that may administer Secret Manager)",
        )
    if not s.has_value:
        return fail(subject, "exists but has no readable version", "./deploy.sh secrets")
    for user, account in s.accounts.items():
        if f"serviceAccount:{account}" not in s.readers:
            fix = (
                f"gcloud secrets add-iam-policy-binding {s.name} --project={t.project}"
                f" --member=serviceAccount:{account} --role=roles/secretmanager.secretAccessor"
            )
            return fail(subject, f"{user} runs as {account or '?'}, which cannot read it", fix)
    if s.unmounted:
        return fail(subject, f"{' and '.join(s.unmounted)} does not mount it", "./deploy.sh")
    accounts = ", ".join(sorted(set(s.accounts.values())))
    return ok(subject, f"exists; {accounts} can read it ({needed_by})")


def local_secret_source(t: Target, name: str) -> str | None:
    if t.environ.get(name):
        return "the environment"
    return "Secret Manager (its stand-in)" if t.secret(name) else None


def judge_local_secret(name: str, users: tuple[str, ...], source: str | None, t: Target) -> Line:
    subject = f"secret {name}"
    if source is None:
        return fail(subject, "neither in the environment nor in Secret Manager", t.fix_secret(name))
    return ok(subject, f"readable from {source}; needed by {' and '.join(users)}")


# --- supabase ------------------------------------------------------------------------------


def supabase(t: Target) -> SupabaseClient | None:
    url, key = t.setting("SUPABASE_URL"), t.secret("SUPABASE_SECRET_KEY")
    if not url or not key:
        return None
    options = ClientOptions(postgrest_client_timeout=10, storage_client_timeout=10)
    return create_client(url, key, options)


def check_supabase(t: Target) -> Iterator[Line]:
    client = supabase(t)
    if client is None:
        yield fail(
            "supabase",
            "SUPABASE_URL or SUPABASE_SECRET_KEY is missing",
            t.fix_secret("SUPABASE_SECRET_KEY"),
        )
        return
    _, key_error = postgrest(lambda: client.table("requests").select("id").limit(1).execute())
    key = judge_supabase_key(key_error, t)
    yield key
    if key.mark == FAIL:
        return  # every other Supabase check would fail the same way
    schema, schema_error = postgrest(lambda: client.rpc("doctor_schema").execute())
    yield judge_migrations(latest_migration_file(MIGRATIONS), schema, schema_error, t)
    yield judge_rls(schema)
    bucket_name = t.setting("SUPABASE_BUCKET", "pictures") or "pictures"
    try:
        bucket: Any = client.storage.get_bucket(bucket_name)
        public, bucket_error = bool(bucket.public), None
    except StorageException as exc:
        public, bucket_error = False, str(getattr(exc, "message", "") or exc)[:200]
    except httpx.HTTPError as exc:
        public, bucket_error = False, f"Supabase is unreachable ({type(exc).__name__})"
    yield judge_bucket(bucket_name, public, bucket_error, t)


def postgrest(call: Callable[[], Any]) -> tuple[Any, APIError | str | None]:
    """(the answer's data, None), or (None, its APIError or the transport error's name)."""
    try:
        return call().data, None
    except APIError as exc:
        return None, exc
    except httpx.HTTPError as exc:
        return None, f"Supabase is unreachable ({type(exc).__name__})"


def judge_supabase_key(error: APIError | str | None, t: Target) -> Line:
    subject = "supabase key"
    if error is None:
        return ok(subject, "SUPABASE_SECRET_KEY reads the requests table")
    if isinstance(error, str):
        return fail(subject, error, "check SUPABASE_URL")
    code = str(error.code or "")
    if code.startswith("PGRST2"):  # PostgREST answered: the key passed the gateway
        return ok(subject, "SUPABASE_SECRET_KEY is accepted")
    if code == "42501":
        return fail(
            subject,
            "the key may not read the requests table: is it the publishable key?",
            "Supabase → Project Settings → API keys → a secret key (sb_secret_…); "
            + t.fix_secret("SUPABASE_SECRET_KEY"),
        )
    return fail(
        subject,
        f"Supabase refused SUPABASE_SECRET_KEY ({error.message})",
        t.fix_secret("SUPABASE_SECRET_KEY"),
    )


def latest_migration_file(directory: Path) -> str:
    """The version (the file name up to its first `_`) of the newest migration in the repo."""
    versions = sorted(path.name.split("_", 1)[0] for path in directory.glob("*.sql"))
    return versions[-1] if versions else ""


def judge_migrations(latest: str, schema: Any, error: APIError | str | None, t: Target) -> Line:
    subject = "supabase migrations"
    push = "supabase link --project-ref <ref> && supabase db push" if t.deployed else t.fix_deploy()
    if error is not None or not isinstance(schema, dict):
        return fail(
            subject, f"not applied: the database has no doctor_schema() (migration {latest})", push
        )
    recorded = str(schema.get("latest_migration") or "")
    defined_by = str(schema.get("doctor_migration") or "")
    repair = f"supabase migration repair --status applied {latest}"
    if recorded >= latest:
        return ok(subject, f"applied up to {recorded} (the newest in supabase/migrations)")
    if recorded:
        also = f"; if you applied them with psql: {repair}" if defined_by >= latest else ""
        return fail(subject, f"applied up to {recorded}, but the newest is {latest}", push + also)
    # No history: applied with psql. This migration's own function proves at least itself.
    if defined_by >= latest:
        return ok(subject, f"applied up to {defined_by} at least (no migration history: psql?)")
    return fail(
        subject,
        f"{latest} may not be applied: there is no migration history, and doctor_schema()"
        f" is from {defined_by}",
        f"{push}; if you applied them with psql: {repair}",
    )


def judge_rls(schema: Any) -> Line:
    subject = "supabase RLS"
    rls = schema.get("rls") if isinstance(schema, dict) else None
    if not isinstance(rls, dict):
        return fail(
            subject, "unknown: doctor_schema() did not answer", "apply the migrations (see above)"
        )
    missing = [table for table in RLS_TABLES if table not in rls]
    if missing:
        return fail(
            subject,
            f"no table {', '.join(missing)}: the migrations are not all applied",
            "apply the migrations (see above)",
        )
    off = [table for table in RLS_TABLES if rls.get(table) is not True]
    if off:
        tables = ", ".join(off)
        return fail(
            subject,
            f"row level security is off on {tables}: the publishable key can read them",
            "Supabase → SQL editor: "
            + " ".join(f"alter table public.{table} enable row level security;" for table in off),
        )
    return ok(subject, f"row level security is on for {', '.join(RLS_TABLES)}")


def judge_bucket(name: str, public: bool, error: str | None, t: Target) -> Line:
    subject = "supabase bucket"
    if error is not None:
        missing = "not found" in error.lower() or "404" in error
        found = f"bucket {name!r} does not exist" if missing else f"bucket {name!r}: {error}"
        fix = (
            "apply the migrations (the first creates 'pictures'), or Supabase → Storage → New"
            f" bucket {name!r}, Public"
        )
        if name != "pictures":
            fix += f"; or {t.fix_setting('SUPABASE_BUCKET=pictures')}"
        return fail(subject, found, fix)
    if not public:
        return fail(
            subject,
            f"bucket {name!r} is private: Twilio cannot fetch the pictures",
            f"Supabase → Storage → {name} → Edit bucket → Public bucket on",
        )
    return ok(subject, f"bucket {name!r} exists and is public")


# --- openai --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFound:
    """What GET /v1/models/{id} answered."""

    status: int | None
    shutdown_date: str | None = None  # YYYY-MM-DD or None (none announced)
    error: str | None = None  # the transport error, when there was no answer


def check_image_models(t: Target) -> Iterator[Line]:
    model = t.setting("IMAGE_MODEL", DEFAULT_IMAGE_MODEL) or DEFAULT_IMAGE_MODEL
    fallback = t.setting("IMAGE_MODEL_FALLBACK")
    yield judge_model("IMAGE_MODEL", model, look_up_model(t, model), t.today, fallback, t)
    if fallback:
        yield judge_model(
            "IMAGE_MODEL_FALLBACK", fallback, look_up_model(t, fallback), t.today, None, t
        )


def look_up_model(t: Target, model: str) -> ModelFound:
    base = t.setting("OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL) or DEFAULT_OPENAI_BASE_URL
    headers = {"Authorization": f"Bearer {t.secret('OPENAI_API_KEY') or ''}"}
    try:
        reply = t.http.get(
            f"{base}/models/{quote(model, safe='')}", headers=headers, timeout=HTTP_TIMEOUT
        )
    except requests.RequestException as exc:
        return ModelFound(None, error=type(exc).__name__)
    shutdown = None
    if reply.status_code == 200:
        try:
            shutdown = reply.json().get("shutdown_date")
        except (ValueError, AttributeError):
            return ModelFound(200, error="an answer that is not a model")
    return ModelFound(reply.status_code, shutdown if isinstance(shutdown, str) else None)


def judge_model(
    setting: str, model: str, found: ModelFound, today: date, fallback: str | None, t: Target
) -> Line:
    subject = f"openai {setting}"
    instead = RETIRED_MODELS.get(model) or fallback or "<a current model: GET /v1/models>"
    if found.status == 401:
        return fail(subject, "OPENAI_API_KEY was refused (401)", t.fix_secret("OPENAI_API_KEY"))
    if found.status == 404:
        return fail(
            subject,
            f"{model} does not exist or was shut down (404)",
            t.fix_setting(f"{setting}={instead}"),
        )
    if found.status != 200 or found.error:
        why = found.error or f"HTTP {found.status}"
        return fail(
            subject, f"GET /models/{model} failed: {why}", "try again; see status.openai.com"
        )
    if found.shutdown_date is None:
        return ok(subject, f"{model} is served; no shutdown announced")
    try:
        shutdown = date.fromisoformat(found.shutdown_date)
    except ValueError:
        return warn(subject, f"{model} has an unreadable shutdown_date {found.shutdown_date!r}")
    days = (shutdown - today).days
    if days <= 0:
        return fail(
            subject, f"{model} shut down on {shutdown}", t.fix_setting(f"{setting}={instead}")
        )
    if days <= SHUTDOWN_WARNING_DAYS:
        if setting != "IMAGE_MODEL":
            then = ""
        elif fallback:
            then = f"; IMAGE_MODEL_FALLBACK {fallback} takes over then"
        else:
            then = "; no IMAGE_MODEL_FALLBACK is set, so requests will fail then"
        found_text = f"{model} shuts down on {shutdown}, in {days} days{then}"
        return warn(
            subject, found_text, f"before {shutdown}: {t.fix_setting(f'{setting}={instead}')}"
        )
    return ok(subject, f"{model} is served; it shuts down on {shutdown}, in {days} days")


# --- qstash --------------------------------------------------------------------------------


def check_qstash(t: Target) -> Iterator[Line]:
    base = (t.setting("QSTASH_URL", DEFAULT_QSTASH_URL) or DEFAULT_QSTASH_URL).rstrip("/")
    token = t.secret("QSTASH_TOKEN") or ""
    try:
        reply = t.http.get(
            f"{base}/v2/keys", headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT
        )
        status, error = reply.status_code, None
    except requests.RequestException as exc:
        reply, status, error = None, None, type(exc).__name__
    yield judge_qstash_token(base, status, error, t)
    if reply is None or status != 200:
        return
    try:
        keys = reply.json()
    except ValueError:
        keys = None
    configured = (t.secret("QSTASH_CURRENT_SIGNING_KEY"), t.secret("QSTASH_NEXT_SIGNING_KEY"))
    yield judge_signing_keys(keys, configured, t)
    yield from judge_self_test(run_self_test(t, base, token), t)


def judge_qstash_token(base: str, status: int | None, error: str | None, t: Target) -> Line:
    subject = "qstash token"
    if error is not None:
        return fail(
            subject,
            f"{base} is unreachable ({error})",
            t.fix_setting("QSTASH_URL=<your region's URL>"),
        )
    if status == 200:
        return ok(subject, f"QSTASH_TOKEN works at {base}")
    if status in (401, 403):
        return fail(
            subject,
            f"{base} refused QSTASH_TOKEN ({status})",
            "Upstash console → QStash → Request Builder: copy QSTASH_TOKEN; "
            + t.fix_secret("QSTASH_TOKEN"),
        )
    return fail(subject, f"GET {base}/v2/keys → {status}", "try again; see status.upstash.com")


def judge_signing_keys(keys: Any, configured: tuple[str | None, str | None], t: Target) -> Line:
    subject = "qstash signing keys"
    if not isinstance(keys, dict):
        return fail(subject, "QStash's /v2/keys answer has no keys", "try again")
    wrong = [
        name
        for name, mine, theirs in (
            ("QSTASH_CURRENT_SIGNING_KEY", configured[0], keys.get("current")),
            ("QSTASH_NEXT_SIGNING_KEY", configured[1], keys.get("next")),
        )
        if not (
            mine and isinstance(theirs, str) and hmac.compare_digest(mine.encode(), theirs.encode())
        )
    ]
    if wrong:
        console = "Upstash console → QStash → Signing Keys: copy both; "
        return fail(
            subject, f"{' and '.join(wrong)} differ from QStash's", console + t.fix_secret(wrong[0])
        )
    return ok(subject, "QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY are QStash's")


@dataclass(frozen=True)
class SelfTestOutcome:
    """How one self-test went: why it was not sent, or what composite recorded."""

    not_sent: str | None = None
    result: SelfTestResult | None = None  # None: no record came back in time
    read_error: str | None = None
    waited_s: float = 0.0


def run_self_test(t: Target, qstash: str, token: str) -> SelfTestOutcome:
    """Publish one signed message to composite through QStash, and wait for its record.

    URL: COMPOSITE_URL?self_test=<nonce>; body {"picture_line": "self_test", "nonce": <nonce>};
    no retries, so a refused self-test costs one message. The qstash SDK appends the
    destination to /v2/publish/ as it is, query included [SDK].
    """
    composite = t.setting("COMPOSITE_URL")
    client = supabase(t)
    if not composite or client is None:
        return SelfTestOutcome("COMPOSITE_URL or Supabase is not configured")
    nonce = secrets.token_urlsafe(18)
    try:
        read_self_test(client, nonce)  # a record that cannot be read back is not worth sending
    except AppError as exc:
        return SelfTestOutcome(f"its record could not be read back from Supabase ({exc.message})")
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Upstash-Retries": "0",
        "Upstash-Label": "picture-line-doctor",
    }
    started = time.monotonic()
    try:
        reply = t.http.post(
            f"{qstash}/v2/publish/{self_test_url(composite, nonce)}",
            data=json.dumps(self_test_body(nonce)),
            headers=headers,
            timeout=HTTP_TIMEOUT,
        )
    except requests.RequestException as exc:
        return SelfTestOutcome(f"QStash is unreachable ({type(exc).__name__})")
    if reply.status_code >= 300:
        return SelfTestOutcome(f"QStash refused it: HTTP {reply.status_code} {reply.text[:200]}")
    result, read_error = None, None
    try:
        while result is None and time.monotonic() - started < t.self_test_timeout_s:
            time.sleep(0.2)
            result = read_self_test(client, nonce)
    except AppError as exc:
        read_error = exc.message
    finally:
        with contextlib.suppress(AppError):  # else the next run removes it, a day old
            forget_self_test(client, nonce)
    return SelfTestOutcome(None, result, read_error, time.monotonic() - started)


def judge_self_test(outcome: SelfTestOutcome, t: Target) -> list[Line]:
    subject, sub = "qstash → composite", "qstash signed URL"
    if outcome.not_sent is not None:
        fix = "fix the supabase and qstash lines above, then run the doctor again"
        return [fail(subject, f"no self-test sent: {outcome.not_sent}", fix)]
    if outcome.read_error is not None:
        found = f"the self-test's record could not be read: {outcome.read_error}"
        return [fail(subject, found, "fix the supabase lines above")]
    if outcome.result is None:
        found = (
            f"composite did not confirm the self-test within {t.self_test_timeout_s:.0f} s:"
            " QStash could not reach it, or its signature check refused it"
        )
        fix = (
            f"{t.fix_logs()} for 'signature': COMPOSITE_URL must be composite's URL exactly as"
            " QStash calls it, and its QSTASH_*_SIGNING_KEY QStash's"
        )
        return [fail(subject, found, fix), warn(sub, "unknown: the self-test did not come back")]
    lines = [
        ok(
            subject,
            f"a signed self-test reached composite and verified, in {outcome.waited_s:.1f} s",
        )
    ]
    if not outcome.result.query_arrived:
        lines.append(
            warn(sub, "the ?self_test= query did not reach composite (composite does not need it)")
        )
    elif outcome.result.sub_included_query:
        lines.append(
            ok(sub, "QStash signs the URL with its query (sub = COMPOSITE_URL?self_test=…)")
        )
    else:
        lines.append(
            ok(
                sub,
                "QStash signs the URL without its query; composite accepts that (the signed body"
                " names the request)",
            )
        )
    return lines


# --- twilio --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberFound:
    phone_number: str
    capabilities: dict[str, bool]
    voice_url: str
    sms_url: str


@dataclass(frozen=True)
class FlowFound:
    sid: str
    status: str
    webhook_url: str
    definition: dict[str, Any]
    problems: tuple[str, ...]  # what Studio's validation said, if it refused the definition


def check_twilio(t: Target) -> Iterator[Line]:
    account, token = t.setting("TWILIO_ACCOUNT_SID"), t.secret("TWILIO_AUTH_TOKEN")
    number = t.setting("TWILIO_FROM_NUMBER")
    if not account or not token:
        yield fail(
            "twilio",
            "TWILIO_ACCOUNT_SID or TWILIO_AUTH_TOKEN is missing",
            t.fix_secret("TWILIO_AUTH_TOKEN"),
        )
        return
    if not number:
        yield fail(
            "twilio number",
            "TWILIO_FROM_NUMBER is not set",
            t.fix_setting("TWILIO_FROM_NUMBER=+1…"),
        )
        return
    client = twilio_client(account, token, t.setting("TWILIO_API_BASE_URL"))
    try:
        found = find_number(client, number)
        flow = find_flow(client)
    except TwilioRestException as exc:
        yield fail(
            "twilio", f"Twilio refused: {exc.code} {exc.msg}", t.fix_secret("TWILIO_AUTH_TOKEN")
        )
        return
    except TwilioException as exc:
        yield fail(
            "twilio", f"Twilio refused: {type(exc).__name__}", t.fix_secret("TWILIO_AUTH_TOKEN")
        )
        return
    yield judge_number(number, account, found)
    if found is not None:
        yield judge_wiring(found, flow, t.setting("GENERATE_URL"), t)
    yield judge_flow(flow, t)
    if flow is not None:
        yield judge_flow_content(flow, t.setting("GENERATE_URL"), t.secret("STUDIO_FLOW_KEY"), t)
    yield judge_messaging_service(client, t.setting("TWILIO_MESSAGING_SERVICE_SID"), number, t)


def find_number(client: TwilioClient, number: str) -> NumberFound | None:
    for found in client.incoming_phone_numbers.list(phone_number=number):
        if found.phone_number == number:
            capabilities = {
                str(k).lower(): v is True for k, v in (found.capabilities or {}).items()
            }
            return NumberFound(number, capabilities, found.voice_url or "", found.sms_url or "")
    return None


def find_flow(client: TwilioClient) -> FlowFound | None:
    """Our flow (by name, as `deploy.sh studio` made it), checked by Studio's own validation."""
    listed = [flow for flow in client.studio.v2.flows.list() if flow.friendly_name == FLOW_NAME]
    if not listed:
        return None
    flow = client.studio.v2.flows(listed[0].sid).fetch()
    definition = flow.definition if isinstance(flow.definition, dict) else {}
    problems: tuple[str, ...] = ()
    try:
        client.studio.v2.flow_validate.update(
            friendly_name=FLOW_NAME, status="published", definition=definition
        )
    except TwilioRestException as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        errors = details.get("errors") or [{"message": f"{exc.code} {exc.msg}"}]
        problems = tuple(
            f"{e.get('property_path', '')} {e.get('message', '')}".strip() for e in errors
        )
    return FlowFound(str(flow.sid), str(flow.status), str(flow.webhook_url), definition, problems)


def judge_number(number: str, account: str, found: NumberFound | None) -> Line:
    subject = "twilio number"
    if found is None:
        return fail(
            subject,
            f"{number} is not a number of account {account}",
            "Twilio Console → Phone Numbers → Buy a number (with MMS), then set TWILIO_FROM_NUMBER",
        )
    can = [name for name, able in found.capabilities.items() if able]
    if not found.capabilities.get("mms"):
        return fail(
            subject,
            f"{number} cannot send MMS (it can: {', '.join(can) or 'nothing'})",
            "use a US or Canadian number with MMS: Twilio Console → Phone Numbers → Buy a number",
        )
    return ok(subject, f"{number} is in the account and takes MMS")


def judge_wiring(
    found: NumberFound, flow: FlowFound | None, generate_url: str | None, t: Target
) -> Line:
    subject = "twilio wiring"
    webhook = flow.webhook_url if flow is not None else None
    calls_ok = webhook is not None and found.voice_url == webhook
    texts_ok = found.sms_url in {webhook, generate_url} - {None, ""}
    if calls_ok and texts_ok:
        texts = "the flow" if found.sms_url == webhook else "generate (GENERATE_URL)"
        return ok(subject, f"calls to {found.phone_number} go to the flow, texts to {texts}")
    flow_is = f"the flow is at {webhook}" if webhook else "there is no flow to point them at"
    return fail(
        subject,
        f"calls to {found.phone_number} go to {found.voice_url or 'nowhere'}, texts to"
        f" {found.sms_url or 'nowhere'}; {flow_is}",
        t.fix_studio(),
    )


def judge_flow(flow: FlowFound | None, t: Target) -> Line:
    subject = "studio flow"
    if flow is None:
        return fail(subject, f"no Studio flow named {FLOW_NAME!r}", t.fix_studio())
    if flow.status != "published":
        return fail(subject, f"flow {flow.sid} is a {flow.status}, not published", t.fix_studio())
    if flow.problems:
        return fail(
            subject,
            f"Studio refuses flow {flow.sid}: {'; '.join(flow.problems[:3])}",
            t.fix_studio(),
        )
    return ok(subject, f"flow {flow.sid} is published and passes Studio's validation")


def flow_requests(definition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The properties of the flow's Make HTTP Request widgets."""
    states = definition.get("states", [])
    return [
        s.get("properties", {})
        for s in states
        if isinstance(s, dict) and s.get("type") == "make-http-request"
    ]


def judge_flow_content(
    flow: FlowFound, generate_url: str | None, flow_key: str | None, t: Target
) -> Line:
    subject = "studio flow requests"
    widgets = flow_requests(flow.definition)
    urls = sorted({str(w.get("url")) for w in widgets})
    if not widgets or urls != [generate_url]:
        return fail(
            subject,
            f"the flow calls {', '.join(urls) or 'nothing'}, not GENERATE_URL {generate_url}",
            t.fix_studio(),
        )
    keys = [
        str(p.get("value"))
        for w in widgets
        for p in w.get("parameters") or []
        if isinstance(p, dict) and p.get("key") == "flow_key"
    ]
    if len(keys) < len(widgets):
        return fail(
            subject,
            "a request of the flow sends no flow_key: only Twilio's (unconfirmed) signature lets"
            " it in",
            t.fix_studio(),
        )
    if not flow_key or not all(hmac.compare_digest(k.encode(), flow_key.encode()) for k in keys):
        return fail(subject, "the flow's flow_key is not STUDIO_FLOW_KEY", t.fix_studio())
    return ok(subject, f"all {len(widgets)} requests go to GENERATE_URL with the flow key")


def judge_messaging_service(client: TwilioClient, sid: str | None, number: str, t: Target) -> Line:
    subject = "twilio messaging svc"
    if not sid:
        return ok(
            subject, f"TWILIO_MESSAGING_SERVICE_SID is not set: messages go from {number} itself"
        )
    try:
        service = client.messaging.v1.services(sid).fetch()
        pool = [n.phone_number for n in client.messaging.v1.services(sid).phone_numbers.list()]
    except TwilioRestException as exc:
        if exc.status == 404:
            return fail(
                subject,
                f"Messaging Service {sid} does not exist in this account",
                "Twilio Console → Messaging → Services: copy your service's SID; "
                + t.fix_setting("TWILIO_MESSAGING_SERVICE_SID=MG…"),
            )
        return fail(
            subject, f"Twilio refused: {exc.code} {exc.msg}", t.fix_secret("TWILIO_AUTH_TOKEN")
        )
    if number not in pool:
        return fail(
            subject,
            f"{number} is not in Messaging Service {sid}'s sender pool",
            f"Twilio Console → Messaging → Services → {service.friendly_name} → Sender Pool →"
            f" Add Senders → {number}",
        )
    return ok(subject, f"Messaging Service {sid} holds {number}")


# --- studio time -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One call on generate's way to answering Studio, at its worst."""

    what: str
    seconds: float


def studio_path_steps(store_timeout_s: float, moderation_on: bool) -> list[Step]:
    """What generate does for a Studio prompt before it answers (shared/accept.py), each call at
    its timeout, and as its deadline lets it run (shared/deadline.py): moderation only when a
    whole check fits, each publish try within what is left (never under MIN_TIMEOUT_S each for
    connect and read), the retry only when a whole try fits, and the message id noted only
    when the store call fits. Store calls themselves are not cut short by the deadline."""
    budget = deadline.STUDIO_BUDGET_S
    steps: list[Step] = []

    def left() -> float:
        return max(0.0, budget - sum(step.seconds for step in steps))

    if moderation_on and left() >= moderation.CHECK_S:
        steps.append(Step("moderation", sum(moderation.TIMEOUT_S)))
    steps.append(Step("record the request", store_timeout_s))
    for attempt in ("publish to QStash", "publish again"):
        if attempt == "publish again" and left() < publishing.ONE_TRY_S:
            break
        least = publishing.MIN_TIMEOUT_S
        connect = max(least, min(publishing.CONNECT_TIMEOUT_S, left()))
        read = max(least, min(publishing.READ_TIMEOUT_S, left()))
        steps.append(Step(attempt, connect + read))
    if left() > store_timeout_s:
        steps.append(Step("note the message id", store_timeout_s))
    return steps


def judge_studio_time(store_timeout_s: float, moderation_on: bool, t: Target) -> Line:
    subject = "studio time"
    steps = studio_path_steps(store_timeout_s, moderation_on)
    total = sum(step.seconds for step in steps)
    parts = " + ".join(f"{step.what} {step.seconds:g}" for step in steps)
    found = f"at worst {total:g} s ({parts}) of Studio's {STUDIO_LIMIT_S:g} s"
    if total > STUDIO_LIMIT_S:
        # The largest store timeout that fits, best one that leaves the publish a whole try
        # (the deadline cuts it short otherwise, so the total is not monotonic).
        fits = [
            seconds
            for seconds in range(int(store_timeout_s) - 1, 0, -1)
            if sum(step.seconds for step in studio_path_steps(seconds, moderation_on))
            <= STUDIO_LIMIT_S
        ]
        whole = [seconds for seconds in fits if _publish_is_whole(seconds, moderation_on)]
        if fits:
            best = (whole or fits)[0]
            return fail(subject, found, t.fix_setting(f"STORE_TIMEOUT_SECONDS={best}"))
        return fail(
            subject,
            found,
            "no setting can: shorten shared/deadline.py STUDIO_BUDGET_S or the publish timeouts"
            " in shared/publishing.py",
        )
    if moderation_on and not any(step.what == "moderation" for step in steps):
        return warn(
            subject,
            f"{found}; but MODERATION=on never runs for Studio: a check needs"
            f" {moderation.CHECK_S:g} s of its {deadline.STUDIO_BUDGET_S:g} s budget, so spoken"
            " prompts go unchecked (the image model's own safety still applies)",
            "shared/moderation.py CHECK_S or shared/deadline.py STUDIO_BUDGET_S",
        )
    return ok(subject, found)


def _publish_is_whole(store_timeout_s: float, moderation_on: bool) -> bool:
    steps = studio_path_steps(store_timeout_s, moderation_on)
    return any(
        step.what == "publish to QStash" and step.seconds >= publishing.ONE_TRY_S for step in steps
    )


def check_studio_time(t: Target) -> Iterator[Line]:
    raw = t.setting("STORE_TIMEOUT_SECONDS", str(int(DEFAULT_STORE_TIMEOUT_S)))
    try:
        store_timeout_s = float(raw or "")
    except ValueError:
        yield fail(
            "studio time",
            f"STORE_TIMEOUT_SECONDS is {raw!r}, not a number",
            t.fix_setting(f"STORE_TIMEOUT_SECONDS={int(DEFAULT_STORE_TIMEOUT_S)}"),
        )
        return
    moderation_on = (t.setting("MODERATION", "off") or "off").lower() in ("true", "on", "1", "yes")
    yield judge_studio_time(store_timeout_s, moderation_on, t)


# --- the report ------------------------------------------------------------------------------

CHECKS: tuple[Callable[[Target], Iterable[Line]], ...] = (
    check_settings,
    check_functions,
    check_secrets,
    check_supabase,
    check_image_models,
    check_qstash,
    check_twilio,
    check_studio_time,
)


def run_checks(t: Target) -> list[Line]:
    """Every check's lines; a check that breaks becomes a ✘ line, and the others still run."""
    lines: list[Line] = []
    for check in CHECKS:
        try:
            lines.extend(check(t))
        # A doctor reports, it does not crash. No message: it might hold a secret.
        except Exception as exc:
            found = f"the check itself failed ({type(exc).__name__})"
            name = check.__name__.removeprefix("check_")
            lines.append(fail(name, found, "report it: deploy/doctor.py"))
    return lines


def redact(text: str, revealed: Mapping[str, str]) -> str:
    """Never print a secret, whatever a vendor's message held."""
    for name, value in revealed.items():
        if len(value) >= 4:
            text = text.replace(value, f"<{name}>")
    return text


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--env-file", type=Path, help="the local stack's .devstack/env")
    where.add_argument("--gcloud", action="store_true", help="a deployment, found through gcloud")
    parser.add_argument("--project")
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--service-account", help="the functions' service account")
    parser.add_argument("--self-test-timeout", type=float, default=SELF_TEST_TIMEOUT_S)
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    if args.gcloud:
        if not args.project:
            parser.error("--gcloud needs --project")
        account = args.service_account or f"picture-line@{args.project}.iam.gserviceaccount.com"
        target = deployed_target(environ, args.project, args.region, account)
    else:
        if not args.env_file.is_file():
            print(
                f"doctor: no {args.env_file}: start the local stack with `make stack` first",
                file=sys.stderr,
            )
            return 2
        target = local_target(args.env_file, environ)
    target.self_test_timeout_s = args.self_test_timeout
    print(f"Picture Line doctor: {target.where}")
    lines = run_checks(target)
    width = max((len(line.subject) for line in lines), default=0)
    for line in lines:
        print(redact(line.render(width), target.revealed))
    failed = sum(line.mark == FAIL for line in lines)
    warned = sum(line.mark == WARN for line in lines)
    print(f"{len(lines) - failed - warned} ✔, {warned} ⚠, {failed} ✘")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
