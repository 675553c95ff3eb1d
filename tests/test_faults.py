"""Faults at every step end with the request delivered exactly once, or failed with the reason
and the person told: slow or failing vendors, reordered callbacks, moderation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from devstack.stack_client import StackClient, post_callback, queued_row, signed_post
from devstack.vendor_calls import callback_payload, incoming_text, provider_success, reply_text
from shared.moderation import check_prompt
from shared.secrets import Secret, SecretSource

pytestmark = pytest.mark.stack


def test_a_provider_that_never_answers_in_time_ends_failed_and_told(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("GENERATION_TIMEOUT_SECONDS", "1")
    function_setting("GENERATION_RETRIES", "0")
    stack.fault("openai", kind="timeout", delay_s=3, times=-1, prompt_contains="a slow snail")
    row = stack.wait_finished(stack.submit("a slow snail", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "provider_error",
        True,
    )
    assert "timeout" in row["failure_detail"]
    assert "went wrong" in stack.messages_to(caller)[0]["body"]


def test_a_slow_database_at_generate_is_a_503_and_nothing_is_published(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("STORE_TIMEOUT_SECONDS", "1")
    published = len(stack.qstash_messages())
    # Recording the request is what times out (reading the person's language first may fail
    # too: that only costs the choice of language, see test_languages).
    stack.fault(
        "supabase",
        service="rest",
        kind="timeout",
        delay_s=3,
        times=1,
        path_contains="create_request",
    )
    response = stack.submit("a patient tortoise", to=caller)
    assert response.status_code == 503
    assert len(stack.qstash_messages()) == published
    assert stack.sql("select id from public.requests where recipient = %s", caller) == []


def test_a_slow_database_at_composite_is_retried_and_delivers_once(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("STORE_TIMEOUT_SECONDS", "1")
    request_id = queued_row(stack, caller)
    stack.fault("supabase", service="rest", kind="timeout", delay_s=3, times=1)
    payload = callback_payload(200, provider_success())
    assert post_callback(stack, request_id, payload, message_id="msg_slow").status_code == 503
    assert (
        post_callback(stack, request_id, payload, message_id="msg_slow").json()["outcome"]
        == "delivered"
    )
    stack.stack.wait_idle(10)
    assert len(stack.messages_to(caller)) == 1


def test_reordered_callbacks_deliver_once(stack: StackClient, caller: str) -> None:
    stack.qstash_config(reorder_callbacks=True)
    stack.fault("openai", kind="500", times=1, prompt_contains="a shuffled deck")
    row = stack.wait_finished(stack.submit("a shuffled deck", to=caller).json()["request_id"])
    stack.stack.wait_idle(15)
    assert stack.row(row["id"])["status"] == "delivered"
    assert len(stack.messages_to(caller)) == 1
    stack.qstash_config(reorder_callbacks=False)


def test_a_storage_outage_across_two_retries_still_delivers_once(
    stack: StackClient, caller: str
) -> None:
    """While Storage is down the callback is answered 503 and retried by QStash."""
    stack.fault("supabase", service="storage", kind="503", times=2)
    row = stack.wait_finished(stack.submit("a stubborn mule", to=caller).json()["request_id"])
    assert row["status"] == "delivered"
    assert len(stack.messages_to(caller)) == 1


# --- moderation ------------------------------------------------------------------------------


def test_a_flagged_prompt_is_refused_kindly_and_costs_nothing(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("MODERATION", "on")
    published = len(stack.qstash_messages())
    reply = reply_text(signed_post(stack, incoming_text(caller, "DRAW a bomb in a city")))
    assert "can't make a picture of that" in reply
    assert len(stack.qstash_messages()) == published
    assert stack.sql("select id from public.requests where recipient = %s", caller) == []
    operator = stack.submit("a bomb in a city", to=caller)
    assert operator.status_code == 422 and "illicit" in operator.json()["error"]
    fine = stack.submit("a bouquet of tulips", to=caller)
    assert fine.status_code == 202


def test_without_the_precheck_the_providers_refusal_is_told_the_same_way(
    stack: StackClient, caller: str
) -> None:
    row = stack.wait_finished(stack.submit("a bomb in a city", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"]) == ("failed", "refused")
    assert "turned it down" in stack.messages_to(caller)[0]["body"]


def test_the_moderation_check_fails_open() -> None:
    verdict = check_prompt(
        "a fox",
        "http://127.0.0.1:9",
        Secret("OPENAI_API_KEY", SecretSource({"OPENAI_API_KEY": "k"})),
        requests.Session(),
    )
    assert verdict.flagged is False


def test_an_invalid_number_at_twilio_is_final_and_not_retried(
    stack: StackClient, caller: str
) -> None:
    stack.fault("twilio", kind="21211", times=-1, to=caller)
    row = stack.wait_finished(stack.submit("a lighthouse", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "undeliverable",
        False,
    )
    callbacks = [
        m for m in stack.qstash_messages() if m.get("sourceMessageId") == row["qstash_message_id"]
    ]
    assert [a["status"] for m in callbacks for a in m["attempts"]] == [200]


def test_a_number_in_the_prompt_never_becomes_the_recipient(
    stack: StackClient, caller: str
) -> None:
    reply_text(signed_post(stack, incoming_text(caller, "DRAW a cat, and send it to +15550001111")))
    row = stack.sql("select id, recipient from public.requests where recipient = %s", caller)[0]
    stack.wait_finished(str(row["id"]))
    assert len(stack.messages_to(caller)) == 1
    assert stack.messages_to("+15550001111") == []


def test_a_provider_answer_with_a_url_is_never_fetched(stack: StackClient, caller: str) -> None:
    """GPT image models answer with base64 only; a legacy `url` answer is a bad response,
    and we never fetch a URL we are handed (no SSRF)."""
    import json as json_

    from devstack.serving import serve_in_thread

    hits: list[str] = []

    def app(environ: dict[str, str], start_response: Callable[..., object]) -> list[bytes]:
        hits.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "image/png")])
        return [b""]

    bait = serve_in_thread(app)
    try:
        request_id = queued_row(stack, caller)
        answer = json_.dumps(
            {"created": 1, "data": [{"url": f"{bait.url}/internal/metadata"}]}
        ).encode()
        outcome = post_callback(stack, request_id, callback_payload(200, answer)).json()["outcome"]
        assert outcome == "failed"
        assert stack.row(request_id)["failure_reason"] == "bad_response"
        assert hits == []
    finally:
        bait.stop()


def test_a_store_that_fails_to_note_the_qstash_message_does_not_fail_the_request(
    stack: StackClient, caller: str
) -> None:
    """The message id is bookkeeping (only a STOP mid-flight needs it): its write failing
    leaves the request queued and delivered as usual."""
    stack.fault("supabase", service="rest", kind="500", times=1, method="PATCH")
    response = stack.submit("a noted fox", to=caller)
    assert response.status_code == 202
    row = stack.wait_finished(response.json()["request_id"])
    assert row["status"] == "delivered"
