"""Nobody can make us spend on someone else: a spoofed caller ID gets no picture (the caller is
asked to text instead), and nothing is recorded or paid for."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from devstack.call import play_call
from devstack.stack_client import StackClient, signed_post
from devstack.vendor_calls import incoming_text, reply_text, studio_call

pytestmark = pytest.mark.stack


def rows_for(stack: StackClient, number: str) -> list[dict[str, object]]:
    return stack.sql("select * from public.requests where recipient = %s", number)


@pytest.mark.parametrize("verdict", ["TN-Validation-Passed-A", "TN-Validation-Passed-B"])
def test_a_caller_their_carrier_vouches_for_gets_the_picture_and_the_verdict_is_kept(
    stack: StackClient, caller: str, verdict: str
) -> None:
    execution = play_call(stack.env, ["a fox in the snow"], caller, stir_verstat=verdict)
    request_id = execution.widgets["request_by_call_en"]["parsed"]["request_id"]
    row = stack.wait_finished(request_id)
    assert (row["status"], row["caller_verdict"]) == ("delivered", verdict)


@pytest.mark.parametrize(
    "verdict", ["TN-Validation-Passed-C", "TN-Validation-Failed-A", "No-TN-Validation", None]
)
def test_an_unvouched_caller_is_asked_to_text_and_nothing_is_spent(
    stack: StackClient, caller: str, verdict: str | None
) -> None:
    published = len(stack.qstash_messages())
    execution = play_call(stack.env, ["a fox in the snow"], caller, stir_verstat=verdict)
    said = " ".join(turn.text for turn in execution.transcript)
    assert "can't confirm this call comes from the number" in said
    assert "text DRAW" in said
    assert rows_for(stack, caller) == []
    assert len(stack.qstash_messages()) == published


def test_a_forged_verdict_of_another_shape_counts_as_none(stack: StackClient, caller: str) -> None:
    answer = signed_post(
        stack, studio_call(caller, "a fox", stir_verstat="TN-Validation-Passed-A\x00")
    ).json()
    assert answer["accepted"] is False
    assert rows_for(stack, caller) == []


def test_with_the_check_off_every_caller_id_is_trusted(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("VOICE_CALLER_CHECK", "off")
    execution = play_call(stack.env, ["a fox in the snow"], caller, stir_verstat=None)
    request_id = execution.widgets["request_by_call_en"]["parsed"]["request_id"]
    row = stack.wait_finished(request_id)
    assert (row["status"], row["caller_verdict"]) == ("delivered", None)


def test_texts_are_not_held_to_the_voice_check(stack: StackClient, caller: str) -> None:
    text = {"body": "DRAW a fox", "to": caller, "from": stack.env["DEMO_FROM"]}
    assert signed_post(stack, text).json()["accepted"] is True


# --- pumping: premium, foreign and made-up numbers get nothing -----------------------------

PREMIUM_US, UK_MOBILE, PREMIUM_UK = "+19002345678", "+447400123456", "+449012345678"


def operator_post(stack: StackClient, to: str) -> requests.Response:
    return requests.post(
        stack.env["GENERATE_URL"],
        json={"to": to, "from": stack.env["DEMO_FROM"], "prompt": "a fox"},
        headers={"X-Operator-Key": stack.env["OPERATOR_KEY"]},
        timeout=10,
    )


@pytest.mark.parametrize(
    ("number", "problem", "words"),
    [
        (PREMIUM_US, "premium_or_shared", "premium"),
        (PREMIUM_UK, "premium_or_shared", "premium"),
        (UK_MOBILE, "country_not_allowed", "the US and Canada"),
        ("+18002345678", "not_mobile", "mobile"),
    ],
)
def test_a_number_we_may_not_send_to_is_refused_on_every_channel(
    stack: StackClient, number: str, problem: str, words: str
) -> None:
    operator = operator_post(stack, number)
    assert operator.status_code == 422
    assert operator.json()["problem"] == problem
    assert words in operator.json()["error"]
    call = signed_post(stack, studio_call(number, "a fox")).json()
    assert call["accepted"] is False and words in call["message"]
    studio_text = {"body": "DRAW a fox", "to": number, "from": stack.env["DEMO_FROM"]}
    text = signed_post(stack, studio_text).json()
    assert text["accepted"] is False and words in text["message"]
    assert words in reply_text(signed_post(stack, incoming_text(number, "DRAW a fox")))
    assert rows_for(stack, number) == []


def test_allowed_countries_can_be_widened(
    stack: StackClient, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("ALLOWED_COUNTRIES", "US,CA,GB")
    assert operator_post(stack, UK_MOBILE).status_code == 202


def test_test_numbers_are_refused_outside_the_local_stack(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("ALLOW_TEST_RECIPIENTS", "off")
    refused = operator_post(stack, caller)
    assert (refused.status_code, refused.json()["problem"]) == (422, "not_valid")


def test_the_operator_may_spell_a_number_as_people_write_it(stack: StackClient) -> None:
    answer = operator_post(stack, "(212) 555-0123")
    assert answer.status_code == 202, answer.text
    [row] = stack.sql(
        "select recipient from public.requests where id = %s", answer.json()["request_id"]
    )
    assert row["recipient"] == "+12125550123"


def test_whatsapp_can_be_switched_off(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    """Meta's WhatsApp Business policy restricts AI services [3P press, 2026-01-15]: an
    operator who has not checked the current terms can switch WhatsApp off."""

    function_setting("WHATSAPP", "off")
    sender = f"whatsapp:{caller}"
    reply = reply_text(
        signed_post(stack, incoming_text(sender, "DRAW a fox", ours="whatsapp:+15005550006"))
    )
    assert "don't send pictures on WhatsApp" in reply
    ours = "whatsapp:+15005550006"
    studio_text = signed_post(stack, {"body": "DRAW a fox", "to": sender, "from": ours}).json()
    assert "don't send pictures on WhatsApp" in studio_text["message"]
    operator = requests.post(
        stack.env["GENERATE_URL"],
        json={"to": sender, "from": ours, "prompt": "a fox"},
        headers={"X-Operator-Key": stack.env["OPERATOR_KEY"]},
        timeout=10,
    )
    assert operator.status_code == 422 and "WHATSAPP=off" in operator.json()["error"]
    assert rows_for(stack, sender) == []
