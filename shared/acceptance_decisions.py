"""Which requests `generate` takes, and what each caller is told: pure functions of the
request, the settings, the moderation verdict and `create_request`'s answer. No I/O here;
accept.py gathers the facts and acts (tests/test_decisions_acceptance.py covers every branch).

In order: `screen` (before anything is spent), the moderation verdict (`refused_by`),
`creation_answer` (the store's limits, opt-outs and resends), then the words for each caller:
`operator_answer` (HTTP status and JSON) and `refusal_reply` (the text a person reads or hears).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from . import replies
from .intake import PictureRequest
from .moderation import Verdict
from .recipients import RecipientProblem, check_recipient, explain
from .records import Channel, CreationOutcome, RequestRecord, RequestStatus
from .settings import Settings


class Acceptance(StrEnum):
    QUEUED = "queued"  # recorded and handed to QStash
    DUPLICATE = "duplicate"  # Twilio sent the same request again; nothing new was done
    OPTED_OUT = "opted_out"  # the recipient replied STOP; nothing was recorded
    NOT_ALLOWED = "not_allowed"  # an allowlist is set and the recipient is not on it
    LIMITED = "limited"  # a limit or the budget is reached; `limit` says which
    REFUSED = "refused"  # the moderation check flagged the prompt; nothing was recorded
    UNREACHABLE = "unreachable"  # not a number we may send to (`problem` says why)
    NO_WHATSAPP = "no_whatsapp"  # WHATSAPP=off
    CLOSED = "closed"  # the operator paused the service; nothing was recorded


@dataclass(frozen=True)
class Accepted:
    outcome: Acceptance
    request_id: str | None = None
    status: RequestStatus | None = None  # for a duplicate: where the first one is now
    reference: str | None = None
    limit: CreationOutcome | None = None  # for LIMITED: which limit (`is_limit`)
    categories: tuple[str, ...] = ()  # for REFUSED: what the moderation check flagged
    problem: RecipientProblem | None = None  # for UNREACHABLE
    region: str | None = None  # for UNREACHABLE: the number's country, when known


def screen(request: PictureRequest, settings: Settings) -> Accepted | None:
    """A refusal decided before anything is recorded or spent, or None to go on."""
    if request.channel is Channel.WHATSAPP and not settings.whatsapp:
        return Accepted(Acceptance.NO_WHATSAPP)
    # Our number spends money on whoever it sends to: no premium, foreign or made-up numbers.
    check = check_recipient(
        request.recipient,
        allowed_countries=settings.allowed_countries,
        allow_test_numbers=settings.allow_test_recipients,
    )
    if check.problem is not None:
        return Accepted(Acceptance.UNREACHABLE, problem=check.problem, region=check.region)
    return None


def refused_by(verdict: Verdict) -> Accepted | None:
    return Accepted(Acceptance.REFUSED, categories=verdict.categories) if verdict.flagged else None


def creation_answer(outcome: CreationOutcome, record: RequestRecord | None) -> Accepted | None:
    """What `create_request` said, as the caller's answer; None when a new row was recorded
    and its generation must now be published."""
    if outcome is CreationOutcome.CREATED:
        return None
    if outcome is CreationOutcome.DUPLICATE and record is not None:
        return Accepted(Acceptance.DUPLICATE, record.id, record.status, record.reference)
    if outcome is CreationOutcome.OPTED_OUT:
        return Accepted(Acceptance.OPTED_OUT)
    if outcome in (CreationOutcome.NOT_ALLOWED, CreationOutcome.BLOCKED):
        return Accepted(Acceptance.NOT_ALLOWED)
    if outcome is CreationOutcome.PAUSED:
        return Accepted(Acceptance.CLOSED)
    if outcome.is_limit:
        return Accepted(Acceptance.LIMITED, limit=outcome)
    raise ValueError(f"create_request answered {outcome.value} without its row")


def queued(record: RequestRecord) -> Accepted:
    return Accepted(Acceptance.QUEUED, record.id, RequestStatus.QUEUED, record.reference)


def worth_recording_publish(seconds_left: float | None, store_timeout_s: float) -> bool:
    """Whether to write down the QStash message id (only a STOP mid-flight needs it, to
    cancel the generation): not when the caller cannot wait for a slow store to answer."""
    return seconds_left is None or seconds_left > store_timeout_s


# --- what each caller is told ---------------------------------------------------------------


def operator_answer(accepted: Accepted, settings: Settings) -> tuple[int, dict[str, object]]:
    """The HTTP status and JSON body for an operator's request."""
    outcome = accepted.outcome
    if outcome is Acceptance.OPTED_OUT:
        return 409, {"error": "the recipient has opted out (replied STOP)"}
    if outcome is Acceptance.NOT_ALLOWED:
        return 403, {"error": "the recipient is not on the allowlist"}
    if outcome is Acceptance.LIMITED:
        limit = accepted.limit.value if accepted.limit else "unknown"
        return 429, {"error": f"limit reached: {limit}"}
    if outcome is Acceptance.REFUSED:
        flagged = ", ".join(accepted.categories) or "the moderation check"
        return 422, {"error": f"the prompt was refused ({flagged})"}
    if outcome is Acceptance.UNREACHABLE and accepted.problem is not None:
        why = explain(accepted.problem, settings.allowed_countries)
        return 422, {"error": why, "problem": accepted.problem.value}
    if outcome is Acceptance.NO_WHATSAPP:
        return 422, {"error": "WhatsApp is switched off (WHATSAPP=off)"}
    if outcome is Acceptance.CLOSED:
        return 503, {"error": "the service is paused by its operator"}
    return 202, {"request_id": accepted.request_id, "status": RequestStatus.QUEUED.value}


def refusal_reply(accepted: Accepted, settings: Settings, language: str = replies.EN) -> str | None:
    """The words, in `language`, for a person whose request was not taken because of an
    allowlist, a limit, the moderation check, their number or the WhatsApp switch; None when
    it was taken (or is a resend, or they opted out: each channel answers those its own way)."""
    outcome = accepted.outcome
    if outcome is Acceptance.NOT_ALLOWED:
        return replies.not_available(language)
    if outcome is Acceptance.LIMITED:
        return replies.limit_reached(accepted.limit, settings.limits, language)
    if outcome is Acceptance.REFUSED:
        return replies.prompt_refused(language)
    if outcome is Acceptance.UNREACHABLE and accepted.problem is not None:
        return replies.unreachable(accepted.problem, settings.allowed_countries, language)
    if outcome is Acceptance.NO_WHATSAPP:
        return replies.no_whatsapp(language)
    if outcome is Acceptance.CLOSED:
        return replies.closed_for_now(language)
    return None


def earlier_failed(accepted: Accepted) -> bool:
    """A resend of a request that has already failed: say so rather than "on its way"."""
    return accepted.outcome is Acceptance.DUPLICATE and accepted.status is RequestStatus.FAILED
