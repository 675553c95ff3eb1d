"""`generate`'s half of the pipeline: record the request, then hand the generation to QStash.

Recording first means a callback can never arrive for a request we have not recorded (the
race the original project had). `composite`'s half is in `delivery.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from . import logs
from .deadline import Deadline
from .errors import PublishError, StoreError
from .intake import PictureRequest
from .moderation import check_prompt
from .publishing import generation_job
from .recipients import RecipientProblem, check_recipient
from .records import Channel, RequestStatus
from .services import Services
from .store import NewRequest


class Acceptance(StrEnum):
    QUEUED = "queued"  # recorded and handed to QStash
    DUPLICATE = "duplicate"  # Twilio sent the same request again; nothing new was done
    OPTED_OUT = "opted_out"  # the recipient replied STOP; nothing was recorded
    NOT_ALLOWED = "not_allowed"  # an allowlist is set and the recipient is not on it
    LIMITED = "limited"  # a limit or the budget is reached; `limit` says which
    REFUSED = "refused"  # the moderation check flagged the prompt; nothing was recorded
    UNREACHABLE = "unreachable"  # not a number we may send to (`problem` says why)
    NO_WHATSAPP = "no_whatsapp"  # WHATSAPP=off


@dataclass(frozen=True)
class Accepted:
    outcome: Acceptance
    request_id: str | None = None
    status: RequestStatus | None = None  # for a duplicate: where the first one is now
    reference: str | None = None
    limit: str | None = None  # for LIMITED: per_number_hour, per_number_day, global_day, budget
    categories: tuple[str, ...] = ()  # for REFUSED: what the moderation check flagged
    problem: RecipientProblem | None = None  # for UNREACHABLE


def accept_picture_request(
    request: PictureRequest, services: Services, deadline: Deadline | None = None
) -> Accepted:
    """Record the request, then hand the generation to QStash.

    Raises `StoreError` if nothing could be recorded (nothing was published), or
    `PublishError` after marking the recorded request failed.
    """
    settings = services.settings
    if request.channel is Channel.WHATSAPP and not settings.whatsapp:
        return Accepted(Acceptance.NO_WHATSAPP)
    # Our number spends money on whoever it sends to: no premium, foreign or made-up numbers.
    check = check_recipient(
        request.recipient,
        allowed_countries=settings.allowed_countries,
        allow_test_numbers=settings.allow_test_recipients,
    )
    if check.problem is not None:
        logs.info("recipient refused", problem=check.problem.value, region=check.region)
        return Accepted(Acceptance.UNREACHABLE, problem=check.problem)
    # Resolve secrets first: a missing one must fail before a row exists, not leave it queued.
    settings.secret("SAFETY_IDENTIFIER_SALT").reveal()
    provider_key = settings.secret("OPENAI_API_KEY")
    provider_key.reveal()
    settings.secret("QSTASH_TOKEN").reveal()  # cached; the publisher reads it again

    if settings.moderation:
        verdict = check_prompt(
            request.prompt, settings.openai_base_url, provider_key, services.http, deadline
        )
        if verdict.flagged:
            logs.info("prompt flagged by moderation", categories=list(verdict.categories))
            return Accepted(Acceptance.REFUSED, categories=verdict.categories)

    creation = services.store.create(
        NewRequest(
            recipient=request.recipient,
            sender=request.sender,
            prompt=request.prompt,
            channel=request.channel,
            model=settings.image.model,
            size=settings.image.size,
            quality=settings.image.quality,
            source_ref=request.source_ref,
            estimated_cost_usd=settings.estimated_cost_usd,
            limits=settings.limits.as_json(),
            caller_verdict=request.caller_verdict,
        )
    )
    record = creation.record
    if record is None:
        logs.info("request not taken", outcome=creation.outcome, channel=request.channel.value)
        if creation.outcome == "opted_out":
            return Accepted(Acceptance.OPTED_OUT)
        if creation.outcome == "not_allowed":
            return Accepted(Acceptance.NOT_ALLOWED)
        return Accepted(Acceptance.LIMITED, limit=creation.outcome)
    logs.bind(request_id=record.id)
    if creation.outcome == "duplicate":
        logs.info("Twilio sent this request again; answering as before", status=record.status)
        return Accepted(Acceptance.DUPLICATE, record.id, record.status, record.reference)
    job = generation_job(settings, record.id, request.prompt, request.recipient)
    try:
        message_id = services.publisher.publish(job, provider_key, deadline)
    except PublishError as exc:
        logs.error("publishing failed", error=exc.message, detail=exc.detail)
        try:
            services.store.fail_unpublished(record.id, f"{exc.message}: {exc.detail}")
        except StoreError as store_exc:
            # The sweep finishes rows left queued; say so loudly.
            logs.error("could not mark the unpublished request failed", error=store_exc.detail)
        raise
    try:
        # Bookkeeping: skipped when the caller could not wait for a slow store to answer.
        if deadline is None or deadline.left() > settings.store_timeout_s:
            services.store.record_published(record.id, message_id)
    except StoreError as exc:
        # Only a STOP mid-flight needs it (to cancel the generation); the request goes on.
        logs.warning("could not record the QStash message id", error=exc.detail)
    logs.info("request queued", qstash_message_id=message_id, channel=request.channel.value)
    return Accepted(Acceptance.QUEUED, record.id, RequestStatus.QUEUED, record.reference)
