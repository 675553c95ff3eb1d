"""`composite`'s half of the pipeline: act on each QStash callback, possibly duplicated or
reordered, so that every request ends delivered exactly once or failed with the person told.

Exactly one MMS per request comes from the claim (see `claim_request` in the migrations) plus
`send_started_at`: a run that finds a send started but unrecorded asks Twilio before sending.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from . import logs
from .callbacks import QStashCallback
from .errors import AppError, MessagingError, ProviderError, StoreError
from .framing import FramedPicture, frame_image
from .generation import GeneratedImage, classify_provider_failure, read_generated_image
from .image_models import image_cost
from .messaging import OPTED_OUT
from .publishing import generation_job
from .records import FailureReason, RequestRecord
from .replies import failure_notice, failure_notices, picture_caption
from .services import Services
from .store import PictureStore


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
    settings = services.settings
    if callback.succeeded:
        try:
            image = read_generated_image(callback.body)
            # Framed before claiming: an unreadable picture must fail the request, not a run
            # that holds the claim, and the claim is held for less time.
            started = time.perf_counter()
            framed = frame_image(
                image.data,
                brand=settings.brand_name,
                quality=settings.jpeg_quality,
                frame_path=settings.frame_path,
                max_edge=settings.mms_max_edge,
                max_bytes=settings.mms_max_bytes,
                # Refused before decoding when it is not what we asked for: a picture must not
                # cost more work than the picture we paid for.
                expected_size=callback.requested_size,
            )
            frame_ms = _ms_since(started)
        except ProviderError as exc:
            reason, detail = unreadable_answer(callback, exc, settings.qstash_max_message_bytes)
            if reason is FailureReason.TOO_LARGE:
                logs.error("the provider's answer was cut at QStash's message limit", detail=detail)
            return finish_failed(request_id, reason, detail, owner, callback, services)
        return deliver_picture(request_id, image, framed, frame_ms, callback, owner, services)

    failure = classify_provider_failure(callback.status, callback.body)
    if failure.reason is FailureReason.MODEL_UNAVAILABLE:
        return model_unavailable(request_id, failure.detail, owner, callback, services)
    if callback.is_final or not failure.retryable:
        if not callback.is_final and callback.source_message_id:
            # Retrying a refused or invalid request only costs money: stop QStash first, so
            # a notice that fails (and is retried) cannot let a later attempt be delivered.
            services.publisher.cancel(callback.source_message_id)
        return finish_failed(request_id, failure.reason, failure.detail, owner, callback, services)

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


def unreadable_answer(
    callback: QStashCallback, error: ProviderError, limit_bytes: int
) -> tuple[FailureReason, str]:
    """Why a 2xx answer held no usable picture: cut by QStash's plan limit, or just bad."""
    if callback.looks_truncated(limit_bytes):
        return FailureReason.TOO_LARGE, (
            f"QStash cut the provider's answer to {len(callback.body)} bytes: it is over your"
            f" plan's Max Message Size (QSTASH_MAX_MESSAGE_BYTES={limit_bytes}); ask for a"
            " smaller IMAGE_SIZE or IMAGE_COMPRESSION, or use a plan with larger messages"
        )
    return FailureReason.BAD_RESPONSE, error.detail or error.message


def model_unavailable(
    request_id: str, detail: str, owner: str, callback: QStashCallback, services: Services
) -> CallbackOutcome:
    """The provider says the model is gone (retired or never there). Ask once more with
    IMAGE_MODEL_FALLBACK if it is set and not the model that just failed; else fail, telling
    the person, and say loudly what the operator must change. A publish failure raises, so
    QStash retries this callback."""
    settings = services.settings
    record = services.store.get(request_id)
    if record is None:
        return CallbackOutcome.UNKNOWN_REQUEST
    if record.status.finished:
        return CallbackOutcome.ALREADY_DONE
    failed_model = callback.requested_model or record.model
    fallback = settings.image.fallback_model
    if callback.source_message_id:
        services.publisher.cancel(callback.source_message_id)
    if not fallback or failed_model == fallback:
        logs.error(
            "the image model is not available: set IMAGE_MODEL to a current model",
            model=failed_model,
            detail=detail,
        )
        reason = f"the provider no longer serves {failed_model}: {detail}"
        return finish_failed(
            request_id, FailureReason.MODEL_UNAVAILABLE, reason, owner, callback, services
        )
    if record.model == failed_model:
        # Switched before publishing, so the fallback's own callbacks always find it.
        services.store.switch_model(record.id, failed_model, fallback)
    elif record.model != fallback:
        return CallbackOutcome.SUPERSEDED
    logs.error(
        "the image model is not available; asked IMAGE_MODEL_FALLBACK instead:"
        " set IMAGE_MODEL to a current model",
        model=failed_model,
        fallback=fallback,
        detail=detail,
    )
    # Every callback about the failed model publishes (a run may have died between the switch
    # and the publish); the fallback's deduplication id keeps that to one generation.
    job = generation_job(
        settings,
        record.id,
        record.prompt,
        record.recipient,
        model=fallback,
        attempt_label="fallback",
    )
    services.publisher.publish(job, settings.secret("OPENAI_API_KEY"))
    return CallbackOutcome.FELL_BACK


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
        return _send_failure(record, token, reason, detail, callback.source_message_id, services)

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
    if record.send_started_at and (sid := _sent_picture(record, services)):
        logs.info("an earlier run had already sent the picture", message_sid=sid)
        _record_delivered(record, token, sid, {}, services)
        return CallbackOutcome.DELIVERED

    if _opted_out_since(record, token, services):
        return CallbackOutcome.FAILED
    settings = services.settings
    timings = {"frame_ms": frame_ms}
    if record.send_started_at and record.image_path:
        # Both stored before the earlier run asked Twilio to send.
        media_url = services.pictures.public_url(record.image_path)
    else:
        path = PictureStore.path_for(record)
        # The row points at the picture before it is stored: whatever fails after, retention
        # finds it (and a retry overwrites the same object).
        if not services.store.update_claimed(record.id, token, {"image_path": path}):
            logs.warning("lost the claim before storing; leaving it to its new holder")
            return CallbackOutcome.DUPLICATE
        started = time.perf_counter()
        # The original first: the next features edit it, and the MMS must not go out
        # pointing at a picture whose original was never kept.
        services.pictures.upload(PictureStore.original_path_for(path), image.data)
        media_url = services.pictures.upload(path, framed.jpeg)
        timings["upload_ms"] = _ms_since(started)
        picture_cost = image_cost(
            image.input_tokens, image.output_image_tokens, settings.image.prices
        )
        extra = {
            "generated_at": datetime.now(UTC).isoformat(),
            "image_bytes": len(framed.jpeg),
            "original_bytes": len(image.data),
            "input_tokens": image.input_tokens,
            "output_image_tokens": image.output_image_tokens,
            "cost_usd": round(picture_cost + settings.mms_cost_usd, 4),
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
            status_callback=status_callback_url(services, record.id),
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
    source_message_id: str | None,
    services: Services,
) -> CallbackOutcome:
    """Send the failure notice once and mark the request failed."""
    sid: str | None = None
    if record.send_started_at:
        sid = _sent_notice(record, services)
    if sid is None and _opted_out_since(record, token, services):
        return CallbackOutcome.FAILED
    if sid is None:
        extra = {"qstash_message_id": source_message_id} if source_message_id else {}
        if not services.store.mark_sending(record.id, token, image_path=None, extra=extra):
            return CallbackOutcome.DUPLICATE
        try:
            sid = services.messenger.send(
                to=record.recipient,
                from_=record.sender,
                body=failure_notice(reason, record.prompt, record.reference),
                status_callback=status_callback_url(services, record.id),
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


def status_callback_url(services: Services, request_id: str) -> str:
    """Where Twilio reports how far a request's message got (see composite/main.py)."""
    return f"{services.settings.composite_url}?message_status={request_id}"


SWEEP_OWNER = "sweep"


def finish_stuck(request_id: str, services: Services) -> CallbackOutcome:
    """The sweep's ending for a request stuck past its deadline: delivered if Twilio already
    has its picture (a run died after sending), otherwise failed as expired and told."""

    def work(record: RequestRecord, token: str) -> CallbackOutcome:
        if (
            record.send_started_at
            and record.image_path
            and (sid := _sent_picture(record, services))
        ):
            _record_delivered(record, token, sid, {}, services)
            return CallbackOutcome.DELIVERED
        detail = "stuck past its deadline; finished by the sweep"
        return _send_failure(record, token, FailureReason.EXPIRED, detail, None, services)

    return _with_claim(request_id, SWEEP_OWNER, services, work)


def _opted_out_since(record: RequestRecord, token: str, services: Services) -> bool:
    """If the person replied STOP after asking, end the request without sending anything:
    Twilio would refuse SMS to them (after the picture was paid for), and nothing stops a
    WhatsApp message."""
    if not services.store.is_opted_out(record.recipient, record.sender):
        return False
    services.store.mark_failed(
        record.id,
        token,
        FailureReason.OPTED_OUT,
        "the person opted out (STOP) before delivery",
        notified=False,
        message_sid=None,
    )
    logs.info("not sent: the person opted out while it was being made")
    return True


def _sent_picture(record: RequestRecord, services: Services) -> str | None:
    """The SID of this request's picture at Twilio, if an earlier run sent it."""
    caption = picture_caption(record.prompt, record.reference)
    return services.messenger.find_sent(
        to=record.recipient, from_=record.sender, bodies={caption}, created_at=record.created_at
    )


def _sent_notice(record: RequestRecord, services: Services) -> str | None:
    """The SID of this request's failure notice at Twilio, if an earlier run sent one."""
    notices = failure_notices(record.prompt, record.reference)
    return services.messenger.find_sent(
        to=record.recipient, from_=record.sender, bodies=notices, created_at=record.created_at
    )


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
