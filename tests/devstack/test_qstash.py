"""The QStash stand-in, driven through the official `qstash` SDK and plain HTTP.

A tiny recording Flask app plays the destination and the callback endpoints; it answers
scripted statuses so retries, failures and timeouts can be provoked.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jwt
import pytest
import requests
from flask import Flask, Response, request
from qstash import QStash, Receiver
from qstash.errors import QStashError, SignatureError
from qstash.message import BatchResponse, PublishResponse

from devstack.qstash import (
    DEV_CURRENT_SIGNING_KEY,
    DEV_NEXT_SIGNING_KEY,
    DEV_TOKEN,
    INVALID_DESTINATION_ERROR,
    PLAN_LIMITS,
    QStashConfig,
    QStashEmulator,
    create_app,
    evaluate_retry_delay,
    make_signature,
    parse_duration,
    signature_subject,
)
from devstack.serving import RunningServer, serve_in_thread

AUTH = {"Authorization": f"Bearer {DEV_TOKEN}"}
RECEIVER = Receiver(DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)


# ------------------------------------------------------------------------------------------
# A recording destination
# ------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    sleep: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    url: str  # scheme://host:port/path?query, as the sender addressed it
    headers: dict[str, str]
    body: bytes

    def verify(self) -> None:
        """Raise SignatureError unless the request carries a valid QStash signature."""
        RECEIVER.verify(
            signature=self.headers["Upstash-Signature"], body=self.body.decode(), url=self.url
        )

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder:
    """Records every request; replies from a per-path script, then 200."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        self._scripts: dict[str, list[Reply]] = {}
        self.url = ""

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()
            self._scripts.clear()

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[path] = list(replies)

    def on(self, path: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path == path]

    def app(self) -> Flask:
        app = Flask("destination")

        @app.route("/<path:p>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
        def record(p: str) -> Response:
            query = request.query_string.decode()
            seen = Seen(
                method=request.method,
                path=request.path,
                url=f"{self.url}{request.path}" + (f"?{query}" if query else ""),
                headers=dict(request.headers.items()),
                body=request.get_data(),
            )
            with self._lock:
                self.seen.append(seen)
                script = self._scripts.get(request.path)
                reply = script.pop(0) if script else Reply()
            time.sleep(reply.sleep)
            return Response(reply.body, status=reply.status, headers=reply.headers)

        return app


@dataclass
class Stack:
    url: str
    emulator: QStashEmulator
    dest: Recorder

    @property
    def client(self) -> QStash:
        return QStash(DEV_TOKEN, base_url=self.url, retry=False)

    def publish(self, **kwargs: Any) -> PublishResponse:
        """`client.message.publish` for a single URL (the SDK also types URL-group replies)."""
        result = self.client.message.publish(**kwargs)
        assert isinstance(result, PublishResponse)
        return result

    def publish_json(self, **kwargs: Any) -> PublishResponse:
        result = self.client.message.publish_json(**kwargs)
        assert isinstance(result, PublishResponse)
        return result

    def wait(self, timeout: float = 10.0) -> None:
        assert self.emulator.wait_idle(timeout), "emulator did not become idle"

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        listed = requests.get(f"{self.url}/__dev/messages", timeout=5).json()
        return [m for m in listed if kind is None or m["kind"] == kind]

    def configure(self, **changes: Any) -> None:
        reply = requests.post(f"{self.url}/__dev/config", json=changes, timeout=5)
        assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def running() -> Iterator[Stack]:
    """One emulator and one destination for the module: stopping a server costs ~0.5 s."""
    recorder = Recorder()
    dest_server: RunningServer = serve_in_thread(recorder.app())
    recorder.url = dest_server.url
    app = create_app(QStashConfig(retry_delay_scale=0.0001))
    emulator: QStashEmulator = app.extensions["qstash"]
    server = serve_in_thread(app)
    try:
        yield Stack(url=server.url, emulator=emulator, dest=recorder)
    finally:
        emulator.close()
        emulator.close()  # idempotent
        server.stop()
        dest_server.stop()
    leaked = [t.name for t in threading.enumerate() if t.name.startswith("qstash-")]
    assert leaked == [], f"emulator threads still running: {leaked}"


@pytest.fixture
def stack(running: Stack) -> Stack:
    """The shared stack with every message, script, recording and knob reset."""
    reply = requests.post(f"{running.url}/__dev/reset", json={"config": True}, timeout=5)
    assert reply.status_code == 200
    running.dest.clear()
    return running


def b64json(value: str) -> Any:
    return json.loads(base64.b64decode(value))


# ------------------------------------------------------------------------------------------
# Publishing
# ------------------------------------------------------------------------------------------


def test_publish_delivers_signed_request_with_forwarded_headers(stack: Stack) -> None:
    dest_url = f"{stack.dest.url}/composite?rid=abc&x=1%202"
    res = stack.publish_json(
        url=dest_url,
        body={"prompt": "a crab"},
        headers={"Authorization": "Bearer sk-x", "X-Req": "1"},
        retries=0,
    )
    assert res.message_id.startswith("msg_")
    assert not res.deduplicated
    stack.wait()

    [seen] = stack.dest.on("/composite")
    assert seen.url == dest_url
    assert seen.method == "POST"
    assert seen.body == b'{"prompt": "a crab"}'
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Authorization"] == "Bearer sk-x"
    assert seen.headers["X-Req"] == "1"
    assert seen.headers["User-Agent"] == "Upstash-QStash"
    assert seen.headers["Upstash-Message-Id"] == res.message_id
    assert seen.headers["Upstash-Retried"] == "0"
    assert seen.headers["Upstash-Region"] == "EU-CENTRAL-1"
    assert seen.headers["Upstash-Caller-Ip"] == "127.0.0.1"
    assert not any(name.startswith("Upstash-Forward") for name in seen.headers)
    seen.verify()

    claims = jwt.decode(seen.headers["Upstash-Signature"], options={"verify_signature": False})
    assert claims["iss"] == "Upstash"
    assert claims["sub"] == dest_url
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == 0
    assert isinstance(claims["jti"], str) and claims["jti"].startswith("jwt_")
    assert claims["body"].endswith("=")  # padded base64url of sha256 (32 bytes)
    assert "aud" not in claims
    with pytest.raises(SignatureError):
        RECEIVER.verify(
            signature=seen.headers["Upstash-Signature"], body=seen.body.decode(), url="http://x/"
        )


def test_publish_honours_method_and_query_options(stack: Stack) -> None:
    """`upstash-*` and `qstash_token` query parameters configure QStash, the rest is the URL's."""
    raw = (
        f"{stack.url}/v2/publish/{stack.dest.url}/hook"
        f"?a=1&qstash_token={DEV_TOKEN}&upstash-method=PUT&upstash-forward-x-q=yes&b=2"
    )
    reply = requests.post(raw, data=b"\x00\xffraw", timeout=5)
    assert reply.status_code == 200, reply.text
    stack.wait()
    [seen] = stack.dest.on("/hook")
    assert seen.method == "PUT"
    assert seen.url == f"{stack.dest.url}/hook?a=1&b=2"
    assert seen.headers["X-Q"] == "yes"
    assert seen.body == b"\x00\xffraw"
    assert "Content-Type" not in seen.headers


def test_publish_accepts_percent_encoded_destination(stack: Stack) -> None:
    dest_url = f"{stack.dest.url}/enc?k=v"
    encoded = quote(dest_url, safe="")
    reply = requests.post(f"{stack.url}/v2/publish/{encoded}", headers=AUTH, data="x", timeout=5)
    assert reply.status_code == 200
    stack.wait()
    [seen] = stack.dest.on("/enc")
    assert seen.url == dest_url
    seen.verify()


@pytest.mark.parametrize(
    "headers, query",
    [({}, ""), ({"Authorization": "Bearer wrong"}, ""), ({}, "?qstash_token=wrong")],
)
def test_publish_rejects_missing_or_wrong_token(
    stack: Stack, headers: dict[str, str], query: str
) -> None:
    reply = requests.post(
        f"{stack.url}/v2/publish/{stack.dest.url}/x{query}", headers=headers, timeout=5
    )
    assert reply.status_code == 401
    assert "error" in reply.json()
    with pytest.raises(QStashError, match="status: 401"):
        QStash("wrong", base_url=stack.url, retry=False).message.publish(
            url=f"{stack.dest.url}/x", body="x"
        )


def test_publish_rejects_destination_without_scheme(stack: Stack) -> None:
    reply = requests.post(f"{stack.url}/v2/publish/example.com/x", headers=AUTH, timeout=5)
    assert reply.status_code == 400
    assert reply.json() == {"error": INVALID_DESTINATION_ERROR}


def test_publish_rejects_oversized_body(stack: Stack) -> None:
    stack.configure(max_message_size=100)
    reply = requests.post(
        f"{stack.url}/v2/publish/{stack.dest.url}/x", headers=AUTH, data=b"a" * 101, timeout=5
    )
    assert reply.status_code == 413
    assert "error" in reply.json()
    ok = requests.post(
        f"{stack.url}/v2/publish/{stack.dest.url}/x", headers=AUTH, data=b"a" * 100, timeout=5
    )
    assert ok.status_code == 200


def test_publish_deduplicates_by_id_and_by_content(stack: Stack) -> None:
    url = f"{stack.dest.url}/dedup"
    headers = {**AUTH, "Upstash-Deduplication-Id": "req-1"}
    first = requests.post(f"{stack.url}/v2/publish/{url}", headers=headers, data="a", timeout=5)
    again = requests.post(f"{stack.url}/v2/publish/{url}", headers=headers, data="b", timeout=5)
    assert first.status_code == 200
    assert again.status_code == 202
    assert again.json() == {"messageId": first.json()["messageId"], "deduplicated": True}

    one = stack.publish(url=url, body="same", content_based_deduplication=True)
    two = stack.publish(url=url, body="same", content_based_deduplication=True)
    other = stack.publish(url=url, body="diff", content_based_deduplication=True)
    assert (two.message_id, two.deduplicated) == (one.message_id, True)
    assert other.message_id != one.message_id and not other.deduplicated
    stack.wait()
    assert len(stack.dest.on("/dedup")) == 3


def test_keys_and_get_message_and_cancel(stack: Stack) -> None:
    keys = stack.client.signing_key.get()
    assert (keys.current, keys.next) == (DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY)

    res = stack.publish_json(
        url=f"{stack.dest.url}/later",
        body={"a": 1},
        delay="10s",
        callback=f"{stack.dest.url}/cb",
        headers={"Authorization": "Bearer sk-secret"},
        redact={"header": ["Authorization"]},
        label="img",
    )
    message = stack.client.message.get(res.message_id)
    assert message.url == f"{stack.dest.url}/later"
    assert message.body == '{"a": 1}'
    assert message.max_retries == 3
    assert message.not_before - message.created_at == 10_000
    assert message.callback == f"{stack.dest.url}/cb"
    assert message.label == "img"
    assert message.headers is not None
    assert message.headers["Authorization"] == ["REDACTED"]

    stack.client.message.cancel(res.message_id)
    stack.wait(timeout=2)  # a cancelled message is settled
    assert stack.dest.seen == []
    [listed] = stack.messages()
    assert listed["state"] == "cancelled" and listed["attempts"] == []
    with pytest.raises(QStashError, match="status: 404"):
        stack.client.message.get(res.message_id)


def test_cancel_during_backoff_stops_further_attempts(stack: Stack) -> None:
    stack.dest.script("/flaky", Reply(status=500))
    res = stack.publish(
        url=f"{stack.dest.url}/flaky",
        body="x",
        retry_delay="100000000",  # 10 s at the test scale: long enough to cancel in between
        callback=f"{stack.dest.url}/cb",
    )
    deadline = time.monotonic() + 5
    while not stack.messages("message")[0]["attempts"] and time.monotonic() < deadline:
        time.sleep(0.01)
    stack.client.message.cancel(res.message_id)
    stack.wait()
    assert len(stack.dest.on("/flaky")) == 1
    assert len(stack.dest.on("/cb")) == 1  # the callback of the attempt made before cancelling
    assert stack.messages("message")[0]["state"] == "cancelled"


# ------------------------------------------------------------------------------------------
# Retries and callbacks
# ------------------------------------------------------------------------------------------


def test_retries_then_success_call_back_after_every_attempt(stack: Stack) -> None:
    stack.dest.script(
        "/flaky",
        Reply(status=500, body=b"boom", headers={"X-Ratelimit-Reset-Requests": "1ms"}),
        Reply(status=503, body=b""),
        Reply(status=200, body=b'{"data":[1]}'),
    )
    dest_url = f"{stack.dest.url}/flaky?rid=7"
    cb_url = f"{stack.dest.url}/cb?to=%2B15551234567&from=x"
    res = stack.publish_json(
        url=dest_url,
        body={"prompt": "p"},
        headers={"Authorization": "Bearer sk-x"},
        callback=cb_url,
        callback_headers={"Forward-X-Request-Id": "rid-7"},
    )
    stack.wait()

    attempts = stack.dest.on("/flaky")
    assert [a.headers["Upstash-Retried"] for a in attempts] == ["0", "1", "2"]
    assert {a.headers["Upstash-Message-Id"] for a in attempts} == {res.message_id}
    for attempt in attempts:
        attempt.verify()

    callbacks = sorted(stack.dest.on("/cb"), key=lambda s: s.json().get("retried", 0))
    assert len(callbacks) == 3
    for callback in callbacks:
        callback.verify()  # signed for the callback URL, query string included
        assert callback.url == cb_url
        assert callback.headers["Content-Type"] == "application/json"
        assert callback.headers["X-Request-Id"] == "rid-7"
        assert callback.headers["Upstash-Message-Id"] != res.message_id
    bodies = [c.json() for c in callbacks]
    assert ["retried" in b for b in bodies] == [False, True, True]
    assert [b.get("retried", 0) for b in bodies] == [0, 1, 2]
    assert [b["status"] for b in bodies] == [500, 503, 200]
    assert base64.b64decode(bodies[0]["body"]) == b"boom"
    assert "body" not in bodies[1]  # empty bodies are omitted
    assert b64json(bodies[2]["body"]) == {"data": [1]}
    assert bodies[0]["header"]["X-Ratelimit-Reset-Requests"] == ["1ms"]

    last = bodies[2]
    assert list(last) == [
        "status", "header", "body", "retried", "sourceMessageId", "url", "method",
        "sourceHeader", "sourceBody", "maxRetries", "notBefore", "createdAt", "callerIP",
    ]  # fmt: skip
    assert last["sourceMessageId"] == res.message_id
    assert last["url"] == dest_url
    assert last["method"] == "POST"
    assert last["sourceHeader"] == {
        "Authorization": ["Bearer sk-x"],
        "Content-Type": ["application/json"],
    }
    assert b64json(last["sourceBody"]) == {"prompt": "p"}
    assert last["maxRetries"] == 3
    assert last["notBefore"] == last["createdAt"]
    assert last["callerIP"] == "127.0.0.1"

    listed = {m["id"]: m for m in stack.messages()}
    assert listed[res.message_id]["state"] == "delivered"
    assert [a["status"] for a in listed[res.message_id]["attempts"]] == [500, 503, 200]
    assert {m["kind"] for m in listed.values()} == {"message", "callback"}
    assert all(
        m["sourceMessageId"] == res.message_id for m in listed.values() if m["kind"] == "callback"
    )


def test_final_failure_sends_failure_callback_with_dlq_id(stack: Stack) -> None:
    stack.dest.script("/down", *[Reply(status=500, body=b"nope")] * 3)
    res = stack.publish(
        url=f"{stack.dest.url}/down",
        body="x",
        retries=2,  # default backoff: e^2.5 s and e^5 s, scaled down
        callback=f"{stack.dest.url}/cb",
        failure_callback=f"{stack.dest.url}/failed",
        failure_callback_headers={"Forward-X-F": "1"},
    )
    stack.wait()
    assert len(stack.dest.on("/down")) == 3
    assert len(stack.dest.on("/cb")) == 3
    [failure] = stack.dest.on("/failed")
    failure.verify()
    assert failure.headers["X-F"] == "1"
    body = failure.json()
    assert body["status"] == 500
    assert body["retried"] == body["maxRetries"] == 2
    assert body["sourceMessageId"] == res.message_id
    [message] = stack.messages("message")
    assert message["state"] == "failed"
    assert body["dlqId"] == message["dlqId"]
    assert message["dlqId"].split("-")[1].isdigit()


def test_non_retryable_489_fails_at_once(stack: Stack) -> None:
    stack.dest.script(
        "/reject",
        Reply(status=489, body=b"bad prompt", headers={"Upstash-NonRetryable-Error": "true"}),
    )
    stack.publish(
        url=f"{stack.dest.url}/reject",
        body="x",
        retries=3,
        failure_callback=f"{stack.dest.url}/failed",
    )
    stack.wait()
    assert len(stack.dest.on("/reject")) == 1
    [failure] = stack.dest.on("/failed")
    body = failure.json()
    assert body["status"] == 489
    assert "retried" not in body and body["maxRetries"] == 3
    assert base64.b64decode(body["body"]) == b"bad prompt"
    assert stack.messages("message")[0]["state"] == "failed"


def test_plain_489_is_retried(stack: Stack) -> None:
    stack.dest.script("/busy", Reply(status=489))
    stack.publish(url=f"{stack.dest.url}/busy", body="x", retry_delay="0")
    stack.wait()
    assert len(stack.dest.on("/busy")) == 2


@pytest.mark.parametrize(
    "reply_headers, retry_delay",
    [({"Retry-After": "0"}, None), ({}, "0"), ({"X-RateLimit-Reset-Tokens": "10ms"}, "1e12")],
)
def test_retry_delay_comes_from_reply_headers_then_expression(
    stack: Stack, reply_headers: dict[str, str], retry_delay: str | None
) -> None:
    """At scale 1 the default backoff would wait 12 s; these must retry at once."""
    stack.configure(retry_delay_scale=1.0)
    stack.dest.script("/slow", Reply(status=429, headers=reply_headers))
    stack.publish(url=f"{stack.dest.url}/slow", body="x", retry_delay=retry_delay)
    stack.wait(timeout=3)
    assert len(stack.dest.on("/slow")) == 2


def test_timed_out_attempt_calls_back_without_status(stack: Stack) -> None:
    stack.dest.script("/hang", Reply(sleep=1.0))
    res = stack.publish(
        url=f"{stack.dest.url}/hang",
        body="x",
        retries=0,
        timeout="200ms",
        callback=f"{stack.dest.url}/cb",
        failure_callback=f"{stack.dest.url}/failed",
    )
    stack.wait()
    [callback] = stack.dest.on("/cb")
    body = callback.json()
    assert "status" not in body and "header" not in body and "body" not in body
    assert body["sourceMessageId"] == res.message_id
    [failure] = stack.dest.on("/failed")
    assert "status" not in failure.json() and failure.json()["dlqId"]
    [message] = stack.messages("message")
    assert message["attempts"][0]["status"] is None
    assert message["attempts"][0]["error"] == "timeout"


def test_unreachable_destination_counts_as_failed_attempt(stack: Stack) -> None:
    stack.publish(
        url="http://127.0.0.1:1/nothing-listens-here",
        body="x",
        retries=1,
        retry_delay="0",
        failure_callback=f"{stack.dest.url}/failed",
    )
    stack.wait()
    [message] = stack.messages("message")
    assert [a["status"] for a in message["attempts"]] == [None, None]
    assert "status" not in stack.dest.on("/failed")[0].json()


def test_callback_response_body_is_truncated_to_max_message_size(stack: Stack) -> None:
    stack.configure(max_message_size=1000)
    stack.dest.script("/big", Reply(body=b"x" * 5000))
    stack.publish(url=f"{stack.dest.url}/big", body="x", callback=f"{stack.dest.url}/cb")
    stack.wait()
    [callback] = stack.dest.on("/cb")
    assert base64.b64decode(callback.json()["body"]) == b"x" * 1000


def test_callbacks_are_retried_with_their_own_settings(stack: Stack) -> None:
    stack.dest.script("/cb", Reply(status=500), Reply(status=500))
    stack.publish(
        url=f"{stack.dest.url}/ok",
        body="x",
        retries=0,
        retry_delay="0",
        callback=f"{stack.dest.url}/cb",
        callback_headers={"Retries": "1"},
    )
    stack.wait()
    assert len(stack.dest.on("/ok")) == 1  # a failing callback never re-calls the destination
    calls = stack.dest.on("/cb")
    assert [c.headers["Upstash-Retried"] for c in calls] == ["0", "1"]
    assert calls[0].headers["Upstash-Message-Id"] == calls[1].headers["Upstash-Message-Id"]
    [callback] = stack.messages("callback")
    assert callback["state"] == "failed" and callback["maxRetries"] == 1


# ------------------------------------------------------------------------------------------
# Dev knobs and other endpoints
# ------------------------------------------------------------------------------------------


def test_duplicate_deliveries_send_every_attempt_twice(stack: Stack) -> None:
    stack.configure(duplicate_deliveries=2)
    res = stack.publish(url=f"{stack.dest.url}/twice", body="x", callback=f"{stack.dest.url}/cb")
    stack.wait()
    deliveries = stack.dest.on("/twice")
    assert len(deliveries) == 2
    assert {d.headers["Upstash-Message-Id"] for d in deliveries} == {res.message_id}
    assert {d.headers["Upstash-Retried"] for d in deliveries} == {"0"}
    callbacks = stack.dest.on("/cb")
    assert len(callbacks) == 2
    assert len({c.headers["Upstash-Message-Id"] for c in callbacks}) == 1
    [message] = stack.messages("message")
    assert len(message["attempts"]) == 1


def test_reorder_callbacks_delivers_newest_first(stack: Stack) -> None:
    stack.configure(reorder_callbacks=True)
    stack.dest.script("/flaky", Reply(status=500), Reply(status=500))
    stack.publish(
        url=f"{stack.dest.url}/flaky", body="x", retry_delay="0", callback=f"{stack.dest.url}/cb"
    )
    stack.wait()
    assert [c.json().get("retried", 0) for c in stack.dest.on("/cb")] == [2, 1, 0]


def test_enqueue_delivers_in_order_one_at_a_time(stack: Stack) -> None:
    for i in range(3):
        stack.dest.script(f"/q{i}", Reply(sleep=0.05))
        stack.client.message.enqueue(queue="jobs", url=f"{stack.dest.url}/q{i}", body=str(i))
    stack.wait()
    assert [s.path for s in stack.dest.seen] == ["/q0", "/q1", "/q2"]
    assert {m["queue"] for m in stack.messages()} == {"jobs"}


def test_batch_publishes_each_item(stack: Stack) -> None:
    replies = stack.client.message.batch_json(
        [
            {"url": f"{stack.dest.url}/b1", "body": {"n": 1}},
            {"url": f"{stack.dest.url}/b2", "body": {"n": 2}, "method": "PUT"},
        ]
    )
    assert all(isinstance(r, BatchResponse) for r in replies)
    assert len({r.message_id for r in replies if isinstance(r, BatchResponse)}) == 2
    stack.wait()
    assert stack.dest.on("/b1")[0].json() == {"n": 1}
    assert stack.dest.on("/b2")[0].method == "PUT"
    stack.dest.on("/b2")[0].verify()


def test_dev_endpoints_wait_idle_config_and_reset(stack: Stack) -> None:
    bad = requests.post(f"{stack.url}/__dev/config", json={"duplicate_deliveries": 0}, timeout=5)
    assert bad.status_code == 400
    stack.publish(url=f"{stack.dest.url}/later", body="x", delay="1h")
    waited = requests.post(f"{stack.url}/__dev/wait-idle", json={"timeout": 0.1}, timeout=5)
    assert (waited.status_code, waited.json()) == (408, {"idle": False})
    assert requests.post(f"{stack.url}/__dev/reset", timeout=5).status_code == 200
    assert stack.messages() == []
    waited = requests.post(f"{stack.url}/__dev/wait-idle", json={"timeout": 1}, timeout=5)
    assert (waited.status_code, waited.json()) == (200, {"idle": True})


# ------------------------------------------------------------------------------------------
# The JWT `sub`: with or without the query string ([UNCONFIRMED] which one QStash signs)
# ------------------------------------------------------------------------------------------


def verified_claims(seen: Seen) -> dict[str, Any]:
    """The JWT claims, checked with the signing key (not just decoded)."""
    claims: dict[str, Any] = jwt.decode(
        seen.headers["Upstash-Signature"],
        DEV_CURRENT_SIGNING_KEY,
        algorithms=["HS256"],
        issuer="Upstash",
    )
    return claims


@pytest.mark.parametrize("include_query", [True, False])
def test_sub_form_applies_to_deliveries_callbacks_and_failure_callbacks(
    stack: Stack, include_query: bool
) -> None:
    stack.configure(sub_includes_query=include_query)
    stack.dest.script("/composite", Reply(status=500, body=b"down"))
    dest_url = f"{stack.dest.url}/composite?rid=abc&x=1%202"
    cb_url = f"{stack.dest.url}/cb?request=r-1"
    failed_url = f"{stack.dest.url}/failed?request=r-1&final=1"
    stack.publish(url=dest_url, body="x", retries=0, callback=cb_url, failure_callback=failed_url)
    stack.wait()

    [delivery] = stack.dest.on("/composite")
    [callback] = stack.dest.on("/cb")
    [failure] = stack.dest.on("/failed")
    for seen, full_url in ((delivery, dest_url), (callback, cb_url), (failure, failed_url)):
        assert seen.url == full_url  # the request itself always goes to the URL with its query
        bare_url = full_url.partition("?")[0]
        signed, other = (full_url, bare_url) if include_query else (bare_url, full_url)
        token, body = seen.headers["Upstash-Signature"], seen.body.decode()
        RECEIVER.verify(signature=token, body=body, url=signed)
        # The Receiver reports the next key's error, which hides "Invalid subject".
        with pytest.raises(SignatureError):
            RECEIVER.verify(signature=token, body=body, url=other)
        assert verified_claims(seen)["sub"] == signed


def test_sub_includes_the_query_by_default(stack: Stack) -> None:
    assert requests.get(f"{stack.url}/__dev/config", timeout=5).json()["sub_includes_query"]
    stack.publish(url=f"{stack.dest.url}/q?a=1", body="x", retries=0)
    stack.wait()
    [seen] = stack.dest.on("/q")
    assert verified_claims(seen)["sub"] == f"{stack.dest.url}/q?a=1"


# ------------------------------------------------------------------------------------------
# Plan limits: max message size and the retry cap
# ------------------------------------------------------------------------------------------


def test_plan_presets_and_explicit_overrides_in_dev_config(stack: Stack) -> None:
    config = requests.get(f"{stack.url}/__dev/config", timeout=5).json()
    assert config["plan"] == "free" and config["retries_over_cap"] == "reject"
    assert config["max_message_size"] is None and config["max_retries"] is None
    assert config["effective"] == {"max_message_size": 1_000_000, "max_retries": 3}

    def configure(**changes: Any) -> dict[str, Any]:
        reply = requests.post(f"{stack.url}/__dev/config", json=changes, timeout=5)
        assert reply.status_code == 200, reply.text
        effective: dict[str, Any] = reply.json()["effective"]
        return effective

    assert configure(plan="payg") == {"max_message_size": 10_000_000, "max_retries": 5}
    assert configure(plan="fixed") == {"max_message_size": 50_000_000, "max_retries": 20}
    assert configure(max_message_size=100) == {"max_message_size": 100, "max_retries": 20}
    assert configure(plan="free") == {"max_message_size": 100, "max_retries": 3}  # kept
    assert configure(max_message_size=None, max_retries=7) == {
        "max_message_size": 1_000_000,
        "max_retries": 7,
    }
    for bad in (
        {"plan": "pro"},
        {"retries_over_cap": "ignore"},
        {"max_retries": -1},
        {"max_retries": True},
        {"max_message_size": 0},
        {"sub_includes_query": "yes"},
    ):
        reply = requests.post(f"{stack.url}/__dev/config", json=bad, timeout=5)
        assert reply.status_code == 400, bad
        assert set(reply.json()) == {"error"}
    with pytest.raises(ValueError):
        QStashConfig(plan="pro")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "plan, size, status",
    [
        ("free", 1_000_000, 200),
        ("free", 1_000_001, 413),
        ("payg", 1_000_001, 200),
        ("payg", 10_000_001, 413),
    ],
)
def test_publish_size_limit_follows_the_plan(
    stack: Stack, plan: str, size: int, status: int
) -> None:
    stack.configure(plan=plan)
    reply = requests.post(
        f"{stack.url}/v2/publish/{stack.dest.url}/big-in",
        headers=AUTH,
        data=b"a" * size,
        timeout=10,
    )
    assert reply.status_code == status, reply.text
    stack.wait()
    assert len(stack.dest.on("/big-in")) == (1 if status == 200 else 0)


@pytest.mark.parametrize(
    "header", ["Upstash-Retries", "Upstash-Callback-Retries", "Upstash-Failure-Callback-Retries"]
)
def test_retries_above_the_plan_cap_are_rejected_by_default(stack: Stack, header: str) -> None:
    base = {
        **AUTH,
        "Upstash-Delay": "1h",  # stays pending, so it can be looked at and cancelled
        "Upstash-Callback": f"{stack.dest.url}/cb",
        "Upstash-Failure-Callback": f"{stack.dest.url}/failed",
    }
    url = f"{stack.url}/v2/publish/{stack.dest.url}/x"
    at_cap = requests.post(url, headers={**base, header: "3"}, data="x", timeout=5)
    assert at_cap.status_code == 200, at_cap.text
    if header == "Upstash-Retries":
        assert stack.client.message.get(at_cap.json()["messageId"]).max_retries == 3
    stack.client.message.cancel(at_cap.json()["messageId"])

    over = requests.post(url, headers={**base, header: "4"}, data="x", timeout=5)
    assert over.status_code == 400
    error = over.json()
    assert list(error) == ["error"] and header in error["error"] and "3" in error["error"]
    assert [m["state"] for m in stack.messages()] == ["cancelled"]  # nothing was stored

    stack.configure(plan="payg")  # the cap is the plan's: 5 now
    assert requests.post(url, headers={**base, header: "5"}, data="x", timeout=5).ok
    assert requests.post(url, headers={**base, header: "6"}, timeout=5).status_code == 400


def test_rejected_retries_reach_the_sdk_and_batch_items_as_errors(stack: Stack) -> None:
    with pytest.raises(QStashError, match="status: 400"):
        stack.publish(url=f"{stack.dest.url}/x", body="x", retries=4)
    reply = requests.post(
        f"{stack.url}/v2/batch",
        headers=AUTH,
        json=[
            {"destination": f"{stack.dest.url}/b1", "headers": {"Upstash-Retries": "9"}},
            {"destination": f"{stack.dest.url}/b2", "headers": {"Upstash-Retries": "1"}},
        ],
        timeout=5,
    )
    assert reply.status_code == 200
    over, ok = reply.json()
    assert list(over) == ["error"] and "Upstash-Retries" in over["error"]
    assert ok["messageId"].startswith("msg_")


def test_missing_retries_header_takes_the_default_held_to_the_cap(stack: Stack) -> None:
    stack.configure(max_retries=1)  # below the default of 3: absent must not be refused
    res = stack.publish(url=f"{stack.dest.url}/later", body="x", delay="1h")
    assert stack.client.message.get(res.message_id).max_retries == 1
    with pytest.raises(QStashError, match="status: 400"):
        stack.publish(url=f"{stack.dest.url}/later", body="x", retries=2)


@pytest.mark.parametrize("plan, cap", [("free", 3), ("payg", 5)])
def test_clamp_uses_the_cap_in_get_message_and_callbacks(stack: Stack, plan: str, cap: int) -> None:
    stack.configure(plan=plan, retries_over_cap="clamp")
    later = stack.publish(url=f"{stack.dest.url}/later", body="x", delay="1h", retries=50)
    assert stack.client.message.get(later.message_id).max_retries == cap
    stack.client.message.cancel(later.message_id)

    # One more failure than the cap allows attempts for: unclamped, attempt cap+2 would succeed.
    stack.dest.script("/down", *[Reply(status=500)] * (cap + 1))
    stack.dest.script("/failed", *[Reply(status=500)] * (cap + 1))
    res = stack.publish(
        url=f"{stack.dest.url}/down",
        body="x",
        retries=50,
        retry_delay="0",
        callback=f"{stack.dest.url}/cb",
        callback_headers={"Retries": "0"},  # below the cap: kept, not the source's
        failure_callback=f"{stack.dest.url}/failed",
        failure_callback_headers={"Retries": "50"},
    )
    stack.wait()
    assert len(stack.dest.on("/down")) == cap + 1
    bodies = [c.json() for c in stack.dest.on("/cb")]
    assert sorted(b.get("retried", 0) for b in bodies) == list(range(cap + 1))
    assert {b["maxRetries"] for b in bodies} == {cap}
    failures = stack.dest.on("/failed")
    assert len(failures) == cap + 1  # the failure callback's own 50 retries were clamped too
    assert {f.json()["maxRetries"] for f in failures} == {cap}
    assert {f.json()["retried"] for f in failures} == {cap}
    listed = stack.messages()
    [source] = [m for m in listed if m["id"] == res.message_id]
    [failure_message] = [m for m in listed if m["kind"] == "failure_callback"]
    assert (source["state"], source["maxRetries"]) == ("failed", cap)
    assert (failure_message["state"], failure_message["maxRetries"]) == ("failed", cap)
    assert {m["maxRetries"] for m in listed if m["kind"] == "callback"} == {0}


def test_clamp_holds_callback_retries_to_the_cap(stack: Stack) -> None:
    stack.configure(retries_over_cap="clamp")
    stack.dest.script("/cb", *[Reply(status=500)] * 4, Reply(status=200))
    stack.publish(
        url=f"{stack.dest.url}/ok",
        body="x",
        retries=0,
        retry_delay="0",
        callback=f"{stack.dest.url}/cb",
        callback_headers={"Retries": "50"},
    )
    stack.wait()
    assert len(stack.dest.on("/cb")) == 4  # 1 + 3 retries; unclamped, the 5th would succeed
    [callback] = stack.messages("callback")
    assert (callback["state"], callback["maxRetries"]) == ("failed", 3)


# ------------------------------------------------------------------------------------------
# Truncation of the provider's answer, and what the callback carries besides
# ------------------------------------------------------------------------------------------


def provider_answer(size: int) -> bytes:
    """`size` bytes of JSON-looking, non-repeating content, so a prefix is recognisable."""
    filler = base64.b64encode(hashlib.sha256(b"seed").digest() * (size // 32 + 1)).decode()
    raw = ('{"data":[{"b64_json":"' + filler).encode()
    return raw[: size - 4] + b'"}]}'


@pytest.mark.parametrize("size", [999, 1000, 1001, 5000])
def test_callback_body_is_the_answer_cut_to_max_message_size(stack: Stack, size: int) -> None:
    stack.configure(max_message_size=1000)
    answer = provider_answer(size)
    assert len(answer) == size
    stack.dest.script(
        "/big",
        Reply(body=answer, headers={"Content-Type": "application/json", "X-Request-Id": "r-1"}),
    )
    stack.publish(url=f"{stack.dest.url}/big", body="x", callback=f"{stack.dest.url}/cb")
    stack.wait()
    [callback] = stack.dest.on("/cb")
    callback.verify()
    payload = callback.json()
    encoded = payload["body"]
    decoded = base64.b64decode(encoded, validate=True)  # still strict, padded base64
    kept = min(size, 1000)
    assert decoded == answer[:kept]
    assert len(encoded) == 4 * math.ceil(kept / 3)
    # The provider's own headers, describing the whole answer, not the cut one.
    assert payload["header"]["Content-Length"] == [str(size)]
    assert payload["header"]["Content-Type"] == ["application/json"]
    assert payload["header"]["X-Request-Id"] == ["r-1"]
    if size > 1000:
        with pytest.raises(ValueError):
            json.loads(decoded)  # what the composite handler must survive
    else:
        assert json.loads(decoded)["data"]


def test_failure_callback_body_is_cut_the_same_way(stack: Stack) -> None:
    stack.configure(max_message_size=1000)
    answer = provider_answer(5000)
    stack.dest.script("/down", Reply(status=500, body=answer))
    stack.publish(
        url=f"{stack.dest.url}/down",
        body="x",
        retries=0,
        callback=f"{stack.dest.url}/cb",
        failure_callback=f"{stack.dest.url}/failed",
    )
    stack.wait()
    for seen in (*stack.dest.on("/cb"), *stack.dest.on("/failed")):
        payload = seen.json()
        assert base64.b64decode(payload["body"], validate=True) == answer[:1000]
        assert payload["header"]["Content-Length"] == ["5000"]
    assert "dlqId" in stack.dest.on("/failed")[0].json()


@pytest.mark.parametrize("plan, kept", [("free", 1_000_000), ("payg", 1_000_500)])
def test_truncation_limit_follows_the_plan(stack: Stack, plan: str, kept: int) -> None:
    stack.configure(plan=plan)
    answer = provider_answer(1_000_500)
    stack.dest.script("/big", Reply(body=answer))
    stack.publish(url=f"{stack.dest.url}/big", body="x", callback=f"{stack.dest.url}/cb")
    stack.wait()
    [callback] = stack.dest.on("/cb")
    callback.verify()
    assert base64.b64decode(callback.json()["body"], validate=True) == answer[:kept]


def test_gzipped_answer_is_cut_after_decoding_without_its_length_headers(stack: Stack) -> None:
    """Go's transport undoes gzip it asked for and drops Content-Encoding and Content-Length."""
    stack.configure(max_message_size=1000)
    answer = provider_answer(5000)
    stack.dest.script(
        "/gz", Reply(body=gzip.compress(answer), headers={"Content-Encoding": "gzip"})
    )
    stack.publish(url=f"{stack.dest.url}/gz", body="x", callback=f"{stack.dest.url}/cb")
    stack.wait()
    payload = stack.dest.on("/cb")[0].json()
    assert base64.b64decode(payload["body"]) == answer[:1000]
    assert "Content-Length" not in payload["header"]
    assert "Content-Encoding" not in payload["header"]


def test_forwarded_headers_come_back_in_the_signed_source_header(stack: Stack) -> None:
    """Success, failing-status and unreachable attempts all echo the publish's forwarded headers."""
    stack.dest.script("/down", Reply(status=500))
    publish_headers = {
        **AUTH,
        "Content-Type": "text/plain",
        "Upstash-Forward-X-Foo": "v",
        "upstash-forward-x-request-id": "req-42",  # lower case on the wire: canonicalised
        "Upstash-Retries": "0",
        "Upstash-Callback": f"{stack.dest.url}/cb",
        "Upstash-Failure-Callback": f"{stack.dest.url}/failed",
    }
    for destination in (
        f"{stack.dest.url}/ok",
        f"{stack.dest.url}/down",
        "http://127.0.0.1:1/nothing-listens-here",
    ):
        reply = requests.post(
            f"{stack.url}/v2/publish/{destination}",
            headers=publish_headers,
            data=destination,  # distinct bodies: no content-based surprises
            timeout=5,
        )
        assert reply.status_code == 200, reply.text
    stack.wait()

    callbacks = stack.dest.on("/cb")
    failures = stack.dest.on("/failed")
    assert len(callbacks) == 3 and len(failures) == 2
    expected = {"X-Foo": ["v"], "X-Request-Id": ["req-42"], "Content-Type": ["text/plain"]}
    for seen in (*callbacks, *failures):
        seen.verify()  # the body, sourceHeader included, is covered by the signature
        assert seen.json()["sourceHeader"] == expected
    by_url = {c.json()["url"]: c.json() for c in callbacks}
    assert by_url[f"{stack.dest.url}/ok"]["status"] == 200
    assert by_url[f"{stack.dest.url}/down"]["status"] == 500
    assert "status" not in by_url["http://127.0.0.1:1/nothing-listens-here"]
    assert all("dlqId" in f.json() for f in failures)


# ------------------------------------------------------------------------------------------
# Schedules (created like deploy.sh does, triggered by hand)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("include_query", [True, False])
def test_schedule_is_created_replaced_listed_and_triggered(
    stack: Stack, include_query: bool
) -> None:
    stack.configure(sub_includes_query=include_query)
    dest_url = f"{stack.dest.url}/composite?sweep=1"
    create = f"{stack.url}/v2/schedules/{dest_url}"
    headers = {
        **AUTH,
        "Upstash-Cron": "*/10 * * * *",
        "Upstash-Schedule-Id": "picture-line-sweep",
    }
    first = requests.post(create, headers=headers, timeout=5)  # deploy.sh sends no body
    assert (first.status_code, first.json()) == (200, {"scheduleId": "picture-line-sweep"})
    trigger = f"{stack.url}/__dev/schedules/picture-line-sweep/trigger"
    run1 = requests.post(trigger, timeout=5)
    assert run1.status_code == 200, run1.text
    stack.wait()

    replaced = requests.post(
        create,
        headers={
            **headers,
            "Upstash-Cron": "*/5 * * * *",
            "Content-Type": "application/json",
            "Upstash-Callback": f"{stack.dest.url}/cb",
        },
        data=b'{"sweep":true}',
        timeout=5,
    )
    assert replaced.json() == {"scheduleId": "picture-line-sweep"}
    [schedule] = stack.client.schedule.list()
    assert (schedule.schedule_id, schedule.cron) == ("picture-line-sweep", "*/5 * * * *")
    assert schedule.destination == dest_url and schedule.body == '{"sweep":true}'
    assert schedule.retries == 3 and schedule.callback == f"{stack.dest.url}/cb"
    assert stack.client.schedule.get("picture-line-sweep").last_schedule_time is None
    run2 = requests.post(trigger, timeout=5)
    assert run2.status_code == 200
    assert stack.client.schedule.get("picture-line-sweep").last_schedule_time is not None
    stack.wait()

    deliveries = stack.dest.on("/composite")
    assert len(deliveries) == 2  # nothing but the two triggers delivered anything
    ids = [run1.json()["messageId"], run2.json()["messageId"]]
    assert [d.headers["Upstash-Message-Id"] for d in deliveries] == ids
    assert [d.body for d in deliveries] == [b"", b'{"sweep":true}']
    signed = dest_url if include_query else dest_url.partition("?")[0]
    for delivery in deliveries:
        assert delivery.url == dest_url
        assert delivery.headers["Upstash-Schedule-Id"] == "picture-line-sweep"
        RECEIVER.verify(
            signature=delivery.headers["Upstash-Signature"], body=delivery.body.decode(), url=signed
        )
        assert verified_claims(delivery)["sub"] == signed
    [callback] = stack.dest.on("/cb")
    assert callback.json()["scheduleId"] == "picture-line-sweep"
    assert callback.json()["sourceMessageId"] == ids[1]

    stack.client.schedule.delete("picture-line-sweep")
    assert stack.client.schedule.list() == []
    assert requests.post(trigger, timeout=5).status_code == 404


def test_schedule_creation_is_validated_like_a_publish(stack: Stack) -> None:
    url = f"{stack.url}/v2/schedules/{stack.dest.url}/x"
    no_cron = requests.post(url, headers=AUTH, timeout=5)
    assert no_cron.status_code == 400 and "Upstash-Cron" in no_cron.json()["error"]
    bad_cron = requests.post(url, headers={**AUTH, "Upstash-Cron": "every minute"}, timeout=5)
    assert bad_cron.status_code == 400
    no_auth = requests.post(url, headers={"Upstash-Cron": "* * * * *"}, timeout=5)
    assert no_auth.status_code == 401
    with pytest.raises(QStashError, match="status: 400"):
        stack.client.schedule.create(destination=f"{stack.dest.url}/x", cron="* * * * *", retries=9)
    generated = stack.client.schedule.create(
        destination=f"{stack.dest.url}/x", cron="CRON_TZ=Europe/Berlin 0 9 * * 1-5"
    )
    assert generated.startswith("scd_")
    assert [s.schedule_id for s in stack.client.schedule.list()] == [generated]
    assert requests.post(f"{stack.url}/__dev/reset", timeout=5).status_code == 200
    assert stack.client.schedule.list() == []
    assert stack.dest.seen == []


# ------------------------------------------------------------------------------------------
# Pure helpers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression, retried, expected",
    [
        ("1000", 0, 1000.0),
        ("1000 * (1 + retried)", 2, 3000.0),
        ("pow(2, retried) * 1000", 3, 8000.0),
        ("max(10, min(sqrt(16), abs(-3))) + floor(1.5) + ceil(1.2) + round(2.5)", 0, 16.0),
        ("exp(0) - 2 ** 2 / 4", 0, 0.0),
    ],
)
def test_retry_delay_expressions(expression: str, retried: int, expected: float) -> None:
    assert evaluate_retry_delay(expression, retried) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "().__class__",
        "open('x')",
        "retried.real",
        "lambda: 1",
        "10 ** 10 ** 10",
        "pow(1)",
        "min(*[1])",
        "x + 1",
        "True",
        "'1000'",
        "1 +",
    ],
)
def test_retry_delay_expressions_reject_anything_else(expression: str) -> None:
    with pytest.raises(ValueError):
        evaluate_retry_delay(expression, 1)


def test_bad_retry_delay_expression_is_rejected_at_publish(stack: Stack) -> None:
    headers = {**AUTH, "Upstash-Retry-Delay": "__import__('os')"}
    reply = requests.post(f"{stack.url}/v2/publish/{stack.dest.url}/x", headers=headers, timeout=5)
    assert reply.status_code == 400


@pytest.mark.parametrize(
    "text, seconds",
    [("50s", 50.0), ("1d10h30m", 124_200.0), ("6m5s", 365.0), ("250ms", 0.25), ("90", 90.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_make_signature_matches_reference_vector() -> None:
    body = b'{"prompt":"a crab holding a light saber"}'
    token = make_signature(
        DEV_CURRENT_SIGNING_KEY, "http://127.0.0.1:8080/composite", body, now=1767225600
    )
    claims = jwt.decode(
        token, DEV_CURRENT_SIGNING_KEY, algorithms=["HS256"], options={"verify_exp": False}
    )
    assert claims["body"] == "GXCQMz-1ENHpnBdYcY_gqUHNivRaMA0mX-E6I9o96Lk="
    assert (claims["iat"], claims["exp"], claims["nbf"]) == (1767225600, 1767225900, 0)


@pytest.mark.parametrize(
    "url, include_query, subject",
    [
        ("http://h:1/cb?request=r-1&x=1%202", True, "http://h:1/cb?request=r-1&x=1%202"),
        ("http://h:1/cb?request=r-1&x=1%202", False, "http://h:1/cb"),
        ("http://h:1/cb/", False, "http://h:1/cb/"),
        ("http://h:1/cb?", False, "http://h:1/cb"),
    ],
)
def test_signature_subject(url: str, include_query: bool, subject: str) -> None:
    assert signature_subject(url, include_query) == subject


def test_plan_limits_table() -> None:
    assert {plan: (limits.max_message_size, limits.max_retries) for plan, limits in
            PLAN_LIMITS.items()} == {
        "free": (1_000_000, 3), "payg": (10_000_000, 5), "fixed": (50_000_000, 20),
    }  # fmt: skip
    config = QStashConfig(plan="fixed")
    assert (config.message_size_limit, config.retry_cap) == (50_000_000, 20)
    config = QStashConfig(plan="payg", max_message_size=5, max_retries=0)
    assert (config.message_size_limit, config.retry_cap) == (5, 0)
