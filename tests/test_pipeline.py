"""The whole pipeline on the local stack: real functions (functions-framework), real SDKs,
stand-ins speaking each vendor's protocol, a real PostgreSQL. Faults are injected through the
stand-ins' /__dev/ endpoints; nothing of ours is patched."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from PIL import Image

from devstack.qstash import DEV_CURRENT_SIGNING_KEY, DEV_NEXT_SIGNING_KEY, make_signature
from devstack.stack_client import StackClient, count_rows, post_callback, queued_row
from devstack.vendor_calls import callback_payload, provider_success

pytestmark = pytest.mark.stack


# --- the happy path ----------------------------------------------------------------------


def test_a_prompt_becomes_one_framed_mms(stack: StackClient, caller: str) -> None:
    response = stack.submit("a crab holding a light saber", to=caller)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"

    row = stack.wait_finished(body["request_id"])
    assert row["status"] == "delivered"
    assert row["message_sid"].startswith("MM")
    assert row["qstash_message_id"].startswith("msg_")
    assert row["image_path"].endswith(f"{row['media_token']}.jpg")
    assert {"frame_ms", "upload_ms", "send_ms"} <= set(row["timings"])
    assert row["output_image_tokens"] > 0

    messages = stack.messages_to(caller)
    assert len(messages) == 1
    mms = messages[0]
    assert mms["status"] == "delivered"
    assert mms["from"] == stack.env["DEMO_FROM"]
    assert "a crab holding a light saber" in mms["body"]
    picture = Image.open(mms["media"][0]["path"])
    assert picture.format == "JPEG" and picture.size == (1024, 1024)

    # The stored object is public at an unguessable URL and served as a JPEG.
    public = requests.get(
        f"{stack.env['SUPABASE_URL']}/storage/v1/object/public/pictures/{row['image_path']}",
        timeout=5,
    )
    assert public.status_code == 200
    assert public.headers["Content-Type"] == "image/jpeg"


def test_generate_asks_for_a_jpeg_from_a_gpt_image_model(stack: StackClient, caller: str) -> None:
    request_id = stack.submit("a teapot in the rain", to=caller).json()["request_id"]
    stack.wait_finished(request_id)
    log = requests.get(
        stack.env["OPENAI_BASE_URL"].removesuffix("/v1") + "/__dev/requests", timeout=5
    ).json()
    entries = log if isinstance(log, list) else next(v for v in log.values() if isinstance(v, list))
    sent = next(e for e in entries if "a teapot in the rain" in json.dumps(e))
    body = sent.get("json") or sent.get("body")
    assert body["model"] == "gpt-image-2.6-flare"
    assert body["output_format"] == "jpeg"
    assert "response_format" not in body
    assert caller not in json.dumps(sent)  # only a salted hash of the number leaves us


# --- generate: bad input, and nothing recorded -------------------------------------------


@pytest.mark.parametrize(
    ("method", "kwargs", "status", "message"),
    [
        ("GET", {}, 405, "POST"),
        ("POST", {"data": "prompt=x", "headers": {"Content-Type": "text/plain"}}, 415, "send JSON"),
        (
            "POST",
            {"data": b"<x/>", "headers": {"Content-Type": "application/xml"}},
            415,
            "send JSON",
        ),
        (
            "POST",
            {
                "data": "prompt=x&to=%2B15552000001",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            403,
            "forbidden",
        ),
        (
            "POST",
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            "POST",
            {"json": {"to": "+15552000001", "from": "+15005550006", "prompt": "x"}},
            401,
            "unauthorized",
        ),
        (
            "POST",
            {
                "json": {
                    "to": "+15552000001",
                    "from": "+15005550006",
                    "prompt": "x",
                    "operator_key": "wrong",
                }
            },
            401,
            "unauthorized",
        ),
        (
            "POST",
            {"data": b"\xff\xfe", "headers": {"Content-Type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            "POST",
            {"data": "x" * 70_000, "headers": {"Content-Type": "application/json"}},
            413,
            "too large",
        ),
    ],
)
def test_generate_refuses_bad_requests_and_records_nothing(
    stack: StackClient, method: str, kwargs: dict[str, Any], status: int, message: str
) -> None:
    before = count_rows(stack)
    response = requests.request(method, stack.env["GENERATE_URL"], timeout=10, **kwargs)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert count_rows(stack) == before


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"to": "555-1234", "prompt": "a cat"}, "E.164"),
        ({"prompt": "a cat"}, "'to' is required"),
        ({"to": "+15552000002", "prompt": ""}, "empty"),
        ({"to": "+15552000002", "prompt": "z" * 1001}, "too long"),
    ],
)
def test_generate_explains_invalid_fields(
    stack: StackClient, payload: dict[str, Any], message: str
) -> None:
    before = count_rows(stack)
    payload = {"from": stack.env["DEMO_FROM"], **payload}
    response = requests.post(
        stack.env["GENERATE_URL"],
        json=payload,
        headers={"X-Operator-Key": stack.env["OPERATOR_KEY"]},
        timeout=10,
    )
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert count_rows(stack) == before


def test_generate_accepts_the_operator_key_in_the_body(stack: StackClient, caller: str) -> None:
    response = requests.post(
        stack.env["GENERATE_URL"],
        json={
            "to": caller,
            "from": stack.env["DEMO_FROM"],
            "prompt": "a red kite",
            "operator_key": stack.env["OPERATOR_KEY"],
        },
        timeout=10,
    )
    assert response.status_code == 202
    assert stack.wait_finished(response.json()["request_id"])["status"] == "delivered"


def test_store_outage_at_generate_is_a_503_and_nothing_is_published(
    stack: StackClient, caller: str
) -> None:
    published = len(stack.qstash_messages())
    stack.fault("supabase", service="rest", kind="503", times=1, path_contains="create_request")
    response = stack.submit("a quiet harbour", to=caller)
    assert response.status_code == 503
    assert response.json()["retryable"] is True
    assert len(stack.qstash_messages()) == published
    assert stack.sql("select id from public.requests where recipient = %s", caller) == []


# --- provider failures: every accepted request ends delivered or failed-and-told ----------


def test_a_transient_provider_error_is_retried_and_delivered_once(
    stack: StackClient, caller: str
) -> None:
    stack.fault("openai", kind="500", times=1, prompt_contains="stormy sea")
    request_id = stack.submit("a stormy sea", to=caller).json()["request_id"]
    row = stack.wait_finished(request_id)
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert "HTTP 500" in row["last_error"]
    assert len(stack.messages_to(caller)) == 1


def test_a_refused_prompt_fails_at_once_and_the_caller_is_told(
    stack: StackClient, caller: str
) -> None:
    stack.fault("openai", kind="moderation_blocked", times=-1, prompt_contains="forbidden scene")
    request_id = stack.submit("a forbidden scene", to=caller).json()["request_id"]
    row = stack.wait_finished(request_id)
    assert row["status"] == "failed"
    assert row["failure_reason"] == "refused"
    assert row["notified"] is True
    messages = stack.messages_to(caller)
    assert len(messages) == 1
    assert "turned it down" in messages[0]["body"]
    assert not messages[0].get("media")
    # No pointless retry of a refusal: QStash was told to stop after the first attempt.
    source = next(m for m in stack.qstash_messages() if m["id"] == row["qstash_message_id"])
    assert len(source["attempts"]) == 1
    assert source["state"] == "cancelled"


def test_a_provider_that_stays_busy_ends_failed_with_one_notice(
    stack: StackClient, caller: str
) -> None:
    stack.fault("openai", kind="429", times=-1, prompt_contains="crowded beach")
    request_id = stack.submit("a crowded beach", to=caller).json()["request_id"]
    row = stack.wait_finished(request_id)
    assert row["status"] == "failed"
    assert row["failure_reason"] == "provider_busy"
    assert row["attempts"] == 2  # two retried attempts recorded, the third was final
    messages = stack.messages_to(caller)
    assert len(messages) == 1
    assert "too busy" in messages[0]["body"]


@pytest.mark.parametrize("kind", ["garbage", "bad_base64", "not_an_image"])
def test_an_unusable_provider_answer_ends_failed_and_told(
    stack: StackClient, caller: str, kind: str
) -> None:
    prompt = f"an odd answer {kind}"
    stack.fault("openai", kind=kind, times=1, prompt_contains=prompt)
    row = stack.wait_finished(stack.submit(prompt, to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "bad_response",
        True,
    )
    assert len(stack.messages_to(caller)) == 1


# --- duplicates, retries and half-done runs: never two pictures -------------------------


def test_duplicate_deliveries_send_one_picture(stack: StackClient, caller: str) -> None:
    stack.qstash_config(duplicate_deliveries=3)
    row = stack.wait_finished(stack.submit("three of a kind", to=caller).json()["request_id"])
    assert row["status"] == "delivered"
    assert len(stack.messages_to(caller)) == 1


def test_concurrent_callbacks_send_exactly_one_mms(stack: StackClient, caller: str) -> None:
    request_id = queued_row(stack, caller)
    payload = callback_payload(200, provider_success())
    results: list[requests.Response] = []

    def deliver(n: int) -> None:
        results.append(post_callback(stack, request_id, payload, message_id=f"msg_dup_{n}"))

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status_code == 200 for r in results)
    outcomes = sorted(r.json()["outcome"] for r in results)
    assert outcomes.count("delivered") == 1
    assert set(outcomes) <= {"delivered", "duplicate", "already_done"}
    stack.stack.wait_idle(10)
    assert len(stack.messages_to(caller)) == 1
    assert stack.row(request_id)["status"] == "delivered"


def test_a_twilio_outage_is_retried_by_qstash_and_delivers_once(
    stack: StackClient, caller: str
) -> None:
    stack.fault("twilio", kind="500", times=1, to=caller)
    row = stack.wait_finished(stack.submit("a lantern festival", to=caller).json()["request_id"])
    assert row["status"] == "delivered"
    assert len(stack.messages_to(caller)) == 1
    callbacks = [
        m for m in stack.qstash_messages() if m.get("sourceMessageId") == row["qstash_message_id"]
    ]
    statuses = [a["status"] for m in callbacks for a in m["attempts"]]
    assert statuses[:2] == [503, 200]


@pytest.mark.parametrize("service", ["rest", "storage"])
def test_a_supabase_outage_at_composite_is_retried_and_delivers_once(
    stack: StackClient, caller: str, service: str
) -> None:
    request_id = queued_row(stack, caller)
    stack.fault("supabase", service=service, kind="503", times=1)
    payload = callback_payload(200, provider_success())
    first = post_callback(stack, request_id, payload, message_id="msg_outage")
    assert first.status_code == 503
    assert stack.row(request_id)["claim_token"] is None or service == "rest"
    second = post_callback(stack, request_id, payload, message_id="msg_outage")
    assert second.status_code == 200, second.text
    assert second.json()["outcome"] == "delivered"
    stack.stack.wait_idle(10)
    assert len(stack.messages_to(caller)) == 1


def test_a_retry_after_a_half_done_run_finds_the_sent_mms_instead_of_resending(
    stack: StackClient, caller: str
) -> None:
    """A run sent the MMS, then died before recording it. The retry must notice."""
    request_id = queued_row(stack, caller, "a paper boat")
    earlier = stack.half_sent(request_id, caller)
    response = post_callback(stack, request_id, callback_payload(200, provider_success()))
    assert response.json()["outcome"] == "delivered"
    stack.stack.wait_idle(10)
    assert len(stack.messages_to(caller)) == 1
    assert stack.row(request_id)["message_sid"] == earlier


def test_a_redelivery_while_the_first_run_holds_the_claim_asks_to_be_retried(
    stack: StackClient, caller: str
) -> None:
    request_id = queued_row(stack, caller)
    stack.sql(
        "select public.claim_request(%s::uuid, 'msg_same', 180)", request_id
    )  # the first run, still working (or dead)
    payload = callback_payload(200, provider_success())
    same = post_callback(stack, request_id, payload, message_id="msg_same")
    assert same.status_code == 503
    assert same.json()["outcome"] == "busy"
    other = post_callback(stack, request_id, payload, message_id="msg_other")
    assert other.status_code == 200
    assert other.json()["outcome"] == "duplicate"
    assert stack.messages_to(caller) == []


def test_late_and_reordered_callbacks_change_nothing(stack: StackClient, caller: str) -> None:
    row = stack.wait_finished(stack.submit("a late train", to=caller).json()["request_id"])
    assert row["status"] == "delivered"
    late_failure = callback_payload(500, b'{"error":{"code":"server_error"}}', retried=0)
    assert (
        post_callback(stack, row["id"], late_failure, message_id="msg_late").json()["outcome"]
        == "already_done"
    )
    final_failure = callback_payload(500, b"", retried=2, dlqId="1-0")
    assert (
        post_callback(stack, row["id"], final_failure, message_id="msg_dlq").json()["outcome"]
        == "already_done"
    )
    again = stack.row(row["id"])
    assert (again["status"], again["attempts"]) == ("delivered", 0)
    assert len(stack.messages_to(caller)) == 1


def test_an_opted_out_number_is_recorded_and_never_retried(stack: StackClient, caller: str) -> None:
    requests.post(
        f"{stack.env['TWILIO_API_BASE_URL']}/__dev/opt-out", json={"number": caller}, timeout=5
    )
    row = stack.wait_finished(stack.submit("a sunflower", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"], row["notified"]) == ("failed", "opted_out", False)
    assert stack.messages_to(caller) == []


# --- composite: who may call it ----------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    ["missing", "wrong_key", "other_request", "http_instead_of_configured", "tampered_body"],
)
def test_composite_refuses_unsigned_or_forged_callbacks(
    stack: StackClient, caller: str, variant: str
) -> None:
    request_id = queued_row(stack, caller)
    payload = callback_payload(200, provider_success())
    url = f"{stack.env['COMPOSITE_URL']}?request={request_id}"
    raw = json.dumps(payload).encode()
    kwargs: dict[str, Any] = {}
    if variant == "missing":
        kwargs["signature"] = ""
    elif variant == "wrong_key":
        kwargs["key"] = "sig_not_the_real_key_000000000000"
    elif variant == "other_request":
        kwargs["signed_url"] = f"{stack.env['COMPOSITE_URL']}?request={queued_row(stack, caller)}"
    elif variant == "http_instead_of_configured":
        kwargs["signed_url"] = url.replace("127.0.0.1", "localhost")
    elif variant == "tampered_body":
        kwargs["signature"] = make_signature(
            DEV_CURRENT_SIGNING_KEY, url, raw.replace(b"200", b"201")
        )
    response = post_callback(stack, request_id, payload, **kwargs)
    assert response.status_code == 401
    assert stack.row(request_id)["status"] == "queued"
    assert stack.messages_to(caller) == []


def test_composite_accepts_the_next_signing_key(stack: StackClient, caller: str) -> None:
    request_id = queued_row(stack, caller)
    response = post_callback(
        stack, request_id, callback_payload(200, provider_success()), key=DEV_NEXT_SIGNING_KEY
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "delivered"


def test_composite_ignores_a_signed_callback_for_an_unknown_request(stack: StackClient) -> None:
    response = post_callback(
        stack, "00000000-0000-4000-8000-000000000000", callback_payload(200, provider_success())
    )
    assert response.status_code == 200
    assert response.json()["outcome"] == "unknown_request"


@pytest.mark.parametrize(
    ("query", "raw"),
    [
        ("request=not-a-uuid", json.dumps(callback_payload(200, b"{}")).encode()),
        ("", json.dumps(callback_payload(200, b"{}")).encode()),
        ("request=5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11", b"{not json"),
    ],
)
def test_a_signed_but_unusable_callback_tells_qstash_not_to_retry(
    stack: StackClient, query: str, raw: bytes
) -> None:
    url = f"{stack.env['COMPOSITE_URL']}?{query}" if query else stack.env["COMPOSITE_URL"]
    response = requests.post(
        url,
        data=raw,
        headers={"Upstash-Signature": make_signature(DEV_CURRENT_SIGNING_KEY, url, raw)},
        timeout=10,
    )
    assert response.status_code == 489
    assert response.headers["Upstash-NonRetryable-Error"] == "true"


def test_an_old_callback_replayed_after_its_token_expired_is_refused(
    stack: StackClient, caller: str
) -> None:
    request_id = queued_row(stack, caller)
    raw = json.dumps(callback_payload(200, provider_success())).encode()
    url = f"{stack.env['COMPOSITE_URL']}?request={request_id}"
    stale = make_signature(DEV_CURRENT_SIGNING_KEY, url, raw, now=time.time() - 3600)
    response = post_callback(stack, request_id, json.loads(raw), signature=stale)
    assert response.status_code == 401
    assert stack.row(request_id)["status"] == "queued"


def test_a_callback_replayed_within_its_lifetime_changes_nothing(
    stack: StackClient, caller: str
) -> None:
    request_id = queued_row(stack, caller)
    payload = callback_payload(200, provider_success())
    assert post_callback(stack, request_id, payload).json()["outcome"] == "delivered"
    replay = post_callback(stack, request_id, payload)
    assert replay.json()["outcome"] == "already_done"
    stack.stack.wait_idle(10)
    assert len(stack.messages_to(caller)) == 1


def test_signature_checks_can_be_switched_off_only_on_a_local_stack(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("INSECURE_SKIP_SIGNATURES", "true")
    request_id = queued_row(stack, caller)
    response = post_callback(
        stack, request_id, callback_payload(200, provider_success()), signature=""
    )
    assert response.json()["outcome"] == "delivered"
    function_setting("COMPOSITE_URL", "https://composite-x7k2q9-uc.a.run.app")
    refused = post_callback(
        stack, queued_row(stack, caller), callback_payload(200, b"{}"), signature=""
    )
    assert refused.status_code == 500
    assert refused.json() == {"error": "the service is misconfigured"}


def test_composite_only_takes_post(stack: StackClient) -> None:
    assert requests.get(stack.env["COMPOSITE_URL"], timeout=5).status_code == 405


# --- generate: QStash will not take the job ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "status", "retryable"),
    [
        ("QSTASH_TOKEN", "not-the-token", 502, False),  # QStash answers 401: retrying won't help
        ("QSTASH_URL", "http://127.0.0.1:9", 503, True),  # nothing listens there
    ],
)
def test_a_failed_publish_marks_the_request_failed_and_tells_the_caller(
    stack: StackClient,
    caller: str,
    function_setting: Callable[[str, str], None],
    name: str,
    value: str,
    status: int,
    retryable: bool,
) -> None:
    function_setting(name, value)
    response = stack.submit("a ship in a bottle", to=caller)
    assert response.status_code == status
    assert response.json()["retryable"] is retryable
    rows = stack.sql("select * from public.requests where recipient = %s", caller)
    assert len(rows) == 1
    assert (rows[0]["status"], rows[0]["failure_reason"]) == ("failed", "publish_failed")


def test_a_missing_secret_fails_before_anything_is_recorded(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    # Not in the environment, and not in the Secret Manager stand-in either.
    function_setting("QSTASH_TOKEN", "")
    response = stack.submit("a fox with no token", to=caller)
    assert response.status_code == 500
    assert response.json() == {"error": "the service is misconfigured"}
    assert stack.sql("select id from public.requests where recipient = %s", caller) == []


def test_a_publish_whose_answer_was_lost_is_asked_again_and_not_doubled(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    """QStash took the job but its answer never came back: generate asks again with the same
    deduplication id, gets the same message, and the request is delivered once."""
    qstash = stack.env["QSTASH_URL"]
    forwarded: list[int] = []

    def slow_first_answer(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        path = environ["PATH_INFO"] + (
            "?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else ""
        )
        length = int(environ.get("CONTENT_LENGTH") or 0)
        headers = {
            k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")
        }
        headers["Content-Type"] = environ.get("CONTENT_TYPE", "")
        answer = requests.post(
            qstash + path, data=environ["wsgi.input"].read(length), headers=headers, timeout=10
        )
        forwarded.append(answer.status_code)
        if len(forwarded) == 1:
            time.sleep(4)  # longer than generate waits for an answer
        start_response(f"{answer.status_code} X", [("Content-Type", "application/json")])
        return [answer.content]

    from devstack.serving import serve_in_thread

    proxy = serve_in_thread(slow_first_answer)
    try:
        function_setting("QSTASH_URL", proxy.url)
        response = stack.submit("a message in a bottle", to=caller)
        assert response.status_code == 202, response.text
        assert forwarded == [200, 202]  # the second copy was deduplicated by QStash
        row = stack.wait_finished(response.json()["request_id"])
        assert row["status"] == "delivered"
        jobs = [
            m
            for m in stack.qstash_messages()
            if m["kind"] == "message" and m["id"] == row["qstash_message_id"]
        ]
        assert len(jobs) == 1
        assert len(stack.messages_to(caller)) == 1
    finally:
        proxy.stop()
