"""`generate`'s half of the pipeline: record the request, then hand the generation to QStash.

Recording first means a callback can never arrive for a request we have not recorded (the
race the original project had). The decisions are acceptance_decisions.py's; `composite`'s
half is in delivery.py.
"""

from __future__ import annotations

from . import logs
from .acceptance_decisions import (
    Accepted,
    creation_answer,
    queued,
    refused_by,
    screen,
    worth_recording_publish,
)
from .deadline import Deadline
from .errors import PublishError, StoreError
from .intake import PictureRequest
from .moderation import check_prompt
from .publishing import generation_job
from .services import Services
from .sources import source_url_for
from .store import NewRequest


def accept_picture_request(
    request: PictureRequest, services: Services, deadline: Deadline | None = None
) -> Accepted:
    """Record the request, then hand the generation to QStash.

    Raises `StoreError` if nothing could be recorded (nothing was published), or
    `PublishError` after marking the recorded request failed.
    """
    settings = services.settings
    if (refusal := screen(request, settings)) is not None:
        if refusal.problem is not None:
            logs.info("recipient refused", problem=refusal.problem.value, region=refusal.region)
        return refusal
    # Resolve secrets first: a missing one must fail before a row exists, not leave it queued.
    settings.secret("SAFETY_IDENTIFIER_SALT").reveal()
    provider_key = settings.secret("OPENAI_API_KEY")
    provider_key.reveal()
    settings.secret("QSTASH_TOKEN").reveal()  # cached; the publisher reads it again

    if settings.moderation and request.resend_path is None:
        verdict = check_prompt(
            request.prompt, settings.openai_base_url, provider_key, services.http, deadline
        )
        if (refusal := refused_by(verdict)) is not None:
            logs.info("prompt flagged by moderation", categories=list(verdict.categories))
            return refusal

    image = settings.image
    creation = services.store.create(
        NewRequest(
            recipient=request.recipient,
            sender=request.sender,
            prompt=request.prompt,
            channel=request.channel,
            model=image.model_for_edits if request.is_edit else image.model,
            size=image.size,
            quality=image.quality,
            source_ref=request.source_ref,
            estimated_cost_usd=(
                settings.estimated_edit_cost_usd if request.is_edit else settings.estimated_cost_usd
            ),
            limits=settings.limits.as_json(),
            caller_verdict=request.caller_verdict,
            kind=request.kind,
            parent_id=request.parent_id,
            source_path=request.source_path,
            language=request.language,
        )
    )
    record = creation.record
    if (answer := creation_answer(creation.outcome, record)) is not None:
        if record is None:
            logs.info(
                "request not taken", outcome=creation.outcome.value, channel=request.channel.value
            )
        else:
            logs.bind(request_id=record.id)
            logs.info("Twilio sent this request again; answering as before", status=record.status)
        return answer
    assert record is not None  # read_creation guarantees the row of a created request
    logs.bind(request_id=record.id)
    if request.resend_path is not None:
        # UNDO: the picture exists; nothing to make. Imported here: delivery loads Pillow,
        # which generate needs for nothing else.
        from .delivery import resend_picture

        outcome = resend_picture(record.id, request.resend_path, services)
        logs.info("picture sent again", outcome=outcome.value, channel=request.channel.value)
        return queued(record)
    try:
        source_url = source_url_for(record, services)
        job = generation_job(
            settings, record.id, request.prompt, request.recipient, source_url=source_url
        )
        message_id = services.publisher.publish(job, provider_key, deadline)
    except (PublishError, StoreError) as exc:
        logs.error("publishing failed", error=exc.message, detail=exc.detail)
        try:
            services.store.fail_unpublished(record.id, f"{exc.message}: {exc.detail}")
        except StoreError as store_exc:
            # The sweep finishes rows left queued; say so loudly.
            logs.error("could not mark the unpublished request failed", error=store_exc.detail)
        raise
    try:
        if worth_recording_publish(deadline.left() if deadline else None, settings.store_timeout_s):
            services.store.record_published(record.id, message_id)
    except StoreError as exc:
        # Only a STOP mid-flight needs it (to cancel the generation); the request goes on.
        logs.warning("could not record the QStash message id", error=exc.detail)
    logs.info("request queued", qstash_message_id=message_id, channel=request.channel.value)
    return queued(record)
