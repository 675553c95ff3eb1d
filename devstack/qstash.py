"""Local stand-in for Upstash QStash (publish, signed delivery, retries, callbacks, DLQ).

The official `qstash` SDK talks to it unchanged (`QStash(DEV_TOKEN, base_url=url)`), and its
`Receiver` accepts the signatures it puts on deliveries and callbacks. It reuses the public
credentials of the vendor's own dev server, so either can be swapped in for the other.

One token (bearer auth on ``/v2/``), one Flask app, one module per side of QStash:

* :mod:`devstack.qstash_publish`: the REST API a client calls: ``/v2/publish`` (and enqueue,
  batch) with QStash's header checks and error shape, deduplication and the plan's limits;
  ``/v2/messages``, ``/v2/schedules``, ``/v2/keys``.
* :mod:`devstack.qstash_delivery`: what QStash does with a message: signed delivery on worker
  threads, retries with the real backoff rules, callbacks after every attempt, failure
  callbacks and DLQ ids.
* :mod:`devstack.qstash_message`: what they share (the stored message, ids, Go durations,
  retry-delay expressions, Go's header shape).

This module ties them together: the dev credentials, the configuration (``QStashConfig.plan``:
free, payg or fixed; ``sub_includes_query``: whether the JWT ``sub`` keeps the URL's query;
test knobs), the emulator's state and its one lock, authentication, and dev-only JSON control
endpoints under ``/__dev/`` (no auth): list messages, wait for idleness, tweak knobs, trigger
schedules, reset.

Nothing here is imported by production code.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from devstack import qstash_publish

# make_signature, signature_subject, evaluate_retry_delay, parse_duration and
# INVALID_DESTINATION_ERROR are re-exported (see __all__): tests and devstack import them here.
from devstack.qstash_delivery import Dispatcher, make_signature, signature_subject
from devstack.qstash_message import Message, evaluate_retry_delay, parse_duration
from devstack.qstash_publish import INVALID_DESTINATION_ERROR, ApiError, Publisher

__all__ = [
    "DEV_CURRENT_SIGNING_KEY",
    "DEV_NEXT_SIGNING_KEY",
    "DEV_TOKEN",
    "INVALID_DESTINATION_ERROR",
    "PLAN_LIMITS",
    "PlanLimits",
    "QStashConfig",
    "QStashEmulator",
    "create_app",
    "evaluate_retry_delay",
    "make_signature",
    "parse_duration",
    "signature_subject",
]

# The public, deterministic credentials of Upstash's own `qstash dev` server (not secrets).
DEV_TOKEN = "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0="
DEV_CURRENT_SIGNING_KEY = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r"
DEV_NEXT_SIGNING_KEY = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs"

Plan = Literal["free", "payg", "fixed"]
RetriesOverCap = Literal["reject", "clamp"]


@dataclass(frozen=True)
class PlanLimits:
    """The limits of one QStash plan that the emulator enforces."""

    max_message_size: int
    """Bytes, decimal megabytes (1 MB = 1,000,000; decimal rather than MiB is [UNCONFIRMED])."""
    max_retries: int


PLAN_LIMITS: dict[Plan, PlanLimits] = {
    # Sizes: [DOC pricing] upstash.com/pricing/qstash.md: Free 1 MB, pay-as-you-go 10 MB,
    # fixed 50 MB. Retry caps: [3P] the older pricing page (3 / 5 / 20, the last for "Pro");
    # whether they still hold today is [UNCONFIRMED] (the docs only say "based on your plan").
    "free": PlanLimits(max_message_size=1_000_000, max_retries=3),
    "payg": PlanLimits(max_message_size=10_000_000, max_retries=5),
    "fixed": PlanLimits(max_message_size=50_000_000, max_retries=20),
}
RETRIES_OVER_CAP: frozenset[str] = frozenset({"reject", "clamp"})


@dataclass
class QStashConfig:
    """Settings of one emulator instance; the defaults mimic the Free plan and the dev server."""

    token: str = DEV_TOKEN
    current_signing_key: str = DEV_CURRENT_SIGNING_KEY
    next_signing_key: str = DEV_NEXT_SIGNING_KEY
    plan: Plan = "free"
    """Chooses the default `max_message_size` and `max_retries` (see PLAN_LIMITS)."""
    max_message_size: int | None = None
    """Bytes; None means the plan's. A larger publish body gets 413; a callback's `body` is the
    provider's answer cut to this many bytes ([DOC callbacks] "We may truncate the response
    body if it exceeds your plan limits (Max Message Size)"; how is [UNCONFIRMED])."""
    max_retries: int | None = None
    """The retry cap; None means the plan's. Applies to Upstash-Retries and to the callbacks'
    Upstash-Callback-Retries / Upstash-Failure-Callback-Retries."""
    retries_over_cap: RetriesOverCap = "reject"
    """What a retry count above the cap does: `reject` answers the publish 400 `{"error": ...}`,
    `clamp` silently uses the cap. Which one QStash does is [UNCONFIRMED]. Reject is the default
    because it is the stricter: code that passes against it also passes if QStash clamps, while
    code tested only against clamp could see every publish refused in production."""
    sub_includes_query: bool = True
    """Whether the JWT `sub` is the URL called with its query string (True) or without it.
    [DOC] `sub` is "the url of your endpoint, where this request is sent to"; whether the query
    is part of it is [UNCONFIRMED] (very likely, since QStash keeps URLs verbatim [SDK tests])."""
    retry_delay_scale: float = 1.0
    """Multiplies every computed retry delay (backoff, Upstash-Retry-Delay, Retry-After)."""
    default_timeout_s: float = 900.0
    """Per-attempt HTTP timeout when Upstash-Timeout is absent (Free plan: 15 minutes)."""
    region: str = "EU-CENTRAL-1"
    duplicate_deliveries: int = 1
    """Send every delivery attempt this many times at once, to exercise at-least-once handling."""
    reorder_callbacks: bool = False
    """Hold a message's callbacks until it is settled, then deliver them newest first."""
    dedup_window_s: float = 600.0
    """How long a deduplication id is remembered (the docs say 10 minutes)."""
    delivery_workers: int = 32
    """Size of the worker pool that performs HTTP deliveries."""

    def __post_init__(self) -> None:
        if self.plan not in PLAN_LIMITS:
            raise ValueError(f"unknown plan {self.plan!r}; known: {sorted(PLAN_LIMITS)}")
        if self.retries_over_cap not in RETRIES_OVER_CAP:
            raise ValueError(f"retries_over_cap must be one of {sorted(RETRIES_OVER_CAP)}")

    @property
    def message_size_limit(self) -> int:
        """The max message size in force: the explicit setting, else the plan's."""
        if self.max_message_size is not None:
            return self.max_message_size
        return PLAN_LIMITS[self.plan].max_message_size

    @property
    def retry_cap(self) -> int:
        """The max retries in force: the explicit setting, else the plan's."""
        if self.max_retries is not None:
            return self.max_retries
        return PLAN_LIMITS[self.plan].max_retries


# --------------------------------------------------------------------------------------------
# The emulator's state
# --------------------------------------------------------------------------------------------


class QStashEmulator:
    """One stand-in's state: its settings, the dispatcher and the publisher, and their lock.

    One lock (a Condition) guards all state, the dispatcher's and the publisher's, so that a
    publish, a reset or a change of settings is a single step for both. Lives at
    ``app.extensions["qstash"]``.
    """

    def __init__(self, config: QStashConfig) -> None:
        self.config = config
        self._initial_config = dataclasses.replace(config)
        self._cond = threading.Condition()
        self.dispatcher = Dispatcher(config, self._cond)
        self.publisher = Publisher(config, self._cond, self.dispatcher)

    def close(self) -> None:
        """Stop the scheduler and workers; idempotent. In-flight HTTP calls are not aborted."""
        self.dispatcher.close()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is scheduled or in flight; False if `timeout` seconds pass first."""
        return self.dispatcher.wait_idle(timeout)

    def reset(self, restore_config: bool = False) -> None:
        """Forget every message and schedule; late results of in-flight attempts are dropped."""
        with self._cond:
            self.dispatcher.reset_locked()
            self.publisher.reset_locked()
            if restore_config:
                for item in dataclasses.fields(self.config):
                    setattr(self.config, item.name, getattr(self._initial_config, item.name))
            self._cond.notify_all()

    def list_messages(self) -> list[dict[str, Any]]:
        """Every message, oldest first, for the dev listing (no headers or bodies: no secrets)."""
        with self._cond:
            return [_dev_summary(m) for m in self.dispatcher.stored_locked()]

    def update_config(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a partial update of the tunable settings and return them all (`config_json`).

        `plan` only changes the defaults: an explicit `max_message_size` or `max_retries`
        stays in force across a plan change until it is set back to None (JSON null).

        Raises:
            ApiError: an unknown key or a value of the wrong type or range.
        """
        for key, value in changes.items():
            check = _CONFIG_VALIDATORS.get(key)
            if check is None:
                raise ApiError(400, f"unknown setting {key!r}; known: {sorted(_CONFIG_VALIDATORS)}")
            if not check(value):
                raise ApiError(400, f"invalid value for {key!r}: {value!r}")
        with self._cond:
            for key, value in changes.items():
                setattr(self.config, key, value)
            return self.config_json()

    def config_json(self) -> dict[str, Any]:
        """The tunable settings, plus the limits in force (`effective`) after plan defaults."""
        with self._cond:
            data: dict[str, Any] = {key: getattr(self.config, key) for key in _CONFIG_VALIDATORS}
            data["effective"] = {
                "max_message_size": self.config.message_size_limit,
                "max_retries": self.config.retry_cap,
            }
            return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_optional_int(value: object, minimum: int) -> bool:
    if value is None:
        return True
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


_CONFIG_VALIDATORS: dict[str, Callable[[Any], bool]] = {
    "retry_delay_scale": lambda v: _is_number(v) and v >= 0,
    "plan": lambda v: isinstance(v, str) and v in PLAN_LIMITS,
    "max_message_size": lambda v: _is_optional_int(v, 1),  # null: back to the plan's
    "max_retries": lambda v: _is_optional_int(v, 0),  # null: back to the plan's
    "retries_over_cap": lambda v: isinstance(v, str) and v in RETRIES_OVER_CAP,
    "sub_includes_query": lambda v: isinstance(v, bool),
    "duplicate_deliveries": lambda v: _is_int(v) and v >= 1,
    "reorder_callbacks": lambda v: isinstance(v, bool),
    "default_timeout_s": lambda v: _is_number(v) and v > 0,
    "dedup_window_s": lambda v: _is_number(v) and v >= 0,
}
"""The settings POST /__dev/config may change, with their checks."""


def _dev_summary(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "kind": message.kind,
        "url": message.url,
        "method": message.method,
        "state": message.state,
        "sourceMessageId": message.source_message_id,
        "label": message.label,
        "queue": message.queue,
        "maxRetries": message.max_retries,
        "scheduleId": message.schedule_id,
        "attempts": [
            {"retried": a.retried, "status": a.status, "at": a.at, "error": a.error}
            for a in message.attempts
        ],
        "dlqId": message.dlq_id,
    }


def _emulator() -> QStashEmulator:
    emulator: QStashEmulator = current_app.extensions["qstash"]
    return emulator


# --------------------------------------------------------------------------------------------
# HTTP: authentication and errors
# --------------------------------------------------------------------------------------------


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _bearer_token() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.args.get("qstash_token")


def _authenticate() -> tuple[Response, int] | None:
    """The token on every ``/v2/`` path, before routing: an unknown path is 401 too."""
    if not request.path.startswith("/v2/"):
        return None
    token = _bearer_token()
    expected = _emulator().config.token
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        return _error(401, "unauthorized: missing or invalid token")
    return None


def _api_error(exc: ApiError) -> tuple[Response, int]:
    return _error(exc.status, exc.message)


def _http_error(exc: HTTPException) -> tuple[Response, int]:
    return _error(exc.code or 500, (exc.description or exc.name).strip())


# --------------------------------------------------------------------------------------------
# HTTP: dev-only control endpoints (no auth; never exposed beyond loopback)
# --------------------------------------------------------------------------------------------

dev = Blueprint("qstash_dev", __name__, url_prefix="/__dev")


@dev.get("/messages")
def dev_messages() -> tuple[Response, int]:
    return jsonify(_emulator().list_messages()), 200


@dev.post("/wait-idle")
def dev_wait_idle() -> tuple[Response, int]:
    payload = request.get_json(silent=True) or {}
    timeout = payload.get("timeout", 10) if isinstance(payload, dict) else 10
    if not _is_number(timeout) or timeout < 0:
        raise ApiError(400, "`timeout` must be a non-negative number of seconds")
    idle = _emulator().wait_idle(float(timeout))
    return jsonify(idle=idle), 200 if idle else 408


@dev.get("/config")
def dev_get_config() -> tuple[Response, int]:
    return jsonify(_emulator().config_json()), 200


@dev.post("/config")
def dev_config() -> tuple[Response, int]:
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        raise ApiError(400, "body must be a JSON object")
    return jsonify(_emulator().update_config(payload)), 200


@dev.post("/schedules/<schedule_id>/trigger")
def dev_trigger_schedule(schedule_id: str) -> tuple[Response, int]:
    result = _emulator().publisher.trigger_schedule(schedule_id)
    if result is None:
        raise ApiError(404, "schedule not found")
    status, reply = result
    return jsonify(reply), status


@dev.post("/reset")
def dev_reset() -> tuple[Response, int]:
    payload = request.get_json(silent=True) or {}
    restore = isinstance(payload, dict) and payload.get("config") is True
    _emulator().reset(restore_config=restore)
    return jsonify(reset=True), 200


# --------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------


def create_app(config: QStashConfig | None = None) -> Flask:
    """Build the QStash stand-in; its state lives at `app.extensions["qstash"]`."""
    cfg = dataclasses.replace(config) if config is not None else QStashConfig()
    app = Flask(__name__)
    # Destinations contain `//` (`/v2/publish/http://...`); never redirect to a merged path.
    # Set before any route is added: a rule takes the map's setting then.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    emulator = QStashEmulator(cfg)
    app.extensions["qstash"] = emulator
    qstash_publish.init_app(app, emulator.publisher, emulator.dispatcher)
    app.register_blueprint(dev)
    app.before_request(_authenticate)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app
