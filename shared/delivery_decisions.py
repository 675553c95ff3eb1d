"""What `composite` does with a callback, and then with the request it holds: pure functions
of the callback, the request row, the settings and what Twilio already has. No I/O here;
delivery.py gathers the facts, asks, and carries the answer out (tests/test_decisions_delivery.py
covers every branch).

A callback's path:
1. `decide_callback`: deliver the picture, record a failed attempt (QStash retries), fail and
   tell the person, or the model is gone (`decide_model_gone`: fall back, fail, or ignore).
2. The claim (`unclaimed_outcome` when another run has it).
3. Under the claim, `picture_step` or `notice_step` from what Twilio already has and whether
   the person has opted out since; `refusal_of` when Twilio refuses the send; the sweep's
   `stuck_step` for a request past its deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .callbacks import QStashCallback
from .errors import MessagingError, ProviderError
from .generation import classify_provider_failure
from .messaging import OPTED_OUT
from .records import ClaimOutcome, FailureReason, RequestRecord


class CallbackOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    ATTEMPT_RECORDED = "attempt_recorded"
    DUPLICATE = "duplicate"  # another callback holds the request
    ALREADY_DONE = "already_done"
    UNKNOWN_REQUEST = "unknown_request"
    BUSY = "busy"  # our own earlier delivery may still be running: ask to be retried
    FELL_BACK = "fell_back"  # the model is gone; asked again with IMAGE_MODEL_FALLBACK
    SUPERSEDED = "superseded"  # about a model the request has already moved away from

    @property
    def retry_later(self) -> bool:
        return self is CallbackOutcome.BUSY


# --- 1. the callback --------------------------------------------------------------------------


@dataclass(frozen=True)
class Deliver:
    """The provider answered 2xx: read, frame, store and send the picture."""


@dataclass(frozen=True)
class RecordAttempt:
    """A failed attempt QStash will retry: count it, send nothing."""

    detail: str


@dataclass(frozen=True)
class FailAndTell:
    """End the request as failed and tell the person; first cancel `cancel` (a QStash message
    id) when more attempts would only cost money."""

    reason: FailureReason
    detail: str
    cancel: str | None = None


@dataclass(frozen=True)
class ModelGone:
    """The provider no longer serves the model asked for: see `decide_model_gone`."""

    detail: str


CallbackDecision = Deliver | RecordAttempt | FailAndTell | ModelGone


def decide_callback(callback: QStashCallback) -> CallbackDecision:
    if callback.succeeded:
        return Deliver()
    failure = classify_provider_failure(callback.status, callback.body)
    if failure.reason is FailureReason.MODEL_UNAVAILABLE:
        return ModelGone(failure.detail)
    if callback.is_final:
        return FailAndTell(failure.reason, failure.detail)
    if not failure.retryable:
        # Retrying a refused or invalid request only costs money: stop QStash first, so a
        # notice that fails (and is retried) cannot let a later attempt be delivered.
        return FailAndTell(failure.reason, failure.detail, cancel=callback.source_message_id)
    return RecordAttempt(failure.detail)


def unreadable_answer(
    callback: QStashCallback, error: ProviderError, limit_bytes: int
) -> FailAndTell:
    """Why a 2xx answer held no usable picture: cut by QStash's plan limit, or just bad."""
    if callback.looks_truncated(limit_bytes):
        return FailAndTell(
            FailureReason.TOO_LARGE,
            f"QStash cut the provider's answer to {len(callback.body)} bytes: it is over your"
            f" plan's Max Message Size (QSTASH_MAX_MESSAGE_BYTES={limit_bytes}); ask for a"
            " smaller IMAGE_SIZE or IMAGE_COMPRESSION, or use a plan with larger messages",
        )
    return FailAndTell(FailureReason.BAD_RESPONSE, error.detail or error.message)


# --- 1b. the model is gone ----------------------------------------------------------------------


@dataclass(frozen=True)
class FallBack:
    """Ask again with `model`; first move the row off `switch_from` when it is still on it, so
    the fallback's own callbacks always find the request."""

    model: str
    failed_model: str
    switch_from: str | None
    cancel: str | None


@dataclass(frozen=True)
class Ignore:
    """Nothing to do but answer `outcome` (after cancelling `cancel`, if set)."""

    outcome: CallbackOutcome
    cancel: str | None = None


ModelDecision = FallBack | FailAndTell | Ignore


def decide_model_gone(
    record: RequestRecord | None,
    callback: QStashCallback,
    fallback: str | None,
    detail: str,
) -> ModelDecision:
    """Ask once more with IMAGE_MODEL_FALLBACK if it is set and not the model that just failed;
    else fail, telling the person. Every callback about the failed model falls back (a run may
    have died between the switch and the publish); the fallback's deduplication id keeps that
    to one generation."""
    if record is None:
        return Ignore(CallbackOutcome.UNKNOWN_REQUEST)
    if record.status.finished:
        return Ignore(CallbackOutcome.ALREADY_DONE)
    failed_model = callback.requested_model or record.model
    cancel = callback.source_message_id
    if not fallback or failed_model == fallback:
        reason = f"the provider no longer serves {failed_model}: {detail}"
        return FailAndTell(FailureReason.MODEL_UNAVAILABLE, reason, cancel=cancel)
    if record.model == failed_model:
        return FallBack(fallback, failed_model, switch_from=failed_model, cancel=cancel)
    if record.model != fallback:
        return Ignore(CallbackOutcome.SUPERSEDED, cancel=cancel)
    return FallBack(fallback, failed_model, switch_from=None, cancel=cancel)


# --- 2. the claim -----------------------------------------------------------------------------

_UNCLAIMED = {
    ClaimOutcome.MISSING: CallbackOutcome.UNKNOWN_REQUEST,
    ClaimOutcome.DONE: CallbackOutcome.ALREADY_DONE,
    ClaimOutcome.TAKEN: CallbackOutcome.DUPLICATE,
    ClaimOutcome.BUSY: CallbackOutcome.BUSY,
}


def unclaimed_outcome(outcome: ClaimOutcome) -> CallbackOutcome:
    """What a callback answers when `claim_request` did not give it the request."""
    return _UNCLAIMED.get(outcome, CallbackOutcome.UNKNOWN_REQUEST)


# --- 3. under the claim ---------------------------------------------------------------------


def may_have_sent(record: RequestRecord) -> bool:
    """Whether an earlier run got as far as asking Twilio to send (so Twilio must be asked
    before anything is sent again)."""
    return record.send_started_at is not None


class PictureStep(StrEnum):
    ALREADY_SENT = "already_sent"  # Twilio has it: record it as delivered
    OPTED_OUT = "opted_out"  # STOP since asking: end without sending
    SEND_STORED = "send_stored"  # an earlier run stored it and died before Twilio took it
    STORE_AND_SEND = "store_and_send"


def picture_step(record: RequestRecord, sent_sid: str | None, opted_out: bool) -> PictureStep:
    """`sent_sid`: the picture's SID at Twilio when `may_have_sent` and Twilio has it."""
    if sent_sid is not None:
        return PictureStep.ALREADY_SENT
    if opted_out:
        return PictureStep.OPTED_OUT
    if record.send_started_at and record.image_path:
        return PictureStep.SEND_STORED  # both were stored before the earlier run sent
    return PictureStep.STORE_AND_SEND


class NoticeStep(StrEnum):
    ALREADY_SENT = "already_sent"  # Twilio has a notice of ours: record it, send nothing
    OPTED_OUT = "opted_out"
    SEND = "send"


def notice_step(sent_sid: str | None, opted_out: bool) -> NoticeStep:
    if sent_sid is not None:
        return NoticeStep.ALREADY_SENT
    return NoticeStep.OPTED_OUT if opted_out else NoticeStep.SEND


@dataclass(frozen=True)
class Refusal:
    """Twilio refused a send for good. `opted_out`: the person replied STOP, which is
    remembered so nothing more is sent to them (Twilio's 21610)."""

    reason: FailureReason
    opted_out: bool


def refusal_of(error: MessagingError) -> Refusal | None:
    """The opt-out rule, in one place; None when the send may succeed later (then the run
    gives its claim back and QStash retries)."""
    if error.retryable:
        return None
    opted_out = error.code == OPTED_OUT
    return Refusal(FailureReason.OPTED_OUT if opted_out else FailureReason.UNDELIVERABLE, opted_out)


class StuckStep(StrEnum):
    LOOK_FOR_PICTURE = "look_for_picture"  # a run died after storing it: Twilio may have it
    EXPIRE = "expire"


def stuck_step(record: RequestRecord) -> StuckStep:
    """The sweep's ending for a request past its deadline: delivered if Twilio already has
    its picture, otherwise failed as expired and the person told."""
    if record.send_started_at and record.image_path:
        return StuckStep.LOOK_FOR_PICTURE
    return StuckStep.EXPIRE


class SweepTally(StrEnum):
    EXPIRED = "expired"
    DELIVERED = "delivered"
    SKIPPED = "skipped"  # a callback was working on it


def sweep_tally(outcome: CallbackOutcome) -> SweepTally:
    if outcome is CallbackOutcome.FAILED:
        return SweepTally.EXPIRED
    if outcome is CallbackOutcome.DELIVERED:
        return SweepTally.DELIVERED
    return SweepTally.SKIPPED
