"""Every branch of shared/delivery_decisions.py: what `composite` does with a callback and with
the request it holds. Pure functions, so no stack: these run in `make test-fast`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.callbacks import QStashCallback
from shared.delivery_decisions import (
    CallbackOutcome,
    Deliver,
    FailAndTell,
    FallBack,
    Ignore,
    ModelGone,
    NoticeStep,
    PictureStep,
    RecordAttempt,
    Refusal,
    StuckStep,
    SweepTally,
    decide_callback,
    decide_model_gone,
    may_have_sent,
    notice_step,
    picture_step,
    refusal_of,
    stuck_step,
    sweep_tally,
    unclaimed_outcome,
    unreadable_answer,
)
from shared.errors import MessagingError, ProviderError
from shared.records import ClaimOutcome, FailureReason, RequestRecord, RequestStatus

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIMIT = 1_000_000


def record(**fields: object) -> RequestRecord:
    base: dict[str, object] = {
        "id": "5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11",
        "status": RequestStatus.COMPOSING,
        "recipient": "+15552000001",
        "sender": "+15550001111",
        "prompt": "a fox",
        "media_token": "t",
        "model": "gpt-image-2.6-flare",
        "created_at": NOW,
    }
    base.update(fields)
    return RequestRecord(**base)  # type: ignore[arg-type]


def error_body(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": "no"}}).encode()


def callback(status: int | None = 500, body: bytes = b"", **fields: object) -> QStashCallback:
    defaults: dict[str, object] = {"retried": 0, "max_retries": 2, "source_message_id": "msg_1"}
    defaults.update(fields)
    return QStashCallback(status=status, body=body, **defaults)  # type: ignore[arg-type]


# --- decide_callback ---------------------------------------------------------------------------


def test_a_2xx_answer_is_delivered() -> None:
    assert decide_callback(callback(200, b"{}")) == Deliver()


def test_a_retryable_failure_with_attempts_left_is_recorded_and_retried() -> None:
    decision = decide_callback(callback(503, b"busy", retried=0, max_retries=2))
    assert isinstance(decision, RecordAttempt)
    assert decision.detail.startswith("HTTP 503")


def test_a_timeout_with_attempts_left_is_recorded() -> None:
    assert isinstance(decide_callback(callback(None, retried=1, max_retries=2)), RecordAttempt)


@pytest.mark.parametrize("final", [{"retried": 2, "max_retries": 2}, {"dlq_id": "1725-0"}])
def test_the_last_attempt_fails_the_request_without_cancelling(final: dict[str, object]) -> None:
    decision = decide_callback(callback(503, b"", **final))
    assert decision == FailAndTell(FailureReason.PROVIDER_BUSY, "HTTP 503", cancel=None)


def test_a_refusal_fails_at_once_and_cancels_the_remaining_attempts() -> None:
    decision = decide_callback(callback(400, error_body("moderation_blocked"), retried=0))
    assert isinstance(decision, FailAndTell)
    assert decision.reason is FailureReason.REFUSED
    assert decision.cancel == "msg_1"


def test_a_refusal_on_the_last_attempt_has_nothing_to_cancel() -> None:
    decision = decide_callback(callback(400, error_body("moderation_blocked"), retried=2))
    assert isinstance(decision, FailAndTell) and decision.cancel is None


def test_a_missing_model_asks_the_model_rules() -> None:
    decision = decide_callback(callback(404, error_body("model_not_found")))
    assert isinstance(decision, ModelGone)
    assert "model_not_found" in decision.detail


# --- unreadable_answer ---------------------------------------------------------------------------


def test_an_answer_cut_at_the_plan_limit_is_too_large() -> None:
    cut = callback(200, b"x" * LIMIT)
    failure = unreadable_answer(cut, ProviderError("unreadable", retryable=False), LIMIT)
    assert failure.reason is FailureReason.TOO_LARGE
    assert f"QSTASH_MAX_MESSAGE_BYTES={LIMIT}" in failure.detail


def test_a_short_bad_answer_is_a_bad_response_with_the_error_detail() -> None:
    error = ProviderError("unreadable", retryable=False, detail="no b64_json")
    assert unreadable_answer(callback(200, b"{}"), error, LIMIT) == FailAndTell(
        FailureReason.BAD_RESPONSE, "no b64_json"
    )


def test_a_bad_answer_without_detail_gives_the_error_message() -> None:
    failure = unreadable_answer(
        callback(200, b"{}"), ProviderError("unreadable", retryable=False), LIMIT
    )
    assert failure.detail == "unreadable"


# --- decide_model_gone -------------------------------------------------------------------------

FLARE = "gpt-image-2.6-flare"
FALLBACK = "gpt-image-2.6"


def gone(model: str | None = None, **fields: object) -> QStashCallback:
    source = json.dumps({"model": model}).encode() if model else b""
    return callback(404, error_body("model_not_found"), source_body=source, **fields)


def test_a_model_gone_for_an_unknown_request_is_ignored() -> None:
    assert decide_model_gone(None, gone(), FALLBACK, "d") == Ignore(CallbackOutcome.UNKNOWN_REQUEST)


def test_a_model_gone_for_a_finished_request_is_ignored() -> None:
    done = record(status=RequestStatus.DELIVERED)
    assert decide_model_gone(done, gone(), FALLBACK, "d") == Ignore(CallbackOutcome.ALREADY_DONE)


def test_without_a_fallback_the_request_fails_as_model_unavailable() -> None:
    decision = decide_model_gone(record(), gone(FLARE), None, "HTTP 404")
    assert decision == FailAndTell(
        FailureReason.MODEL_UNAVAILABLE,
        f"the provider no longer serves {FLARE}: HTTP 404",
        cancel="msg_1",
    )


def test_when_the_fallback_itself_is_gone_the_request_fails() -> None:
    decision = decide_model_gone(record(model=FALLBACK), gone(FALLBACK), FALLBACK, "d")
    assert isinstance(decision, FailAndTell)
    assert decision.reason is FailureReason.MODEL_UNAVAILABLE


def test_the_first_callback_switches_the_row_then_falls_back() -> None:
    decision = decide_model_gone(record(model=FLARE), gone(FLARE), FALLBACK, "d")
    assert decision == FallBack(FALLBACK, FLARE, switch_from=FLARE, cancel="msg_1")


def test_the_failed_model_is_the_rows_when_the_publish_did_not_say() -> None:
    decision = decide_model_gone(record(model=FLARE), gone(None), FALLBACK, "d")
    assert isinstance(decision, FallBack) and decision.failed_model == FLARE


def test_a_later_callback_after_the_switch_publishes_again_without_switching() -> None:
    decision = decide_model_gone(record(model=FALLBACK), gone(FLARE), FALLBACK, "d")
    assert decision == FallBack(FALLBACK, FLARE, switch_from=None, cancel="msg_1")


def test_a_callback_about_a_model_left_behind_long_ago_is_superseded() -> None:
    decision = decide_model_gone(record(model="gpt-image-2.7"), gone(FLARE), FALLBACK, "d")
    assert decision == Ignore(CallbackOutcome.SUPERSEDED, cancel="msg_1")


# --- the claim -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "outcome"),
    [
        (ClaimOutcome.MISSING, CallbackOutcome.UNKNOWN_REQUEST),
        (ClaimOutcome.DONE, CallbackOutcome.ALREADY_DONE),
        (ClaimOutcome.TAKEN, CallbackOutcome.DUPLICATE),
        (ClaimOutcome.BUSY, CallbackOutcome.BUSY),
        (ClaimOutcome.CLAIMED, CallbackOutcome.UNKNOWN_REQUEST),  # a claim without its row
    ],
)
def test_what_a_callback_answers_without_the_claim(
    claim: ClaimOutcome, outcome: CallbackOutcome
) -> None:
    assert unclaimed_outcome(claim) is outcome


def test_only_busy_asks_qstash_to_retry() -> None:
    assert [o for o in CallbackOutcome if o.retry_later] == [CallbackOutcome.BUSY]


# --- under the claim -----------------------------------------------------------------------------

STARTED = {"send_started_at": NOW}


def test_twilio_is_asked_only_after_a_send_was_started() -> None:
    assert not may_have_sent(record())
    assert may_have_sent(record(**STARTED))


@pytest.mark.parametrize(
    ("fields", "sent_sid", "opted_out", "step"),
    [
        (STARTED, "MM1", False, PictureStep.ALREADY_SENT),
        (STARTED, "MM1", True, PictureStep.ALREADY_SENT),  # sent before the STOP: it counts
        ({}, None, True, PictureStep.OPTED_OUT),
        ({**STARTED, "image_path": "a.jpg"}, None, True, PictureStep.OPTED_OUT),
        ({**STARTED, "image_path": "a.jpg"}, None, False, PictureStep.SEND_STORED),
        (STARTED, None, False, PictureStep.STORE_AND_SEND),  # started, but nothing stored
        ({"image_path": "a.jpg"}, None, False, PictureStep.STORE_AND_SEND),
        ({}, None, False, PictureStep.STORE_AND_SEND),
    ],
)
def test_picture_step(
    fields: dict[str, object], sent_sid: str | None, opted_out: bool, step: PictureStep
) -> None:
    assert picture_step(record(**fields), sent_sid, opted_out) is step


@pytest.mark.parametrize(
    ("sent_sid", "opted_out", "step"),
    [
        ("SM1", False, NoticeStep.ALREADY_SENT),
        ("SM1", True, NoticeStep.ALREADY_SENT),
        (None, True, NoticeStep.OPTED_OUT),
        (None, False, NoticeStep.SEND),
    ],
)
def test_notice_step(sent_sid: str | None, opted_out: bool, step: NoticeStep) -> None:
    assert notice_step(sent_sid, opted_out) is step


def test_twilio_21610_is_an_opt_out_to_remember() -> None:
    error = MessagingError("refused", retryable=False, code=21610)
    assert refusal_of(error) == Refusal(FailureReason.OPTED_OUT, opted_out=True)


def test_any_other_final_refusal_is_undeliverable() -> None:
    error = MessagingError("refused", retryable=False, code=21211)
    assert refusal_of(error) == Refusal(FailureReason.UNDELIVERABLE, opted_out=False)


def test_a_retryable_send_failure_is_no_refusal() -> None:
    assert refusal_of(MessagingError("timeout", retryable=True)) is None


@pytest.mark.parametrize(
    ("fields", "step"),
    [
        ({**STARTED, "image_path": "a.jpg"}, StuckStep.LOOK_FOR_PICTURE),
        (STARTED, StuckStep.EXPIRE),  # a notice was being sent, or nothing was stored
        ({"image_path": "a.jpg"}, StuckStep.EXPIRE),
        ({}, StuckStep.EXPIRE),
    ],
)
def test_stuck_step(fields: dict[str, object], step: StuckStep) -> None:
    assert stuck_step(record(**fields)) is step


@pytest.mark.parametrize(
    ("outcome", "tally"),
    [
        (CallbackOutcome.FAILED, SweepTally.EXPIRED),
        (CallbackOutcome.DELIVERED, SweepTally.DELIVERED),
        (CallbackOutcome.DUPLICATE, SweepTally.SKIPPED),
        (CallbackOutcome.ALREADY_DONE, SweepTally.SKIPPED),
    ],
)
def test_sweep_tally(outcome: CallbackOutcome, tally: SweepTally) -> None:
    assert sweep_tally(outcome) is tally
