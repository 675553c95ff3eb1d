"""Delivery receipts: Twilio's status callbacks record how far each request's message got."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests
from twilio.request_validator import RequestValidator

from devstack.stack_client import StackClient, queued_row

pytestmark = pytest.mark.stack


def post_status(
    stack: StackClient, request_id: str, params: dict[str, str], token: str | None = None
) -> requests.Response:
    url = f"{stack.env['COMPOSITE_URL']}?message_status={request_id}"
    signature = RequestValidator(token or stack.env["TWILIO_AUTH_TOKEN"]).compute_signature(
        url, params
    )
    return requests.post(
        url,
        data=urlencode(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
        timeout=10,
    )


def test_a_delivered_mms_is_recorded_as_reaching_the_handset(
    stack: StackClient, caller: str
) -> None:
    row = stack.wait_finished(stack.submit("a carrier pigeon", to=caller).json()["request_id"])
    stack.stack.wait_idle(10)
    row = stack.row(row["id"])
    assert (row["handset_status"], row["handset_error_code"]) == ("delivered", None)


def test_a_picture_twilio_cannot_fetch_is_recorded_with_twilios_error(
    stack: StackClient, caller: str
) -> None:
    stack.fault(
        "supabase",
        service="storage",
        kind="503",
        times=-1,
        method="GET",
        path_contains="/object/public/",
    )
    row = stack.wait_finished(stack.submit("an unreachable island", to=caller).json()["request_id"])
    stack.stack.wait_idle(15)
    row = stack.row(row["id"])
    assert row["status"] == "delivered"  # Twilio took the MMS ...
    assert (row["handset_status"], row["handset_error_code"]) == (
        "failed",
        11200,
    )  # ... but could not send it


def test_statuses_only_move_forward(stack: StackClient, caller: str) -> None:
    request_id = queued_row(stack, caller)
    stack.sql(
        "update public.requests set message_sid = 'MM' || repeat('a', 32) where id = %s", request_id
    )
    sid = "MM" + "a" * 32
    assert (
        post_status(
            stack, request_id, {"MessageSid": sid, "MessageStatus": "delivered"}
        ).status_code
        == 204
    )
    post_status(stack, request_id, {"MessageSid": sid, "MessageStatus": "sent"})
    assert stack.row(request_id)["handset_status"] == "delivered"


def test_a_status_for_another_message_is_not_recorded(stack: StackClient, caller: str) -> None:
    request_id = queued_row(stack, caller)
    stack.sql(
        "update public.requests set message_sid = 'MM' || repeat('b', 32) where id = %s", request_id
    )
    post_status(
        stack,
        request_id,
        {"MessageSid": "MM" + "c" * 32, "MessageStatus": "failed", "ErrorCode": "30003"},
    )
    assert stack.row(request_id)["handset_status"] is None


@pytest.mark.parametrize("variant", ["unsigned", "wrong_token"])
def test_forged_status_callbacks_are_refused(stack: StackClient, caller: str, variant: str) -> None:
    request_id = queued_row(stack, caller)
    params = {"MessageSid": "MM" + "d" * 32, "MessageStatus": "delivered"}
    if variant == "unsigned":
        response = requests.post(
            f"{stack.env['COMPOSITE_URL']}?message_status={request_id}", data=params, timeout=10
        )
    else:
        response = post_status(stack, request_id, params, token="0" * 32)
    assert response.status_code == 403
    assert stack.row(request_id)["handset_status"] is None


def test_a_status_callback_without_a_request_id_is_a_400(stack: StackClient) -> None:
    assert (
        post_status(stack, "nope", {"MessageSid": "MM1", "MessageStatus": "sent"}).status_code
        == 400
    )


@pytest.mark.parametrize(
    ("fields", "recorded"),
    [
        ({"MessageStatus": "failed", "ErrorCode": "3" * 5000}, ("failed", None)),
        ({"MessageStatus": "failed", "ErrorCode": "9999999999"}, ("failed", None)),
        ({"MessageStatus": "fail\x00ed", "ErrorCode": "30003"}, (None, None)),
        ({"MessageStatus": "exploded"}, (None, None)),
        ({"MessageStatus": "delivered", "MessageSid": "MM\x00" + "a" * 31}, (None, None)),
    ],
)
def test_a_signed_status_callback_with_unusable_fields_is_ignored_not_an_error(
    stack: StackClient, caller: str, fields: dict[str, str], recorded: tuple[object, object]
) -> None:
    request_id = queued_row(stack, caller)
    params = {"MessageSid": "MM" + "e" * 32, **fields}
    assert post_status(stack, request_id, params).status_code == 204
    row = stack.row(request_id)
    assert (row["handset_status"], row["handset_error_code"]) == recorded
