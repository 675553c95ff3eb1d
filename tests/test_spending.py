"""Nobody can make us spend on someone else: a spoofed caller ID gets no picture (the caller is
asked to text instead), and nothing is recorded or paid for."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from devstack.call import play_call
from tests.conftest import StackClient
from tests.test_channels import signed_post, studio_call

pytestmark = pytest.mark.stack


def rows_for(stack: StackClient, number: str) -> list[dict[str, object]]:
    return stack.sql("select * from public.requests where recipient = %s", number)


@pytest.mark.parametrize("verdict", ["TN-Validation-Passed-A", "TN-Validation-Passed-B"])
def test_a_caller_their_carrier_vouches_for_gets_the_picture_and_the_verdict_is_kept(
    stack: StackClient, caller: str, verdict: str
) -> None:
    execution = play_call(stack.env, ["a fox in the snow"], caller, stir_verstat=verdict)
    request_id = execution.widgets["request_by_call"]["parsed"]["request_id"]
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
    request_id = execution.widgets["request_by_call"]["parsed"]["request_id"]
    row = stack.wait_finished(request_id)
    assert (row["status"], row["caller_verdict"]) == ("delivered", None)


def test_texts_are_not_held_to_the_voice_check(stack: StackClient, caller: str) -> None:
    text = {"body": "DRAW a fox", "to": caller, "from": stack.env["DEMO_FROM"]}
    assert signed_post(stack, text).json()["accepted"] is True
