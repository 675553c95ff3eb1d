"""`composite`'s half of the pipeline: act on each QStash callback, possibly duplicated or
reordered, so that every request ends delivered exactly once or failed with the person told.

The decisions are delivery_decisions.py's; this module gathers the facts they need, and carries
them out under the request's claim (claims.py). Exactly one MMS per request comes from the claim
(see `claim_request` in the migrations) plus `send_started_at`: a run that finds a send started
but unrecorded asks Twilio before sending.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import assert_never

from . import logs
from .callbacks import QStashCallback
from .claims import HeldClaim, take_claim
from .delivery_decisions import (
    CallbackOutcome,
    Deliver,
    FailAndTell,
    FallBack,
    Ignore,
    ModelGone,
    NoticeStep,
    PictureStep,
    RecordAttempt,
    StuckStep,
    decide_callback,
    decide_model_gone,
    may_have_sent,
    notice_step,
    picture_step,
    refusal_of,
    stuck_step,
    unclaimed_outcome,
    unreadable_answer,
)
from .endpoints import message_status_url
from .errors import MessagingError, ProviderError
from .framing import FramedPicture, frame_image
from .gallery_access import gallery_link_for
from .generation import GeneratedImage, read_generated_image
from .image_models import image_cost
from .publishing import generation_job
from .records import FailureReason, OptOutSource, RequestRecord
from .replies import failure_notice, failure_notices, picture_by_link, picture_caption
from .services import Services
from .sources import source_url_for
from .store import PictureStore

SWEEP_OWNER = "sweep"


def handle_callback(
    request_id: str, callback: QStashCallback, owner: str, services: Services
) -> CallbackOutcome:
    """Act on one QStash callback for `request_id`; `owner` is the callback's message id.

    Raises `UpstreamError` when a store or Twilio failure means QStash should retry.
    """
    match decide_callback(callback):
        case Deliver():
            return _deliver(request_id, callback, owner, services)
        case ModelGone(detail=detail):
            return _model_gone(request_id, detail, owner, callback, services)
        case FailAndTell() as failure:
            return _fail(request_id, failure, owner, callback, services)
        case RecordAttempt(detail=detail):
            attempts = services.store.record_attempt(request_id, callback.source_message_id, detail)
            logs.info(
                "generation attempt failed; QStash will retry",
                attempt=callback.retried + 1,
                max_attempts=callback.max_retries + 1,
                detail=detail,
            )
            if attempts is None:
                return CallbackOutcome.ALREADY_DONE
            return CallbackOutcome.ATTEMPT_RECORDED
        case unexpected:
            assert_never(unexpected)


def _deliver(
    request_id: str, callback: QStashCallback, owner: str, services: Services
) -> CallbackOutcome:
    settings = services.settings
    try:
        image = read_generated_image(callback.body)
        # Framed before claiming: an unreadable picture must fail the request, not a run that
        # holds the claim, and the claim is held for less time.
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
        failure = unreadable_answer(callback, exc, settings.qstash_max_message_bytes)
        if failure.reason is FailureReason.TOO_LARGE:
            logs.error(
                "the provider's answer was cut at QStash's message limit", detail=failure.detail
            )
        return _fail(request_id, failure, owner, callback, services)
    held = _claim(request_id, owner, services)
    if not isinstance(held, HeldClaim):
        return held
    with held:
        return _send_picture(held, image, framed, frame_ms, callback, services)


def _fail(
    request_id: str,
    failure: FailAndTell,
    owner: str,
    callback: QStashCallback,
    services: Services,
) -> CallbackOutcome:
    """End the request as failed and tell the person, once."""
    if failure.cancel:
        services.publisher.cancel(failure.cancel)
    held = _claim(request_id, owner, services)
    if not isinstance(held, HeldClaim):
        return held
    with held:
        return _send_failure(
            held, failure.reason, failure.detail, callback.source_message_id, services
        )


def _model_gone(
    request_id: str, detail: str, owner: str, callback: QStashCallback, services: Services
) -> CallbackOutcome:
    """The provider says the model is gone (retired or never there): fall back, or fail and
    say loudly what the operator must change. A publish failure raises, so QStash retries."""
    settings = services.settings
    record = services.store.get(request_id)
    decision = decide_model_gone(record, callback, settings.image.fallback_model, detail)
    if decision.cancel:
        services.publisher.cancel(decision.cancel)
    match decision:
        case Ignore(outcome=outcome):
            return outcome
        case FailAndTell(reason=reason, detail=reason_detail):
            logs.error(
                "the image model is not available: set IMAGE_MODEL to a current model",
                model=callback.requested_model or (record.model if record else None),
                detail=detail,
            )
            # Cancelled above; the failure need not cancel again.
            failure = FailAndTell(reason, reason_detail)
            return _fail(request_id, failure, owner, callback, services)
        case FallBack():
            assert record is not None  # decide_model_gone falls back only for a known row
    if decision.switch_from:
        services.store.switch_model(record.id, decision.switch_from, decision.model)
    logs.error(
        "the image model is not available; asked IMAGE_MODEL_FALLBACK instead:"
        " set IMAGE_MODEL to a current model",
        model=decision.failed_model,
        fallback=decision.model,
        detail=detail,
    )
    job = generation_job(
        settings,
        record.id,
        record.prompt,
        record.recipient,
        source_url=source_url_for(record, services),
        model=decision.model,
        attempt_label="fallback",
    )
    services.publisher.publish(job, settings.secret("OPENAI_API_KEY"))
    return CallbackOutcome.FELL_BACK


def resend_picture(request_id: str, image_path: str, services: Services) -> CallbackOutcome:
    """UNDO: send a picture we already have (`image_path`, framed) for a new request, once.
    Nothing is made, so nothing is published: this runs in `generate`, under the same claim
    as any delivery, and a run that dies after the send is finished by the sweep."""
    held = _claim(request_id, f"resend-{request_id}", services)
    if not isinstance(held, HeldClaim):
        return held
    with held:
        record = held.record
        if _opted_out(record, services):
            return _end_opted_out(held)
        if not held.mark_sending(image_path=image_path, extra={}):
            return CallbackOutcome.DUPLICATE
        try:
            sent = services.messenger.send(
                to=record.recipient,
                from_=record.sender,
                body=picture_caption(record.prompt, record.reference, record.language),
                media_url=services.pictures.public_url(image_path),
                status_callback=message_status_url(services.settings.composite_url, record.id),
            )
        except MessagingError as exc:
            return _picture_refused(held, exc, services)
        _record_delivered(held, sent.sid, {})
        return CallbackOutcome.DELIVERED


def offer_gallery_link(request_id: str, message_sid: str, services: Services) -> bool:
    """The picture's MMS (`message_sid`) never reached the phone: text the person the link to
    their gallery instead, once, so they are not left with nothing. Best effort: a send that
    fails is logged, as the picture itself was delivered to Twilio."""
    if not services.settings.gallery_url:
        return False
    record = services.store.mark_link_sent(request_id, message_sid)
    if record is None:
        return False  # not the picture's MMS, already offered, or deleted
    link = gallery_link_for(record.recipient, record.sender, services)
    if link is None:
        return False
    try:
        services.messenger.send(
            to=record.recipient,
            from_=record.sender,
            body=picture_by_link(record.prompt, link, record.language),
        )
    except MessagingError as exc:
        logs.error("could not text the gallery link", code=exc.code, detail=exc.detail)
        return False
    logs.info("the MMS did not reach the phone; texted the gallery link instead")
    return True


def finish_stuck(request_id: str, services: Services) -> CallbackOutcome:
    """The sweep's ending for a request stuck past its deadline (see `stuck_step`)."""
    held = _claim(request_id, SWEEP_OWNER, services)
    if not isinstance(held, HeldClaim):
        return held
    with held:
        record = held.record
        if stuck_step(record) is StuckStep.LOOK_FOR_PICTURE and (
            sid := _sent_picture(record, services)
        ):
            _record_delivered(held, sid, {})
            return CallbackOutcome.DELIVERED
        detail = "stuck past its deadline; finished by the sweep"
        return _send_failure(held, FailureReason.EXPIRED, detail, None, services)


def _claim(request_id: str, owner: str, services: Services) -> HeldClaim | CallbackOutcome:
    held = take_claim(services.store, request_id, owner, services.settings.claim_lease_s)
    if isinstance(held, HeldClaim):
        return held
    result = unclaimed_outcome(held)
    log = logs.warning if result is CallbackOutcome.UNKNOWN_REQUEST else logs.info
    log(f"callback not acted on: {result.value}")
    return result


def _send_picture(
    held: HeldClaim,
    image: GeneratedImage,
    framed: FramedPicture,
    frame_ms: int,
    callback: QStashCallback,
    services: Services,
) -> CallbackOutcome:
    record = held.record
    sent_sid = _sent_picture(record, services) if may_have_sent(record) else None
    opted_out = sent_sid is None and _opted_out(record, services)
    step = picture_step(record, sent_sid, opted_out)
    if step is PictureStep.ALREADY_SENT:
        assert sent_sid is not None
        logs.info("an earlier run had already sent the picture", message_sid=sent_sid)
        _record_delivered(held, sent_sid, {})
        return CallbackOutcome.DELIVERED
    if step is PictureStep.OPTED_OUT:
        return _end_opted_out(held)

    settings = services.settings
    timings = {"frame_ms": frame_ms}
    if step is PictureStep.SEND_STORED:
        assert record.image_path is not None
        media_url = services.pictures.public_url(record.image_path)
    else:
        path = PictureStore.path_for(record)
        # The row points at the picture before it is stored: whatever fails after, retention
        # finds it (and a retry overwrites the same object).
        if not held.point_at(path):
            logs.warning("lost the claim before storing; leaving it to its new holder")
            return CallbackOutcome.DUPLICATE
        started = time.perf_counter()
        # The original first: the next features edit it, and the MMS must not go out
        # pointing at a picture whose original was never kept.
        services.pictures.upload(PictureStore.original_path_for(path), image.data)
        media_url = services.pictures.upload(path, framed.jpeg)
        timings["upload_ms"] = _ms_since(started)
        picture_cost = image_cost(
            image.input_tokens,
            image.output_image_tokens,
            settings.image.prices,
            image.input_image_tokens,
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
        if not held.mark_sending(image_path=path, extra=extra):
            logs.warning("lost the claim before sending; leaving it to its new holder")
            return CallbackOutcome.DUPLICATE
    started = time.perf_counter()
    try:
        sent = services.messenger.send(
            to=record.recipient,
            from_=record.sender,
            body=picture_caption(record.prompt, record.reference, record.language),
            media_url=media_url,
            status_callback=message_status_url(settings.composite_url, record.id),
        )
    except MessagingError as exc:
        return _picture_refused(held, exc, services)
    timings["send_ms"] = _ms_since(started)
    _record_delivered(held, sent.sid, timings)
    return CallbackOutcome.DELIVERED


def _send_failure(
    held: HeldClaim,
    reason: FailureReason,
    detail: str,
    source_message_id: str | None,
    services: Services,
) -> CallbackOutcome:
    """Send the failure notice once and mark the request failed."""
    record = held.record
    sent_sid = _sent_notice(record, services) if may_have_sent(record) else None
    opted_out = sent_sid is None and _opted_out(record, services)
    step = notice_step(sent_sid, opted_out)
    if step is NoticeStep.OPTED_OUT:
        return _end_opted_out(held)
    sid = sent_sid
    if step is NoticeStep.SEND:
        extra = {"qstash_message_id": source_message_id} if source_message_id else {}
        if not held.mark_sending(image_path=None, extra=extra):
            return CallbackOutcome.DUPLICATE
        try:
            sid = services.messenger.send(
                to=record.recipient,
                from_=record.sender,
                body=failure_notice(reason, record.prompt, record.reference, record.language),
                status_callback=message_status_url(services.settings.composite_url, record.id),
            ).sid
        except MessagingError as exc:
            refusal = refusal_of(exc)
            if refusal is None:
                raise
            detail = f"{detail}; the notice could not be sent ({exc.detail})"
            if refusal.opted_out:
                _remember_opt_out(record, services)
    held.mark_failed(reason, detail, notified=sid is not None, message_sid=sid)
    logs.warning("request failed", reason=reason.value, detail=detail, notified=sid is not None)
    return CallbackOutcome.FAILED


def _picture_refused(held: HeldClaim, error: MessagingError, services: Services) -> CallbackOutcome:
    """Twilio refused the picture: for good ends the request unannounced (a 21610 also
    remembers the opt-out); otherwise re-raise, so the claim is given back and QStash retries."""
    refusal = refusal_of(error)
    if refusal is None:
        raise error
    logs.warning("Twilio refused the picture for good", code=error.code)
    if refusal.opted_out:
        _remember_opt_out(held.record, services)
    held.mark_failed(refusal.reason, f"{error.detail}", notified=False, message_sid=None)
    return CallbackOutcome.FAILED


def _record_delivered(held: HeldClaim, sid: str, timings: dict[str, int]) -> None:
    if held.mark_delivered(sid, timings):
        logs.info("picture delivered", message_sid=sid, **timings)
    else:
        # The MMS went out but our claim had expired; the next holder will find it at Twilio.
        logs.error("picture sent but the request could not be marked delivered", message_sid=sid)


def _opted_out(record: RequestRecord, services: Services) -> bool:
    """Whether the person replied STOP after asking: then nothing is sent. Twilio would
    refuse SMS to them (after the picture was paid for), and nothing stops a WhatsApp message."""
    return services.store.is_opted_out(record.recipient, record.sender)


def _end_opted_out(held: HeldClaim) -> CallbackOutcome:
    held.mark_failed(
        FailureReason.OPTED_OUT,
        "the person opted out (STOP) before delivery",
        notified=False,
        message_sid=None,
    )
    logs.info("not sent: the person opted out while it was being made")
    return CallbackOutcome.FAILED


def _remember_opt_out(record: RequestRecord, services: Services) -> None:
    """Twilio said the person opted out (21610): nothing more goes to them until START."""
    services.store.set_opt_out(
        record.recipient, record.sender, opted_out=True, source=OptOutSource.TWILIO_21610
    )


def _sent_picture(record: RequestRecord, services: Services) -> str | None:
    """The SID of this request's picture at Twilio, if an earlier run sent it."""
    caption = picture_caption(record.prompt, record.reference, record.language)
    return services.messenger.find_sent(
        to=record.recipient, from_=record.sender, bodies={caption}, created_at=record.created_at
    )


def _sent_notice(record: RequestRecord, services: Services) -> str | None:
    """The SID of this request's failure notice at Twilio, if an earlier run sent one."""
    notices = failure_notices(record.prompt, record.reference, record.language)
    return services.messenger.find_sent(
        to=record.recipient, from_=record.sender, bodies=notices, created_at=record.created_at
    )


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
