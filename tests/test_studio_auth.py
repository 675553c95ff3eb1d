"""How a Studio flow proves itself to `generate`. Whether Studio signs a form-mode request is
[UNCONFIRMED], so the flow also carries the deployment's flow key: either one lets it in, and
neither weakens the other. Twilio's message webhook stays signature-only."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from devstack.stack_client import StackClient, signed_post
from devstack.vendor_calls import incoming_text, reply_text, studio_call
from shared.twilio_webhooks import SIGNATURE_SETTINGS_HEADER

pytestmark = pytest.mark.stack


def unsigned_post(
    stack: StackClient, form: dict[str, str], query: dict[str, str] | None = None
) -> requests.Response:
    """A form POST as Studio would send it if it did not sign form-mode requests."""
    url = stack.env["GENERATE_URL"] + (f"?{urlencode(query)}" if query else "")
    return requests.post(
        url,
        data=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        timeout=10,
    )


def test_an_unsigned_studio_request_with_the_flow_key_is_taken(
    stack: StackClient, caller: str
) -> None:
    form = studio_call(caller, "a fox by flow key", flow_key=stack.env["STUDIO_FLOW_KEY"])
    answer = unsigned_post(stack, form)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] is True
    row = stack.wait_finished(answer.json()["request_id"])
    assert row["status"] == "delivered"


@pytest.mark.parametrize("key", ["", "wrong-key", "devstack-studio-flow-ke", "é-key"])
def test_an_unsigned_studio_request_without_the_right_key_is_forbidden(
    stack: StackClient, caller: str, key: str
) -> None:
    form = studio_call(caller, "a forged fox", flow_key=key)
    assert unsigned_post(stack, form).status_code == 403
    assert stack.sql("select id from public.requests where recipient = %s", caller) == []


def test_a_signed_studio_request_is_taken_without_or_with_a_stale_key(
    stack: StackClient, caller: str
) -> None:
    assert signed_post(stack, studio_call(caller, "a signed fox")).json()["accepted"] is True
    stale = studio_call(caller, "a signed fox, old flow", flow_key="a-rotated-away-key")
    assert signed_post(stack, stale).json()["accepted"] is True


def test_studio_parameters_in_the_query_are_read_too(stack: StackClient, caller: str) -> None:
    """One Twilio page says the widget's parameters are appended to the URL [UNCONFIRMED]."""
    query = studio_call(caller, "a fox in the query", flow_key=stack.env["STUDIO_FLOW_KEY"])
    answer = unsigned_post(stack, {}, query=query)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] is True


def test_the_flow_key_does_not_open_the_message_webhook(stack: StackClient, caller: str) -> None:
    form = incoming_text(caller, "DRAW a fox", flow_key=stack.env["STUDIO_FLOW_KEY"])
    assert unsigned_post(stack, form).status_code == 403
    # The same webhook, signed, still works.
    assert "on its way" in reply_text(signed_post(stack, incoming_text(caller, "DRAW a fox")))


def test_a_webhook_signed_with_a_sha256_shared_key_is_taken_when_announced(
    stack: StackClient, caller: str
) -> None:
    """Webhook Rules can sign with HMAC-SHA256 and announce it in
    X-Twilio-Webhooks-Signature-Settings [SDK twilio 9.12+]; the secret is then the shared
    key's, which the deployment keeps in TWILIO_AUTH_TOKEN."""
    params = incoming_text(caller, "DRAW a fox signed with SHA-256")
    signature = RequestValidator(stack.env["TWILIO_AUTH_TOKEN"]).compute_signature(
        stack.env["GENERATE_URL"], params, "HMAC_SHA256"
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "X-Twilio-Signature": signature,
    }
    announced = {
        **headers,
        SIGNATURE_SETTINGS_HEADER: "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256",
    }
    body = urlencode(params)
    url = stack.env["GENERATE_URL"]
    assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 403
    taken = requests.post(url, data=body, headers=announced, timeout=10)
    assert "on its way" in reply_text(taken)
    unknown = {**headers, SIGNATURE_SETTINGS_HEADER: "key=k,algorithm=HMAC_SHA512"}
    assert requests.post(url, data=body, headers=unknown, timeout=10).status_code == 403


def test_without_a_configured_flow_key_only_the_signature_lets_the_flow_in(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    """A flow imported by hand may still carry the placeholder; nothing breaks for that."""
    function_setting("STUDIO_FLOW_KEY", "")  # and none in Secret Manager either
    form = studio_call(caller, "a fox, keyless deployment", flow_key="YOUR-STUDIO-FLOW-KEY")
    assert signed_post(stack, form).json()["accepted"] is True
    assert unsigned_post(stack, form).status_code == 403
    empty = studio_call(caller, "a fox, empty key", flow_key="")
    assert unsigned_post(stack, empty).status_code == 403
