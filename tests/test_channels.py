"""Every way in from a phone, on the local stack: Twilio's signed incoming-message webhook
(SMS, WhatsApp), Studio's signed form requests, and the operator's JSON trigger."""

from __future__ import annotations

import pytest
import requests
from twilio.request_validator import RequestValidator

from devstack.stack_client import StackClient, latest_request, signed_post
from devstack.vendor_calls import incoming_text, new_sid, reply_text, studio_call

pytestmark = pytest.mark.stack


# --- the incoming-message webhook ----------------------------------------------------------


def test_a_text_with_the_keyword_gets_a_reply_and_then_the_picture(
    stack: StackClient, caller: str
) -> None:
    response = signed_post(stack, incoming_text(caller, "DRAW a crab holding a light saber"))
    assert "is on its way" in reply_text(response)
    row = latest_request(stack, caller)
    assert row is not None
    assert (row["channel"], row["sender"]) == ("sms", "+15005550006")
    assert stack.wait_finished(str(row["id"]))["status"] == "delivered"
    messages = stack.messages_to(caller)
    assert len(messages) == 1
    assert messages[0]["from"] == "+15005550006"
    assert messages[0]["media"]


def test_whatsapp_messages_come_back_on_whatsapp(stack: StackClient, caller: str) -> None:
    sender = f"whatsapp:{caller}"
    response = signed_post(stack, incoming_text(sender, "draw a fox", ours="whatsapp:+15005550006"))
    assert "on its way" in reply_text(response)
    row = latest_request(stack, sender)
    assert row is not None and row["channel"] == "whatsapp"
    stack.wait_finished(str(row["id"]))
    messages = stack.messages_to(sender)
    assert len(messages) == 1
    assert messages[0]["from"] == "whatsapp:+15005550006"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("HELP", "Text DRAW followed by"),
        ("hello there", "Text DRAW followed by"),
        ("DRAW", "Tell us what to draw"),
        ("DRAW " + "x" * 1200, "1,200 characters"),  # numbers as English writes them
    ],
)
def test_texts_that_are_not_prompts_get_a_helpful_reply_and_cost_nothing(
    stack: StackClient, caller: str, body: str, expected: str
) -> None:
    assert expected in reply_text(signed_post(stack, incoming_text(caller, body)))
    assert latest_request(stack, caller) is None


def test_stop_is_honoured_until_start(stack: StackClient, caller: str) -> None:
    stop = reply_text(signed_post(stack, incoming_text(caller, "STOP")))
    assert "<Message>" not in stop  # Twilio confirms STOP itself
    assert stack.sql("select source from public.opt_outs where address = %s", caller) == [
        {"source": "keyword"}
    ]

    ignored = reply_text(signed_post(stack, incoming_text(caller, "DRAW a fox")))
    assert "<Message>" not in ignored
    assert latest_request(stack, caller) is None

    operator = requests.post(
        stack.env["GENERATE_URL"],
        json={"to": caller, "prompt": "a fox"},
        headers={"X-Operator-Key": stack.env["OPERATOR_KEY"]},
        timeout=10,
    )
    assert operator.status_code == 409

    reply_text(signed_post(stack, incoming_text(caller, "START")))
    assert stack.sql("select * from public.opt_outs where address = %s", caller) == []
    assert "on its way" in reply_text(signed_post(stack, incoming_text(caller, "DRAW a fox")))


def test_a_resent_webhook_does_not_make_a_second_picture(stack: StackClient, caller: str) -> None:
    params = incoming_text(caller, "DRAW a windmill")
    first = reply_text(signed_post(stack, params))
    second = reply_text(signed_post(stack, params))
    assert "on its way" in first and "on its way" in second
    rows = stack.sql("select id from public.requests where recipient = %s", caller)
    assert len(rows) == 1
    stack.wait_finished(str(rows[0]["id"]))
    assert len(stack.messages_to(caller)) == 1


def test_a_store_outage_is_told_in_the_reply(stack: StackClient, caller: str) -> None:
    # At recording: the conversation's reads come first, and the SDK retries a read's 503.
    stack.fault("supabase", service="rest", kind="503", times=1, path_contains="create_request")
    assert "couldn't take your request" in reply_text(
        signed_post(stack, incoming_text(caller, "DRAW a fox"))
    )


def test_a_store_outage_reading_the_conversation_is_told_too(
    stack: StackClient, caller: str
) -> None:
    stack.fault("supabase", service="rest", kind="503", times=10, path_contains="pending_photos")
    assert "couldn't take your request" in reply_text(
        signed_post(stack, incoming_text(caller, "make it bluer"))
    )
    assert stack.sql("select id from public.requests where recipient = %s", caller) == []


@pytest.mark.parametrize("variant", ["missing", "wrong_token", "other_url", "tampered"])
def test_unsigned_or_forged_twilio_requests_are_refused_and_nothing_is_recorded(
    stack: StackClient, caller: str, variant: str
) -> None:
    params = incoming_text(caller, "DRAW a forged fox")
    if variant == "missing":
        response = requests.post(stack.env["GENERATE_URL"], data=params, timeout=10)
    elif variant == "wrong_token":
        response = signed_post(stack, params, token="f" * 32)
    elif variant == "other_url":
        response = signed_post(stack, params, url=stack.env["GENERATE_URL"] + "/other")
    else:
        signature = RequestValidator(stack.env["TWILIO_AUTH_TOKEN"]).compute_signature(
            stack.env["GENERATE_URL"], params
        )
        response = requests.post(
            stack.env["GENERATE_URL"],
            data={**params, "To": "+15550009999"},
            headers={"X-Twilio-Signature": signature},
            timeout=10,
        )
    assert response.status_code == 403
    assert latest_request(stack, caller) is None


# --- Studio's requests ----------------------------------------------------------------------


def test_a_studio_call_request_is_answered_with_words_to_say(
    stack: StackClient, caller: str
) -> None:
    response = signed_post(stack, studio_call(caller, 'a "quoted" crab & a saber'))
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] is True
    assert "on its way by text message" in answer["message"]
    row = stack.wait_finished(answer["request_id"])
    assert (row["channel"], row["prompt"], row["status"]) == (
        "voice",
        'a "quoted" crab & a saber',
        "delivered",
    )
    assert row["source_ref"].startswith("CA")
    assert len(stack.messages_to(caller)) == 1


def test_a_studio_message_request_follows_the_keyword_rules(
    stack: StackClient, caller: str
) -> None:
    params = {
        "body": "HELP",
        "to": caller,
        "from": "+15005550006",
        "channel": "message",
        "source_ref": new_sid("SM"),
    }
    answer = signed_post(stack, params).json()
    assert answer["accepted"] is False
    assert "Text DRAW followed by" in answer["message"]
    params = {**params, "body": "DRAW a kite", "source_ref": new_sid("SM")}
    answer = signed_post(stack, params).json()
    assert answer["accepted"] is True
    assert stack.wait_finished(answer["request_id"])["status"] == "delivered"


@pytest.mark.parametrize(
    ("prompt", "expected"), [("", "Tell us what to draw"), ("z" * 1500, "1,500 characters")]
)
def test_a_studio_call_with_an_unusable_prompt_gets_words_to_say(
    stack: StackClient, caller: str, prompt: str, expected: str
) -> None:
    answer = signed_post(stack, studio_call(caller, prompt)).json()
    assert answer["accepted"] is False
    assert expected in answer["message"]
    assert latest_request(stack, caller) is None


def test_a_studio_call_from_an_opted_out_number_is_told_how_to_opt_in(
    stack: StackClient, caller: str
) -> None:
    reply_text(signed_post(stack, incoming_text(caller, "STOP")))
    answer = signed_post(stack, studio_call(caller, "a fox")).json()
    assert answer["accepted"] is False
    assert "Text START" in answer["message"]


def test_studio_retrying_a_call_request_gets_the_same_request(
    stack: StackClient, caller: str
) -> None:
    params = studio_call(caller, "a lighthouse")
    first = signed_post(stack, params).json()
    second = signed_post(stack, params).json()
    assert first["request_id"] == second["request_id"]
    stack.wait_finished(first["request_id"])
    assert len(stack.messages_to(caller)) == 1


def test_a_studio_request_with_broken_numbers_is_a_400(stack: StackClient) -> None:
    response = signed_post(
        stack, {"prompt": "a fox", "to": "{{contact.channel.address}}", "from": "+15005550006"}
    )
    assert response.status_code == 400


# --- the operator ---------------------------------------------------------------------------


def test_the_operator_trigger_sends_from_the_default_number(
    stack: StackClient, caller: str
) -> None:
    response = requests.post(
        stack.env["GENERATE_URL"],
        json={
            "to": caller,
            "prompt": "a robot gardener",
            "operator_key": stack.env["OPERATOR_KEY"],
        },
        timeout=10,
    )
    assert response.status_code == 202
    stack.wait_finished(response.json()["request_id"])
    assert stack.messages_to(caller)[0]["from"] == stack.env["DEMO_FROM"]


def test_a_21610_from_twilio_is_remembered_as_an_opt_out(stack: StackClient, caller: str) -> None:
    requests.post(
        f"{stack.env['TWILIO_API_BASE_URL']}/__dev/opt-out", json={"number": caller}, timeout=5
    )
    response = stack.submit("a sunflower", to=caller)
    stack.wait_finished(response.json()["request_id"])
    rows = stack.sql("select source from public.opt_outs where address = %s", caller)
    assert rows == [{"source": "twilio_21610"}]
    again = stack.submit("another sunflower", to=caller)
    assert again.status_code == 409
