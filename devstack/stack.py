"""The whole local stack: PostgreSQL, every stand-in, and both functions.

`python -m devstack.stack` (what `make stack` runs) starts it in the foreground on fixed ports
and writes `.devstack/env`, a shell file with every URL and key, so anyone can
`source .devstack/env` and talk to it. Tests and the demo start the same `Stack` in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import requests

from . import openai_images, postgres, qstash, secretmanager, supabase, twilio
from .serving import RunningServer, serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "supabase" / "migrations"
PROJECT = "devstack-project"
OPERATOR_KEY = "devstack-operator-key"
STUDIO_FLOW_KEY = "devstack-studio-flow-key"
# Kept only in the Secret Manager stand-in, so the functions' lazy Secret Manager path runs.
SAFETY_SALT = "devstack-safety-salt"
DEMO_FROM = "+15005550006"
DEV_LIMITS = {
    "LIMIT_GLOBAL_DAY": "100000",
    "LIMIT_PER_NUMBER_HOUR": "1000",
    "LIMIT_PER_NUMBER_DAY": "10000",
}
DEMO_TO = "+15551230001"


@dataclass
class Ports:
    """Fixed ports for `make stack`; all zeros picks free ports (tests)."""

    qstash: int = 8080  # the official QStash dev server's port, so it can be swapped in
    generate: int = 8081
    composite: int = 8082
    gallery: int = 8083
    openai: int = 8091
    supabase: int = 8092
    twilio: int = 8093
    secretmanager: int = 8094

    @classmethod
    def free(cls) -> Ports:
        return cls(**{f.name: 0 for f in fields(cls)})


@dataclass
class Stack:
    """Start with `start()`, stop with `stop()`; `env` holds every URL and key once started."""

    workdir: Path
    ports: Ports = field(default_factory=Ports)
    functions_in_process: bool = False
    qstash_retry_scale: float = 0.02
    openai_latency_s: float = 0.3
    function_logs: Path | None = None  # subprocess stdout goes here (None: inherit)
    env: dict[str, str] = field(default_factory=dict)
    _servers: list[RunningServer] = field(default_factory=list)
    _apps: list[Any] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _postgres: postgres.PostgresHandle | None = None
    _saved_environ: dict[str, str] | None = None

    def start(self) -> dict[str, str]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._postgres = postgres.start_postgres(self.workdir / "pg")
        uri = self._postgres.uri
        postgres.bootstrap_platform(uri)
        postgres.apply_migrations(uri, MIGRATIONS)

        qstash_app = qstash.create_app(
            qstash.QStashConfig(retry_delay_scale=self.qstash_retry_scale)
        )
        openai_app = openai_images.create_app(
            openai_images.OpenAIConfig(latency_s=self.openai_latency_s)
        )
        supabase_app = supabase.create_app(
            supabase.SupabaseConfig(database_url=uri, storage_dir=self.workdir / "storage")
        )
        twilio_app = twilio.create_app(twilio.TwilioConfig(outbox_dir=self.workdir / "outbox"))
        secrets_app = secretmanager.create_app(
            secretmanager.SecretManagerConfig(
                project=PROJECT, secrets={"SAFETY_IDENTIFIER_SALT": SAFETY_SALT}
            )
        )
        self._apps = [qstash_app, twilio_app]
        urls = {
            "qstash": self._serve(qstash_app, self.ports.qstash),
            "openai": self._serve(openai_app, self.ports.openai),
            "supabase": self._serve(supabase_app, self.ports.supabase),
            "twilio": self._serve(twilio_app, self.ports.twilio),
            "secretmanager": self._serve(secrets_app, self.ports.secretmanager),
        }
        spare = iter(_free_ports(3))
        generate_port = self.ports.generate or next(spare)
        composite_port = self.ports.composite or next(spare)
        gallery_port = self.ports.gallery or next(spare)
        function_env = {
            "GENERATE_URL": f"http://127.0.0.1:{generate_port}",
            "COMPOSITE_URL": f"http://127.0.0.1:{composite_port}",
            "GALLERY_URL": f"http://127.0.0.1:{gallery_port}",
            "QSTASH_URL": urls["qstash"],
            "QSTASH_TOKEN": qstash.DEV_TOKEN,
            "QSTASH_CURRENT_SIGNING_KEY": qstash.DEV_CURRENT_SIGNING_KEY,
            "QSTASH_NEXT_SIGNING_KEY": qstash.DEV_NEXT_SIGNING_KEY,
            "OPENAI_BASE_URL": urls["openai"] + "/v1",
            "OPENAI_API_KEY": openai_images.DEV_API_KEY,
            "SUPABASE_URL": urls["supabase"],
            "SUPABASE_SECRET_KEY": supabase.DEV_SECRET_KEY,
            "TWILIO_API_BASE_URL": urls["twilio"],
            "TWILIO_ACCOUNT_SID": twilio.DEV_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": twilio.DEV_AUTH_TOKEN,
            "OPERATOR_KEY": OPERATOR_KEY,
            "STUDIO_FLOW_KEY": STUDIO_FLOW_KEY,
            # Every local number is one of Twilio's test numbers (+1 555..., +1 500 555 0006).
            "ALLOW_TEST_RECIPIENTS": "on",
            "TWILIO_FROM_NUMBER": DEMO_FROM,
            # A development stack serves many test requests a day, to the same demo number too
            # (the demo's database outlives the run); the environment may still set them.
            **{name: os.environ.get(name, value) for name, value in DEV_LIMITS.items()},
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "SECRET_MANAGER_ENDPOINT": urls["secretmanager"],
        }
        self.env = {
            **function_env,
            "DATABASE_URL": uri,
            "SUPABASE_PUBLISHABLE_KEY": supabase.DEV_PUBLISHABLE_KEY,
            "DEVSTACK_OUTBOX": str(self.workdir / "outbox"),
            "DEMO_FROM": DEMO_FROM,
            "DEMO_TO": DEMO_TO,
        }
        ports = {"generate": generate_port, "composite": composite_port, "gallery": gallery_port}
        if self.functions_in_process:
            self._start_functions_in_process(function_env, ports)
        else:
            self._start_function_processes(function_env, ports)
        return self.env

    def _serve(self, app: Any, port: int) -> str:
        server = serve_in_thread(app, port)
        self._servers.append(server)
        return server.url

    def _start_functions_in_process(
        self, function_env: dict[str, str], ports: dict[str, int]
    ) -> None:
        from functions_framework import create_app

        from shared.services import reset_services

        # The functions read os.environ on their first request, as they do when deployed.
        self._saved_environ = dict(os.environ)
        os.environ.update(function_env)
        os.environ.pop("SAFETY_IDENTIFIER_SALT", None)
        reset_services()
        for name, port in ports.items():
            app = create_app(name, str(ROOT / name / "main.py"))  # type: ignore[no-untyped-call]
            self._servers.append(serve_in_thread(app, port))

    def _start_function_processes(
        self, function_env: dict[str, str], ports: dict[str, int]
    ) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SAFETY_IDENTIFIER_SALT"}
        env.update(function_env)
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        for name, port in ports.items():
            out: Any = None
            if self.function_logs is not None:
                self.function_logs.mkdir(parents=True, exist_ok=True)
                out = (self.function_logs / f"{name}.log").open("ab")
            command = [
                sys.executable, "-m", "functions_framework",
                "--target", name, "--source", str(ROOT / name / "main.py"),
                "--host", "127.0.0.1", "--port", str(port),
            ]  # fmt: skip
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
            self._processes.append(process)
        for port in ports.values():
            _wait_until_up(f"http://127.0.0.1:{port}/", timeout_s=30)

    def request_picture(self, prompt: str, to: str = DEMO_TO) -> requests.Response:
        """Ask `generate` for a picture the way an operator does (JSON + operator key)."""
        return requests.post(
            self.env["GENERATE_URL"],
            json={"to": to, "from": self.env["DEMO_FROM"], "prompt": prompt},
            headers={"X-Operator-Key": self.env["OPERATOR_KEY"]},
            timeout=10,
        )

    def outbox(self) -> list[dict[str, Any]]:
        """Every message the Twilio stand-in took, oldest first, with local media paths."""
        reply = requests.get(f"{self.env['TWILIO_API_BASE_URL']}/__dev/outbox", timeout=5)
        messages: list[dict[str, Any]] = reply.json()["messages"]
        return messages

    def qstash_messages(self) -> list[dict[str, Any]]:
        """Every message QStash handled (jobs and callbacks), with their attempts."""
        reply = requests.get(f"{self.env['QSTASH_URL']}/__dev/messages", timeout=5)
        messages: list[dict[str, Any]] = reply.json()
        return messages

    def write_env_file(self, path: Path) -> None:
        lines = ["# Written by devstack.stack: `source` it to talk to the running local stack."]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in sorted(self.env.items())]
        path.write_text("\n".join(lines) + "\n")

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """True once QStash and the Twilio stand-in have nothing left in flight."""
        deadline = time.monotonic() + timeout_s
        return all(
            app.extensions[key].wait_idle(max(0.0, deadline - time.monotonic()))
            for app, key in zip(self._apps, ("qstash", "twilio"), strict=True)
        )

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for server in reversed(self._servers):
            server.stop()
        for app, key in zip(self._apps, ("qstash", "twilio"), strict=True):
            app.extensions[key].close()
        if self._postgres is not None:
            self._postgres.stop()
        if self._saved_environ is not None:
            os.environ.clear()
            os.environ.update(self._saved_environ)
        self._processes, self._servers, self._postgres = [], [], None


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports. The sockets stay open until all are chosen: one at a time,
    the system may hand out the same port twice (the demo once started generate and composite
    on one port)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _wait_until_up(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout_s:.0f} s")


def publish_flow(env: dict[str, str]) -> None:
    """Publish studio/flow.json to the Twilio stand-in and wire the demo number to it, as
    `./deploy.sh studio` does for a real number, so `make doctor` finds the stack complete."""
    from deploy.studio import main as publish_studio_flow

    names = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL", "STUDIO_FLOW_KEY")
    with environment({name: env[name] for name in names}):
        publish_studio_flow(["--generate-url", env["GENERATE_URL"], "--number", DEMO_FROM])


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`os.environ` with `values` set, as it was again afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / ".devstack")
    parser.add_argument(
        "--retry-scale", type=float, default=0.02, help="QStash retry delays are multiplied by this"
    )
    args = parser.parse_args()
    stack = Stack(workdir=args.dir, qstash_retry_scale=args.retry_scale)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stack.start()
    publish_flow(stack.env)
    env_file = args.dir / "env"
    stack.write_env_file(env_file)
    print(f"local stack is up; `source {env_file}` to use it. Ctrl-C stops it.", flush=True)
    for key in ("GENERATE_URL", "COMPOSITE_URL", "QSTASH_URL", "SUPABASE_URL"):
        print(f"  {key}={stack.env[key]}", flush=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        env_file.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
