"""No lost pictures. The acknowledgement of a texted request carries the same "Ref" as the
picture, and Twilio keeps it as a Message (an outbound-reply for a TwiML answer, a REST message
for Studio's send widget) [DOC]. A run that retries after a failed or lost send must find only
the message that really carries the picture (or the failure notice), never the acknowledgement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devstack.stack_client import (
    StackClient,
    acknowledged,
    age,
    latest_request,
    pictures_to,
    post_callback,
    queued_row,
    run_sweep,
    text_in,
)
from devstack.vendor_calls import callback_payload, provider_success
from shared.replies import accepted_by_text

pytestmark = pytest.mark.stack
TWILIO_FAULTS = [
    pytest.param({"kind": "500"}, id="twilio-500"),
    pytest.param({"kind": "20429"}, id="twilio-20429"),
    pytest.param({"kind": "timeout", "delay_s": 1}, id="twilio-timeout"),
]
CHANNELS = ["webhook", "studio"]


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("fault", TWILIO_FAULTS)
def test_a_texted_picture_whose_first_send_fails_still_arrives_exactly_once(
    stack: StackClient, caller: str, channel: str, fault: dict[str, Any]
) -> None:
    prompt = f"a ferry at night {channel} {fault['kind']}"
    # The picture takes a moment, so the failure below meets its send, not the acknowledgement.
    stack.fault("openai", kind="timeout", delay_s=1.5, prompt_contains=prompt)
    text_in(stack, caller, f"DRAW {prompt}", channel)
    ack = acknowledged(stack, caller)
    stack.fault("twilio", to=caller, times=1, **fault)

    request = latest_request(stack, caller)
    assert request is not None
    row = stack.wait_finished(str(request["id"]))
    [picture] = pictures_to(stack, caller)
    assert row["status"] == "delivered"
    assert row["message_sid"] == picture["sid"] != ack["sid"]
    assert prompt in picture["body"]
    assert len(stack.messages_to(caller)) == 2  # the acknowledgement and the picture


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_texted_request_whose_failure_notice_fails_once_is_told_exactly_once(
    stack: StackClient, caller: str, channel: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("GENERATION_TIMEOUT_SECONDS", "1")
    function_setting("GENERATION_RETRIES", "0")
    prompt = f"a slow snail {channel}"
    stack.fault("openai", kind="timeout", delay_s=3, times=-1, prompt_contains=prompt)
    text_in(stack, caller, f"DRAW {prompt}", channel)
    ack = acknowledged(stack, caller)
    stack.fault("twilio", kind="500", to=caller, times=1)

    request = latest_request(stack, caller)
    assert request is not None
    row = stack.wait_finished(str(request["id"]), timeout_s=60)
    notices = [m for m in stack.messages_to(caller) if m["sid"] != ack["sid"]]
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "provider_error",
        True,
    )
    assert [m["sid"] for m in notices] == [row["message_sid"]]
    assert "went wrong" in notices[0]["body"]


def test_the_sweep_does_not_take_the_acknowledgement_for_the_picture(
    stack: StackClient, caller: str
) -> None:
    """A run died after `send_started_at` and before Twilio took the picture; only the
    acknowledgement (with the same Ref) is at Twilio. The sweep must tell the person it
    failed, once, even when its first notice fails."""
    request_id = queued_row(stack, caller, "a lost kite")
    reference = request_id.replace("-", "")[:8]
    sid = stack.env["TWILIO_ACCOUNT_SID"]
    ack = stack.http.post(
        f"{stack.env['TWILIO_API_BASE_URL']}/2010-04-01/Accounts/{sid}/Messages.json",
        data={
            "To": caller,
            "From": stack.env["DEMO_FROM"],
            "Body": accepted_by_text("a lost kite", reference),
        },
        auth=(sid, stack.env["TWILIO_AUTH_TOKEN"]),
        timeout=5,
    ).json()
    stack.sql(
        "update public.requests set status = 'sending', send_started_at = now(),"
        " image_path = 'x/' || media_token || '.jpg' where id = %s",
        request_id,
    )
    age(stack, request_id, 90)
    stack.fault("twilio", kind="500", to=caller, times=1)
    assert run_sweep(stack)["errors"] >= 1  # the notice failed: left for the next sweep
    run_sweep(stack)
    row = stack.row(request_id)
    assert (row["status"], row["failure_reason"], row["notified"]) == ("failed", "expired", True)
    notices = [m for m in stack.messages_to(caller) if m["sid"] != ack["sid"]]
    assert [m["sid"] for m in notices] == [row["message_sid"]]
    assert "took too long" in notices[0]["body"]


def test_a_message_older_than_the_request_is_never_taken_for_its_picture(
    stack: StackClient, caller: str
) -> None:
    """Recovery reads only messages created since the request (less clock skew)."""
    request_id = queued_row(stack, caller, "a paper plane")
    earlier = stack.half_sent(request_id, caller)
    stack.sql(
        "update public.requests set created_at = now() + interval '10 minutes' where id = %s",
        request_id,
    )
    outcome = post_callback(
        stack, request_id, callback_payload(200, provider_success("a paper plane"))
    )
    assert outcome.json()["outcome"] == "delivered"
    row = stack.row(request_id)
    assert row["message_sid"] != earlier
    assert len(pictures_to(stack, caller)) == 1
