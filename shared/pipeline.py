"""What happens to a picture request, from acceptance to the MMS (or the apology).

`accept_picture_request` is `generate`'s work: record the request, then publish the job, so a
callback can never arrive for a request we have not recorded. `handle_callback` is
`composite`'s: one QStash callback per provider attempt, possibly duplicated or reordered.
Exactly one MMS per request comes from the claim (see `claim_request` in the migration) plus
`send_started_at`: a run that finds a send started but unrecorded asks Twilio before sending.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from . import logs
from .callbacks import QStashCallback
from .errors import AppError, MessagingError, ProviderError, PublishError, StoreError
from .framing import FramedPicture, frame_image
from .generation import (
    GeneratedImage,
    classify_provider_failure,
    generation_body,
    read_generated_image,
    safety_identifier,
)
from .intake import PictureRequest
from .messaging import OPTED_OUT
from .publishing import GenerationJob, callback_url
from .records import FailureReason, RequestRecord, RequestStatus
from .replies import failure_notice, picture_caption
from .services import Services
from .store import NewRequest, PictureStore


class Acceptance(StrEnum):
    QUEUED = "queued"  # recorded and handed to QStash
    DUPLICATE = "duplicate"  # Twilio sent the same request again; nothing new was done
    OPTED_OUT = "opted_out"  # the recipient replied STOP; nothing was recorded


@dataclass(frozen=True)
class Accepted:
    outcome: Acceptance
    request_id: str | None = None
    status: RequestStatus | None = None  # for a duplicate: where the first one is now
    reference: str | None = None


def accept_picture_request(request: PictureRequest, services: Services) -> Accepted:
    """Record the request, then hand the generation to QStash.

    Raises `StoreError` if nothing could be recorded (nothing was published), or
    `PublishError` after marking the recorded request failed.
    """
    settings = services.settings
    # Resolve secrets first: a missing one must fail before a row exists, not leave it queued.
    salt = settings.secret("SAFETY_IDENTIFIER_SALT").reveal()
    provider_key = settings.secret("OPENAI_API_KEY")
    provider_key.reveal()

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
        )
    )
    record = creation.record
    if record is None:
        logs.info("recipient has opted out; nothing recorded", channel=request.channel.value)
        return Accepted(Acceptance.OPTED_OUT)
    logs.bind(request_id=record.id)
    if creation.outcome == "duplicate":
        logs.info("Twilio sent this request again; answering as before", status=record.status)
        return Accepted(Acceptance.DUPLICATE, record.id, record.status, record.reference)
    job = GenerationJob(
        request_id=record.id,
        destination=f"{settings.openai_base_url}/images/generations",
        body=generation_body(
            settings.image, request.prompt, safety_identifier(salt, request.recipient)
        ),
        callback_url=callback_url(settings.composite_url, record.id),
        retries=settings.generation_retries,
        timeout_s=settings.generation_timeout_s,
        callback_retries=settings.callback_retries,
    )
    try:
        message_id = services.publisher.publish(job, provider_key)
    except PublishError as exc:
        logs.error("publishing failed", error=exc.message, detail=exc.detail)
        try:
            services.store.fail_unpublished(record.id, f"{exc.message}: {exc.detail}")
        except StoreError as store_exc:
            # The sweep finishes rows left queued; say so loudly.
            logs.error("could not mark the unpublished request failed", error=store_exc.detail)
        raise
    logs.info("request queued", qstash_message_id=message_id, channel=request.channel.value)
    return Accepted(Acceptance.QUEUED, record.id, RequestStatus.QUEUED, record.reference)


class CallbackOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    ATTEMPT_RECORDED = "attempt_recorded"
    DUPLICATE = "duplicate"  # another callback holds the request
    ALREADY_DONE = "already_done"
    UNKNOWN_REQUEST = "unknown_request"
    BUSY = "busy"  # our own earlier delivery may still be running: ask to be retried

    @property
    def retry_later(self) -> bool:
        return self is CallbackOutcome.BUSY


_UNCLAIMED = {
    "missing": CallbackOutcome.UNKNOWN_REQUEST,
    "done": CallbackOutcome.ALREADY_DONE,
    "taken": CallbackOutcome.DUPLICATE,
    "busy": CallbackOutcome.BUSY,
}


def handle_callback(
    request_id: str, callback: QStashCallback, owner: str, services: Services
) -> CallbackOutcome:
    """Act on one QStash callback for `request_id`; `owner` is the callback's message id.

    Raises `UpstreamError` when a store or Twilio failure means QStash should retry.
    """
    if callback.succeeded:
        try:
            image = read_generated_image(callback.body)
            # Framed before claiming: an unreadable picture must fail the request, not a run
            # that holds the claim, and the claim is held for less time.
            started = time.perf_counter()
            framed = frame_image(
                image.data,
                brand=services.settings.brand_name,
                quality=services.settings.jpeg_quality,
                frame_path=services.settings.frame_path,
            )
            frame_ms = _ms_since(started)
        except ProviderError as exc:
            detail = exc.detail or exc.message
            return finish_failed(
                request_id, FailureReason.BAD_RESPONSE, detail, owner, callback, services
            )
        return deliver_picture(request_id, image, framed, frame_ms, callback, owner, services)

    failure = classify_provider_failure(callback.status, callback.body)
    if callback.is_final or not failure.retryable:
        outcome = finish_failed(
            request_id, failure.reason, failure.detail, owner, callback, services
        )
        if not callback.is_final and callback.source_message_id:
            # Retrying a refused or invalid request only costs money; stop QStash.
            services.publisher.cancel(callback.source_message_id)
        return outcome

    attempts = services.store.record_attempt(request_id, callback.source_message_id, failure.detail)
    logs.info(
        "generation attempt failed; QStash will retry",
        attempt=callback.retried + 1,
        max_attempts=callback.max_retries + 1,
        detail=failure.detail,
    )
    return (
        CallbackOutcome.ATTEMPT_RECORDED if attempts is not None else CallbackOutcome.ALREADY_DONE
    )


def deliver_picture(
    request_id: str,
    image: GeneratedImage,
    framed: FramedPicture,
    frame_ms: int,
    callback: QStashCallback,
    owner: str,
    services: Services,
) -> CallbackOutcome:
    """Store and send the framed picture, once."""

    def send(record: RequestRecord, token: str) -> CallbackOutcome:
        return _send_picture(record, token, image, framed, frame_ms, callback, services)

    return _with_claim(request_id, owner, services, send)


def finish_failed(
    request_id: str,
    reason: FailureReason,
    detail: str,
    owner: str,
    callback: QStashCallback,
    services: Services,
) -> CallbackOutcome:
    """End the request as failed and tell the person, once."""

    def send(record: RequestRecord, token: str) -> CallbackOutcome:
        return _send_failure(record, token, reason, detail, callback, services)

    return _with_claim(request_id, owner, services, send)


def _with_claim(
    request_id: str,
    owner: str,
    services: Services,
    work: Callable[[RequestRecord, str], CallbackOutcome],
) -> CallbackOutcome:
    """Claim the request and run `work` under the claim. If `work` fails, give the claim
    back and re-raise, so QStash's retry of this callback can pick the request up at once."""
    claim = services.store.claim(request_id, owner, services.settings.claim_lease_s)
    if claim.outcome != "claimed" or claim.record is None or claim.token is None:
        result = _UNCLAIMED.get(claim.outcome, CallbackOutcome.UNKNOWN_REQUEST)
        log = logs.warning if result is CallbackOutcome.UNKNOWN_REQUEST else logs.info
        log(f"callback not acted on: {result.value}")
        return result
    try:
        return work(claim.record, claim.token)
    except Exception as exc:
        reason = f"{exc.message}: {exc.detail}" if isinstance(exc, AppError) else repr(exc)
        try:
            services.store.release(request_id, claim.token, reason[:500])
        except StoreError:
            logs.warning("could not release the claim; it expires by itself")
        raise


def _send_picture(
    record: RequestRecord,
    token: str,
    image: GeneratedImage,
    framed: FramedPicture,
    frame_ms: int,
    callback: QStashCallback,
    services: Services,
) -> CallbackOutcome:
    marker = f"Ref {record.reference}"
    if record.send_started_at and (
        sid := services.messenger.find_sent(to=record.recipient, from_=record.sender, marker=marker)
    ):
        logs.info("an earlier run had already sent the picture", message_sid=sid)
        _record_delivered(record, token, sid, {}, services)
        return CallbackOutcome.DELIVERED

    timings = {"frame_ms": frame_ms}
    if record.image_path:
        media_url = services.pictures.public_url(record.image_path)
    else:
        path = PictureStore.path_for(record)
        started = time.perf_counter()
        media_url = services.pictures.upload(path, framed.jpeg)
        timings["upload_ms"] = _ms_since(started)
        extra = {
            "generated_at": datetime.now(UTC).isoformat(),
            "image_bytes": len(framed.jpeg),
            "input_tokens": image.input_tokens,
            "output_image_tokens": image.output_image_tokens,
            "qstash_message_id": callback.source_message_id,
            "timings": timings,
        }
        if not services.store.mark_sending(record.id, token, image_path=path, extra=extra):
            logs.warning("lost the claim before sending; leaving it to its new holder")
            return CallbackOutcome.DUPLICATE
    started = time.perf_counter()
    try:
        sent = services.messenger.send(
            to=record.recipient,
            from_=record.sender,
            body=picture_caption(record.prompt, record.reference),
            media_url=media_url,
        )
    except MessagingError as exc:
        if exc.retryable:
            raise
        reason = FailureReason.OPTED_OUT if exc.code == OPTED_OUT else FailureReason.UNDELIVERABLE
        logs.warning("Twilio refused the picture for good", code=exc.code)
        if reason is FailureReason.OPTED_OUT:
            services.store.set_opt_out(
                record.recipient, record.sender, opted_out=True, source="twilio_21610"
            )
        services.store.mark_failed(
            record.id, token, reason, f"{exc.detail}", notified=False, message_sid=None
        )
        return CallbackOutcome.FAILED
    timings["send_ms"] = _ms_since(started)
    _record_delivered(record, token, sent.sid, timings, services)
    return CallbackOutcome.DELIVERED


def _record_delivered(
    record: RequestRecord, token: str, sid: str, timings: dict[str, int], services: Services
) -> None:
    if services.store.mark_delivered(record.id, token, sid, timings):
        logs.info("picture delivered", message_sid=sid, **timings)
    else:
        # The MMS went out but our claim had expired; the next holder will find it at Twilio.
        logs.error("picture sent but the request could not be marked delivered", message_sid=sid)


def _send_failure(
    record: RequestRecord,
    token: str,
    reason: FailureReason,
    detail: str,
    callback: QStashCallback,
    services: Services,
) -> CallbackOutcome:
    marker = f"Ref {record.reference}"
    sid: str | None = None
    if record.send_started_at:
        sid = services.messenger.find_sent(to=record.recipient, from_=record.sender, marker=marker)
    if sid is None:
        extra = {"qstash_message_id": callback.source_message_id}
        if not services.store.mark_sending(record.id, token, image_path=None, extra=extra):
            return CallbackOutcome.DUPLICATE
        try:
            sid = services.messenger.send(
                to=record.recipient,
                from_=record.sender,
                body=failure_notice(reason, record.prompt, record.reference),
            ).sid
        except MessagingError as exc:
            if exc.retryable:
                raise
            detail = f"{detail}; the notice could not be sent ({exc.detail})"
            if exc.code == OPTED_OUT:
                services.store.set_opt_out(
                    record.recipient, record.sender, opted_out=True, source="twilio_21610"
                )
    services.store.mark_failed(
        record.id, token, reason, detail, notified=sid is not None, message_sid=sid
    )
    logs.warning("request failed", reason=reason.value, detail=detail, notified=sid is not None)
    return CallbackOutcome.FAILED


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
