"""Every branch of shared/acceptance_decisions.py: which requests `generate` takes and what
each caller is told. Pure functions, so no stack: these run in `make test-fast`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import replies
from shared.acceptance_decisions import (
    Acceptance,
    Accepted,
    creation_answer,
    earlier_failed,
    operator_answer,
    queued,
    refusal_reply,
    refused_by,
    screen,
    worth_recording_publish,
)
from shared.intake import PictureRequest
from shared.moderation import Verdict
from shared.recipients import RecipientProblem, explain
from shared.records import Channel, CreationOutcome, RequestRecord, RequestStatus
from tests.memory_services import memory_settings

SETTINGS = memory_settings()
OURS = "+15550001111"
MOBILE = "+14155552671"  # a valid US mobile-or-fixed number


def picture_request(to: str = MOBILE, channel: Channel = Channel.SMS) -> PictureRequest:
    return PictureRequest(to, OURS, "a fox", channel)


def record(status: RequestStatus = RequestStatus.QUEUED) -> RequestRecord:
    return RequestRecord(
        id="5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11",
        status=status,
        recipient=MOBILE,
        sender=OURS,
        prompt="a fox",
        media_token="t",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


# --- screen --------------------------------------------------------------------------------------


def test_a_number_we_may_send_to_goes_on() -> None:
    assert screen(picture_request(), SETTINGS) is None


def test_whatsapp_off_refuses_whatsapp_before_anything_else() -> None:
    off = memory_settings(WHATSAPP="off")
    answer = screen(picture_request("whatsapp:+1900", Channel.WHATSAPP), off)
    assert answer == Accepted(Acceptance.NO_WHATSAPP)


def test_whatsapp_on_checks_the_number_behind_the_prefix() -> None:
    on = memory_settings(WHATSAPP="on")
    assert screen(picture_request(f"whatsapp:{MOBILE}", Channel.WHATSAPP), on) is None


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        ("+19005550123", RecipientProblem.PREMIUM_OR_SHARED),
        ("+447911123456", RecipientProblem.COUNTRY_NOT_ALLOWED),
        ("+18005550123", RecipientProblem.NOT_MOBILE),
    ],
)
def test_a_number_we_must_not_pay_to_reach_is_unreachable(
    number: str, problem: RecipientProblem
) -> None:
    answer = screen(picture_request(number), SETTINGS)
    assert answer is not None and answer.outcome is Acceptance.UNREACHABLE
    assert answer.problem is problem


# --- moderation and the store's answer ------------------------------------------------------------


def test_a_flagged_prompt_is_refused_with_its_categories() -> None:
    answer = refused_by(Verdict(True, ("violence",)))
    assert answer == Accepted(Acceptance.REFUSED, categories=("violence",))


def test_an_unflagged_prompt_goes_on() -> None:
    assert refused_by(Verdict(False)) is None


def test_a_created_row_goes_on_to_be_published() -> None:
    assert creation_answer(CreationOutcome.CREATED, record()) is None


def test_a_resend_answers_as_the_first_one_did() -> None:
    first = record(RequestStatus.SENDING)
    answer = creation_answer(CreationOutcome.DUPLICATE, first)
    assert answer == Accepted(Acceptance.DUPLICATE, first.id, RequestStatus.SENDING, "5f0c1a52")


@pytest.mark.parametrize(
    ("outcome", "acceptance"),
    [
        (CreationOutcome.OPTED_OUT, Acceptance.OPTED_OUT),
        (CreationOutcome.NOT_ALLOWED, Acceptance.NOT_ALLOWED),
        (CreationOutcome.BLOCKED, Acceptance.NOT_ALLOWED),
        (CreationOutcome.PAUSED, Acceptance.CLOSED),
    ],
)
def test_a_request_not_recorded(outcome: CreationOutcome, acceptance: Acceptance) -> None:
    assert creation_answer(outcome, None) == Accepted(acceptance)


@pytest.mark.parametrize("limit", [o for o in CreationOutcome if o.is_limit])
def test_each_limit_is_limited_and_says_which(limit: CreationOutcome) -> None:
    assert creation_answer(limit, None) == Accepted(Acceptance.LIMITED, limit=limit)


def test_the_limits_are_exactly_the_four_the_sql_checks() -> None:
    assert {o.value for o in CreationOutcome if o.is_limit} == {
        "per_number_hour",
        "per_number_day",
        "global_day",
        "budget",
    }


def test_a_duplicate_without_its_row_is_a_contract_error() -> None:
    with pytest.raises(ValueError, match="without its row"):
        creation_answer(CreationOutcome.DUPLICATE, None)


def test_a_queued_request_carries_its_id_and_reference() -> None:
    assert queued(record()) == Accepted(
        Acceptance.QUEUED, record().id, RequestStatus.QUEUED, "5f0c1a52"
    )


@pytest.mark.parametrize(
    ("left", "worth"), [(None, True), (30.0, True), (SETTINGS.store_timeout_s, False), (0.1, False)]
)
def test_the_message_id_is_written_only_when_there_is_time(left: float | None, worth: bool) -> None:
    assert worth_recording_publish(left, SETTINGS.store_timeout_s) is worth


# --- what the operator is told ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("accepted", "status", "error"),
    [
        (Accepted(Acceptance.OPTED_OUT), 409, "the recipient has opted out (replied STOP)"),
        (Accepted(Acceptance.NOT_ALLOWED), 403, "the recipient is not on the allowlist"),
        (
            Accepted(Acceptance.LIMITED, limit=CreationOutcome.BUDGET),
            429,
            "limit reached: budget",
        ),
        (
            Accepted(Acceptance.REFUSED, categories=("violence", "hate")),
            422,
            "the prompt was refused (violence, hate)",
        ),
        (
            Accepted(Acceptance.REFUSED),
            422,
            "the prompt was refused (the moderation check)",
        ),
        (Accepted(Acceptance.NO_WHATSAPP), 422, "WhatsApp is switched off (WHATSAPP=off)"),
        (Accepted(Acceptance.CLOSED), 503, "the service is paused by its operator"),
    ],
)
def test_operator_answers(accepted: Accepted, status: int, error: str) -> None:
    assert operator_answer(accepted, SETTINGS) == (status, {"error": error})


def test_an_operator_hears_why_a_number_is_unreachable() -> None:
    accepted = Accepted(Acceptance.UNREACHABLE, problem=RecipientProblem.NOT_MOBILE)
    status, body = operator_answer(accepted, SETTINGS)
    assert status == 422
    assert body == {
        "error": explain(RecipientProblem.NOT_MOBILE, SETTINGS.allowed_countries),
        "problem": "not_mobile",
    }


@pytest.mark.parametrize("outcome", [Acceptance.QUEUED, Acceptance.DUPLICATE])
def test_a_taken_request_is_202_with_its_id(outcome: Acceptance) -> None:
    accepted = Accepted(outcome, request_id="r1")
    assert operator_answer(accepted, SETTINGS) == (202, {"request_id": "r1", "status": "queued"})


# --- what a person is told ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accepted", "reply"),
    [
        (Accepted(Acceptance.NOT_ALLOWED), replies.not_available()),
        (
            Accepted(Acceptance.LIMITED, limit=CreationOutcome.PER_NUMBER_HOUR),
            replies.limit_reached(CreationOutcome.PER_NUMBER_HOUR, SETTINGS.limits),
        ),
        (Accepted(Acceptance.REFUSED), replies.prompt_refused()),
        (
            Accepted(Acceptance.UNREACHABLE, problem=RecipientProblem.PREMIUM_OR_SHARED),
            explain(RecipientProblem.PREMIUM_OR_SHARED, SETTINGS.allowed_countries),
        ),
        (Accepted(Acceptance.NO_WHATSAPP), replies.no_whatsapp()),
        (Accepted(Acceptance.CLOSED), replies.closed_for_now()),
    ],
)
def test_refusal_replies(accepted: Accepted, reply: str) -> None:
    assert refusal_reply(accepted, SETTINGS) == reply


@pytest.mark.parametrize("outcome", [Acceptance.QUEUED, Acceptance.DUPLICATE, Acceptance.OPTED_OUT])
def test_no_refusal_reply_for_a_taken_request_or_an_opt_out(outcome: Acceptance) -> None:
    assert refusal_reply(Accepted(outcome), SETTINGS) is None


def test_each_limit_has_its_own_words() -> None:
    hour = replies.limit_reached(CreationOutcome.PER_NUMBER_HOUR, SETTINGS.limits)
    day = replies.limit_reached(CreationOutcome.PER_NUMBER_DAY, SETTINGS.limits)
    everyone = replies.limit_reached(CreationOutcome.GLOBAL_DAY, SETTINGS.limits)
    assert "last hour" in hour and "tomorrow" in day and "all the pictures" in everyone
    assert replies.limit_reached(CreationOutcome.BUDGET, SETTINGS.limits) == everyone


@pytest.mark.parametrize(
    ("status", "failed"),
    [(RequestStatus.FAILED, True), (RequestStatus.DELIVERED, False), (RequestStatus.QUEUED, False)],
)
def test_a_resend_of_a_failed_request_says_so(status: RequestStatus, failed: bool) -> None:
    assert earlier_failed(Accepted(Acceptance.DUPLICATE, "r1", status)) is failed


def test_a_new_request_is_not_an_earlier_failure() -> None:
    assert not earlier_failed(Accepted(Acceptance.QUEUED, "r1", RequestStatus.FAILED))
