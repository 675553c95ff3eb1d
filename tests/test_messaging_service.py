"""US senders must be registered (A2P 10DLC or a verified toll-free number) and usually send
through a Messaging Service [DOC]. With TWILIO_MESSAGING_SERVICE_SID set, pictures and notices
go through it, still from the number the person contacted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from devstack.stack_client import StackClient
from devstack.twilio import DEFAULT_MESSAGING_SERVICE_SID

pytestmark = pytest.mark.stack


def test_pictures_go_through_the_messaging_service_from_the_contacted_number(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("TWILIO_MESSAGING_SERVICE_SID", DEFAULT_MESSAGING_SERVICE_SID)
    row = stack.wait_finished(stack.submit("a tram in fog", to=caller).json()["request_id"])
    assert row["status"] == "delivered"
    [mms] = stack.messages_to(caller)
    assert mms["messaging_service_sid"] == DEFAULT_MESSAGING_SERVICE_SID
    assert mms["from"] == stack.env["DEMO_FROM"]
    assert mms["media"] and mms["sid"] == row["message_sid"]


def test_a_service_the_account_does_not_have_fails_the_request_for_good(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    """Twilio refuses it with 21701 [DOC]: every retry would fail the same way."""
    function_setting("TWILIO_MESSAGING_SERVICE_SID", "MG" + "9" * 32)
    row = stack.wait_finished(stack.submit("a tram in rain", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"]) == ("failed", "undeliverable")
    assert "21701" in row["failure_detail"]
    assert stack.messages_to(caller) == []


def test_whatsapp_is_sent_from_its_own_sender_not_through_the_service(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    """Registration is for SMS/MMS senders; a WhatsApp sender need not be in the service."""
    function_setting("TWILIO_MESSAGING_SERVICE_SID", DEFAULT_MESSAGING_SERVICE_SID)
    to, ours = f"whatsapp:{caller}", f"whatsapp:{stack.env['DEMO_FROM']}"
    answer = requests.post(
        stack.env["GENERATE_URL"],
        json={"to": to, "from": ours, "prompt": "a tram at the sea"},
        headers={"X-Operator-Key": stack.env["OPERATOR_KEY"]},
        timeout=10,
    )
    row = stack.wait_finished(answer.json()["request_id"])
    assert row["status"] == "delivered"
    [message] = stack.messages_to(to)
    assert message["messaging_service_sid"] is None
    assert message["from"] == ours
