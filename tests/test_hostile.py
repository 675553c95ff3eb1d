"""Hostile and broken input on the running stack: people who said no mid-flight, refusals
that must stay refused, bookkeeping that must never fail a delivery, bodies over the limit."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from devstack import stack_client
from devstack.qstash import DEV_CURRENT_SIGNING_KEY, make_signature
from devstack.stack_client import (
    StackClient,
    age,
    post_callback,
    queued_row,
    run_sweep,
    signed_post,
)
from devstack.vendor_calls import (
    callback_payload,
    incoming_text,
    provider_success,
    reply_text,
    studio_call,
)

pytestmark = pytest.mark.stack


def test_a_refused_prompt_stays_refused_when_its_notice_first_fails(
    stack: StackClient, caller: str
) -> None:
    """The refusal cancels QStash's retries before the notice is sent: a notice that meets a
    Twilio 500 (and is retried) must not leave QStash free to generate the picture again."""
    prompt = "a refused but persistent prompt"
    stack.fault("openai", kind="moderation_blocked", times=1, prompt_contains=prompt)
    stack.fault("twilio", kind="500", times=1, to=caller)
    row = stack.wait_finished(stack.submit(prompt, to=caller).json()["request_id"])
    stack.stack.wait_idle(10)
    assert (row["status"], row["failure_reason"], row["notified"]) == ("failed", "refused", True)
    assert len(stack.generations(prompt)) == 1
    [notice] = stack.messages_to(caller)
    assert "turned it down" in notice["body"] and not notice["media"]


# --- STOP while the picture is being made -----------------------------------------------------


def text_in(stack: StackClient, caller: str, body: str) -> None:
    """A text to our number through Twilio's incoming-message webhook."""
    stack_client.text_in(stack, caller, body, "webhook")


def latest(stack: StackClient, caller: str) -> dict[str, Any]:
    [row] = stack.sql(
        "select * from public.requests where recipient = %s order by created_at desc limit 1",
        caller,
    )
    return row


def test_stop_while_the_picture_is_made_sends_nothing_more(stack: StackClient, caller: str) -> None:
    prompt = "a lighthouse, then STOP"
    stack.fault("openai", kind="timeout", delay_s=1.5, prompt_contains=prompt)
    text_in(stack, caller, f"DRAW {prompt}")
    text_in(stack, caller, "STOP")
    row = stack.wait_finished(str(latest(stack, caller)["id"]))
    stack.stack.wait_idle(10)
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "opted_out",
        False,
    )
    # Ended by us, not by Twilio's own STOP filter (21610, which WhatsApp does not have).
    assert "21610" not in row["failure_detail"]
    sent = stack.messages_to(caller)
    assert len(sent) == 1 and "on its way" in sent[0]["body"]  # the acknowledgement only


def test_stop_cancels_a_generation_qstash_has_not_run_yet(stack: StackClient, caller: str) -> None:
    """The first attempt fails and QStash waits to retry: a STOP then saves the picture."""
    prompt = "a kite, retried, then STOP"
    stack.qstash_config(retry_delay_scale=3.0)
    try:
        stack.fault("openai", kind="500", times=1, prompt_contains=prompt)
        text_in(stack, caller, f"DRAW {prompt}")
        request_id = str(latest(stack, caller)["id"])
        deadline = 50
        while stack.row(request_id)["attempts"] == 0 and deadline:
            deadline -= 1
            stack.stack.wait_idle(0.1)
        text_in(stack, caller, "STOP")
        row = stack.row(request_id)
        assert (row["status"], row["failure_reason"]) == ("failed", "opted_out")
        [message] = [m for m in stack.qstash_messages() if m.get("id") == row["qstash_message_id"]]
        assert message["state"] == "cancelled"
    finally:
        stack.qstash_config(retry_delay_scale=0.005)
    assert len(stack.generations(prompt)) == 1


@pytest.mark.parametrize("answer", ["picture", "refusal"])
def test_no_picture_or_notice_goes_to_a_pair_that_opted_out_mid_flight(
    stack: StackClient, caller: str, answer: str
) -> None:
    """A STOP that lands while a callback holds the request: the send paths check too."""

    request_id = queued_row(stack, caller)
    stack.sql("select public.set_opt_out(%s, %s, true, 'keyword')", caller, stack.env["DEMO_FROM"])
    body = (
        provider_success()
        if answer == "picture"
        else b'{"error": {"type": "image_generation_user_error", "code": "moderation_blocked"}}'
    )
    status = 200 if answer == "picture" else 400
    outcome = post_callback(stack, request_id, callback_payload(status, body)).json()
    assert outcome["outcome"] == "failed"
    row = stack.row(request_id)
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "opted_out",
        False,
    )
    assert stack.messages_to(caller) == []


def test_the_sweep_sends_nothing_to_a_pair_that_opted_out(stack: StackClient, caller: str) -> None:
    request_id = queued_row(stack, caller)
    stack.sql(
        "update public.requests set claim_token = 'x', claimed_until = now() - interval '1 hour' where id = %s",
        request_id,
    )
    stack.sql("select public.set_opt_out(%s, %s, true, 'keyword')", caller, stack.env["DEMO_FROM"])
    age(stack, request_id, 90)
    run_sweep(stack)
    row = stack.row(request_id)
    assert (row["status"], row["failure_reason"]) == ("failed", "opted_out")
    assert stack.messages_to(caller) == []


# --- bookkeeping never fails a delivery, and nothing is stored that no row points at --------


@pytest.mark.parametrize("tokens", [2**31, 2**40, -1])
def test_token_counts_out_of_range_are_recorded_as_unknown_and_the_picture_goes(
    stack: StackClient, caller: str, tokens: int
) -> None:
    import json

    request_id = queued_row(stack, caller)
    answer = json.loads(provider_success())
    answer["usage"] = {"input_tokens": tokens, "output_tokens": tokens}
    payload = callback_payload(200, json.dumps(answer).encode())
    assert post_callback(stack, request_id, payload).json()["outcome"] == "delivered"
    row = stack.row(request_id)
    assert (row["input_tokens"], row["output_image_tokens"]) == (None, None)
    assert len(stack.messages_to(caller)) == 1


def test_no_picture_is_stored_before_the_row_points_at_it(stack: StackClient, caller: str) -> None:
    from shared.store import PictureStore

    request_id = queued_row(stack, caller)
    stack.fault("supabase", service="rest", kind="500", times=-1, method="PATCH")
    payload = callback_payload(200, provider_success())
    assert post_callback(stack, request_id, payload).status_code >= 500
    token = stack.row(request_id)["media_token"]
    created = stack.row(request_id)["created_at"]
    path = f"{created:%Y/%m/%d}/{token}.jpg"
    public = f"{stack.env['SUPABASE_URL']}/storage/v1/object/public/pictures"
    for stored in (path, PictureStore.original_path_for(path)):
        assert requests.get(f"{public}/{stored}", timeout=5).status_code in (400, 404)
    stack.clear_faults()
    assert post_callback(stack, request_id, payload).json()["outcome"] == "delivered"
    assert stack.row(request_id)["image_path"] == path


# --- bodies over the limit, however they are sent ------------------------------------------


def _chunks(data: bytes, size: int = 8192) -> Any:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("function", "content_type", "body"),
    [
        ("GENERATE_URL", "application/x-www-form-urlencoded", b"prompt=" + b"x" * 100_000),
        ("GENERATE_URL", "application/json", b'{"prompt": "' + b"x" * 100_000 + b'"}'),
        ("COMPOSITE_URL", "application/json", b'{"body": "' + b"A" * 13_000_000 + b'"}'),
    ],
)
def test_a_chunked_body_over_the_limit_is_a_413_like_any_other(
    stack: StackClient, function: str, content_type: str, body: bytes
) -> None:
    """Without Content-Length the size check used to be skipped: Flask's HTML 500 for a form,
    a misleading 400 for JSON. No credentials are needed to send one."""
    response = requests.post(
        stack.env[function],
        data=_chunks(body),  # a generator: requests sends Transfer-Encoding: chunked
        headers={"Content-Type": content_type},
        timeout=30,
    )
    assert response.status_code == 413, response.text[:200]
    assert response.json() == {"error": "request body too large"}


def test_a_forged_requests_own_text_never_reaches_the_logs(
    stack: StackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signature failure logs what we expected (the configured URL), not what was sent."""
    marker = "ATTACKER-WROTE-THIS-" + "z" * 200
    capsys.readouterr()
    forged_twilio = requests.post(
        f"{stack.env['GENERATE_URL']}?{marker}=1",
        data={"From": "+15551230001", "To": stack.env["DEMO_FROM"], "Body": "DRAW a fox"},
        headers={"X-Twilio-Signature": "forged"},
        timeout=10,
    )
    # Genuinely signed by QStash's key, but for another URL.
    elsewhere = make_signature(DEV_CURRENT_SIGNING_KEY, "https://elsewhere.example", b"{}")
    forged_qstash = requests.post(
        f"{stack.env['COMPOSITE_URL']}?request={marker}",
        data=b"{}",
        headers={"Upstash-Signature": elsewhere},
        timeout=10,
    )
    assert (forged_twilio.status_code, forged_qstash.status_code) == (403, 401)
    logged = capsys.readouterr().out
    assert "did not verify" in logged and "another URL" in logged
    assert marker not in logged


# --- a provider's picture must not cost more than a picture ------------------------------


def test_a_picture_of_another_size_than_asked_is_refused_before_it_is_decoded(
    stack: StackClient, caller: str
) -> None:
    import base64
    import json

    request_id = queued_row(stack, caller)
    asked = {"model": "gpt-image-2.6-flare", "prompt": "a lighthouse at dusk", "size": "1536x1024"}
    payload = callback_payload(
        200, provider_success(), sourceBody=base64.b64encode(json.dumps(asked).encode()).decode()
    )
    assert post_callback(stack, request_id, payload).json()["outcome"] == "failed"
    row = stack.row(request_id)
    assert row["failure_reason"] == "bad_response"
    assert "not the 1536x1024 we asked for" in row["failure_detail"]


# --- withheld caller IDs and opt-out words -------------------------------------------------

HIDDEN = ["+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253", "anonymous"]


@pytest.mark.parametrize("hidden", HIDDEN)
def test_a_hidden_number_is_told_why_on_every_channel_and_nothing_is_paid(
    stack: StackClient, hidden: str
) -> None:
    before = stack.sql("select count(*) as n from public.requests")[0]["n"]
    call = signed_post(stack, studio_call(hidden, "a fox for nobody")).json()
    assert call["accepted"] is False and "hidden number" in call["message"]
    text = {"body": "DRAW a fox", "to": hidden, "from": stack.env["DEMO_FROM"]}
    assert "hidden number" in signed_post(stack, text).json()["message"]
    assert "hidden number" in reply_text(signed_post(stack, incoming_text(hidden, "DRAW a fox")))
    assert stack.sql("select count(*) as n from public.requests")[0]["n"] == before


@pytest.mark.parametrize("word", ["OPTOUT", "revoke", " Stop. "])
def test_twilios_opt_out_words_are_ours(stack: StackClient, caller: str, word: str) -> None:
    reply_text(signed_post(stack, incoming_text(caller, word)))
    assert stack.sql("select * from public.opt_outs where address = %s", caller)
    # Unicode look-alikes are not START to Twilio, so not to us either.
    reply_text(signed_post(stack, incoming_text(caller, "\u017ftart")))  # long s
    assert stack.sql("select * from public.opt_outs where address = %s", caller)
