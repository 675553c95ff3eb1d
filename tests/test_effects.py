"""The effects layer (delivery.py, claims.py, sweep.py, accept.py) carrying out each decision,
against in-memory clients (tests/memory_services.py). The same paths run over real HTTP
against the stand-ins in the stack tests; these show the wiring of every decision in a second."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from shared import replies
from shared.accept import accept_picture_request
from shared.acceptance_decisions import Acceptance, Accepted
from shared.callbacks import QStashCallback
from shared.claims import HeldClaim, take_claim
from shared.deadline import Deadline
from shared.delivery import finish_stuck, handle_callback
from shared.delivery_decisions import CallbackOutcome
from shared.endpoints import message_status_url
from shared.errors import MessagingError, PublishError, StoreError
from shared.intake import PictureRequest
from shared.records import Channel, ClaimOutcome, CreationOutcome, FailureReason, RequestRecord
from shared.store import Claim, PictureStore
from shared.sweep import SweepReport, sweep
from tests.memory_services import MemoryServices, MemoryStore, Sent

FLARE = "gpt-image-2.6-flare"
FALLBACK = "gpt-image-2.6"


@pytest.fixture
def fakes() -> MemoryServices:
    return MemoryServices()


def picture_answer(size: tuple[int, int] = (1024, 1024)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (30, 90, 160)).save(buffer, "JPEG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    usage = {"input_tokens": 20, "output_tokens_details": {"image_tokens": 400}}
    return json.dumps({"data": [{"b64_json": encoded}], "usage": usage}).encode()


def error_answer(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": "no"}}).encode()


def callback(status: int | None, body: bytes = b"", **fields: object) -> QStashCallback:
    defaults: dict[str, object] = {"max_retries": 2, "source_message_id": "msg_gen"}
    defaults.update(fields)
    return QStashCallback(status=status, body=body, **defaults)  # type: ignore[arg-type]


def caption(record: RequestRecord) -> str:
    return replies.picture_caption(record.prompt, record.reference)


# --- delivering ------------------------------------------------------------------------------


def test_a_picture_is_stored_then_sent_once(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    services = fakes.services
    outcome = handle_callback(record.id, callback(200, picture_answer()), "msg_cb", services)
    assert outcome is CallbackOutcome.DELIVERED
    [sent] = fakes.messenger.sent
    path = PictureStore.path_for(record)
    assert sent.body == caption(record)
    assert sent.media_url == fakes.pictures.public_url(path)
    assert sent.status_callback == message_status_url(services.settings.composite_url, record.id)
    assert set(fakes.pictures.files) == {path, PictureStore.original_path_for(path)}
    row = fakes.store.row(record.id)
    assert (row["status"], row["message_sid"], row["claim_token"]) == ("delivered", sent.sid, None)
    assert row["input_tokens"] == 20 and row["output_image_tokens"] == 400
    again = handle_callback(record.id, callback(200, picture_answer()), "msg_cb2", services)
    assert again is CallbackOutcome.ALREADY_DONE
    assert len(fakes.messenger.sent) == 1


def test_a_callback_for_no_request_is_unknown(fakes: MemoryServices) -> None:
    outcome = handle_callback(
        "5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11", callback(200, picture_answer()), "m", fakes.services
    )
    assert outcome is CallbackOutcome.UNKNOWN_REQUEST


@pytest.mark.parametrize(
    ("owner", "outcome"), [("msg_cb", CallbackOutcome.BUSY), ("other", CallbackOutcome.DUPLICATE)]
)
def test_a_held_request_is_left_to_its_holder(
    fakes: MemoryServices, owner: str, outcome: CallbackOutcome
) -> None:
    record = fakes.store.add(claim_owner="msg_cb", claim_token="theirs")
    result = handle_callback(record.id, callback(200, picture_answer()), owner, fakes.services)
    assert result is outcome
    assert fakes.messenger.sent == []


def test_a_picture_twilio_already_has_is_recorded_not_sent_again(fakes: MemoryServices) -> None:
    record = fakes.store.add(status="sending", send_started_at=_ago(1), image_path="a/b.jpg")
    fakes.messenger.held.append(_held(record, caption(record)))
    outcome = handle_callback(record.id, callback(200, picture_answer()), "m", fakes.services)
    assert outcome is CallbackOutcome.DELIVERED
    assert fakes.messenger.sent == []
    assert fakes.store.row(record.id)["message_sid"] == fakes.messenger.held[0].sid


def test_a_picture_stored_by_a_run_that_died_is_sent_as_stored(fakes: MemoryServices) -> None:
    record = fakes.store.add(status="sending", send_started_at=_ago(1), image_path="a/b.jpg")
    outcome = handle_callback(record.id, callback(200, picture_answer()), "m", fakes.services)
    assert outcome is CallbackOutcome.DELIVERED
    assert fakes.pictures.files == {}  # nothing uploaded again
    assert fakes.messenger.sent[0].media_url == fakes.pictures.public_url("a/b.jpg")


def test_nothing_is_sent_to_a_person_who_opted_out_meanwhile(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    fakes.store.opt_outs.add((record.recipient, record.sender))
    outcome = handle_callback(record.id, callback(200, picture_answer()), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    assert fakes.messenger.sent == []
    assert fakes.store.row(record.id)["failure_reason"] == "opted_out"


@pytest.mark.parametrize(("code", "reason"), [(21610, "opted_out"), (21211, "undeliverable")])
def test_a_final_refusal_of_the_picture_fails_it_unannounced(
    fakes: MemoryServices, code: int, reason: str
) -> None:
    record = fakes.store.add()
    fakes.messenger.refusals.append(MessagingError("refused", retryable=False, code=code))
    outcome = handle_callback(record.id, callback(200, picture_answer()), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    row = fakes.store.row(record.id)
    assert (row["failure_reason"], row["notified"]) == (reason, False)
    opted_out = (record.recipient, record.sender) in fakes.store.opt_outs
    assert opted_out is (code == 21610)


def test_a_send_that_may_work_later_gives_the_claim_back(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    fakes.messenger.refusals.append(MessagingError("Twilio down", retryable=True, detail="500"))
    with pytest.raises(MessagingError):
        handle_callback(record.id, callback(200, picture_answer()), "m", fakes.services)
    row = fakes.store.row(record.id)
    assert row["claim_token"] is None and row["status"] == "sending"
    assert fakes.store.released == [(record.id, "Twilio down: 500")]


class StolenBeforeStoring(MemoryStore):
    def claim(self, request_id: str, owner: str, lease_s: int) -> Claim:
        claim = super().claim(request_id, owner, lease_s)
        self.take_claim_away(request_id)
        return claim


def test_a_run_that_lost_its_claim_stores_and_sends_nothing() -> None:
    fakes = MemoryServices(store=StolenBeforeStoring())
    record = fakes.store.add()
    outcome = handle_callback(record.id, callback(200, picture_answer()), "m", fakes.services)
    assert outcome is CallbackOutcome.DUPLICATE
    assert fakes.pictures.files == {} and fakes.messenger.sent == []


# --- failing --------------------------------------------------------------------------------


def test_a_retryable_attempt_is_counted_and_nothing_sent(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    outcome = handle_callback(record.id, callback(503, b""), "m", fakes.services)
    assert outcome is CallbackOutcome.ATTEMPT_RECORDED
    assert fakes.store.row(record.id)["attempts"] == 1
    assert fakes.messenger.sent == []


def test_an_attempt_for_a_finished_request_is_already_done(fakes: MemoryServices) -> None:
    record = fakes.store.add(status="delivered")
    outcome = handle_callback(record.id, callback(503, b""), "m", fakes.services)
    assert outcome is CallbackOutcome.ALREADY_DONE


def test_the_last_attempt_tells_the_person(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    outcome = handle_callback(record.id, callback(503, b"", retried=2), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    [notice] = fakes.messenger.sent
    assert notice.body == replies.failure_notice(
        fakes.store.get(record.id).failure_reason,  # type: ignore[union-attr, arg-type]
        record.prompt,
        record.reference,
    )
    assert fakes.store.row(record.id)["notified"] is True
    assert fakes.publisher.cancelled == []


def test_a_refusal_cancels_the_retries_and_tells_the_person(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    body = error_answer("moderation_blocked")
    outcome = handle_callback(record.id, callback(400, body), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    assert fakes.publisher.cancelled == ["msg_gen"]
    assert fakes.store.row(record.id)["failure_reason"] == "refused"


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"{}", "bad_response"), (b'{"data": "' + b"x" * 999_990 + b'"}', "too_large")],
)
def test_an_unreadable_answer_fails_the_request(
    fakes: MemoryServices, body: bytes, reason: str
) -> None:
    record = fakes.store.add()
    outcome = handle_callback(record.id, callback(200, body), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    assert fakes.store.row(record.id)["failure_reason"] == reason
    assert len(fakes.messenger.sent) == 1


def test_a_notice_twilio_already_has_is_not_sent_again(fakes: MemoryServices) -> None:
    record = fakes.store.add(status="sending", send_started_at=_ago(1))
    notice = replies.failure_notice(FailureReason.PROVIDER_BUSY, record.prompt, record.reference)
    fakes.messenger.held.append(_held(record, notice))
    outcome = handle_callback(record.id, callback(503, b"", retried=2), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    assert fakes.messenger.sent == []
    assert fakes.store.row(record.id)["message_sid"] == fakes.messenger.held[0].sid


def test_no_notice_goes_to_a_person_who_opted_out(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    fakes.store.opt_outs.add((record.recipient, record.sender))
    outcome = handle_callback(record.id, callback(503, b"", retried=2), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    assert fakes.messenger.sent == []
    assert fakes.store.row(record.id)["failure_reason"] == "opted_out"


def test_a_refused_notice_is_recorded_and_a_21610_remembered(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    fakes.messenger.refusals.append(MessagingError("no", retryable=False, code=21610, detail="x"))
    outcome = handle_callback(record.id, callback(503, b"", retried=2), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    row = fakes.store.row(record.id)
    assert row["notified"] is False and "the notice could not be sent (x)" in row["failure_detail"]
    assert (record.recipient, record.sender) in fakes.store.opt_outs


def test_a_notice_that_may_work_later_gives_the_claim_back(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    fakes.messenger.refusals.append(MessagingError("down", retryable=True))
    with pytest.raises(MessagingError):
        handle_callback(record.id, callback(503, b"", retried=2), "m", fakes.services)
    assert fakes.store.row(record.id)["claim_token"] is None


# --- the model is gone -----------------------------------------------------------------------


def gone(model: str) -> QStashCallback:
    source = json.dumps({"model": model}).encode()
    return callback(404, error_answer("model_not_found"), source_body=source)


def test_a_gone_model_falls_back_once(fakes: MemoryServices) -> None:
    fakes.environ = {"IMAGE_MODEL_FALLBACK": FALLBACK}
    record = fakes.store.add(model=FLARE)
    outcome = handle_callback(record.id, gone(FLARE), "m", fakes.services)
    assert outcome is CallbackOutcome.FELL_BACK
    assert fakes.store.row(record.id)["model"] == FALLBACK
    [job] = fakes.publisher.jobs
    assert job.body["model"] == FALLBACK and job.deduplication_id == f"{record.id}-fallback"
    assert fakes.publisher.cancelled == ["msg_gen"]
    # A second callback about the same model publishes again, without switching again.
    assert (
        handle_callback(record.id, gone(FLARE), "m2", fakes.services) is CallbackOutcome.FELL_BACK
    )
    assert len(fakes.store.switches) == 1 and len(fakes.publisher.jobs) == 2


def test_a_gone_model_without_a_fallback_fails_and_tells(fakes: MemoryServices) -> None:
    record = fakes.store.add(model=FLARE)
    outcome = handle_callback(record.id, gone(FLARE), "m", fakes.services)
    assert outcome is CallbackOutcome.FAILED
    assert fakes.store.row(record.id)["failure_reason"] == "model_unavailable"
    assert fakes.publisher.cancelled == ["msg_gen"]  # cancelled once, not again by the failure
    assert len(fakes.messenger.sent) == 1


def test_news_about_a_model_left_behind_changes_nothing(fakes: MemoryServices) -> None:
    fakes.environ = {"IMAGE_MODEL_FALLBACK": FALLBACK}
    record = fakes.store.add(model="gpt-image-2.5")
    assert (
        handle_callback(record.id, gone(FLARE), "m", fakes.services) is CallbackOutcome.SUPERSEDED
    )
    assert fakes.publisher.jobs == [] and fakes.messenger.sent == []


def test_a_gone_model_for_no_request_is_unknown(fakes: MemoryServices) -> None:
    outcome = handle_callback(
        "5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11", gone(FLARE), "m", fakes.services
    )
    assert outcome is CallbackOutcome.UNKNOWN_REQUEST
    assert fakes.publisher.cancelled == []


# --- the claim itself ------------------------------------------------------------------------


def test_a_claim_is_given_back_when_work_under_it_fails(fakes: MemoryServices) -> None:
    record = fakes.store.add()
    held = take_claim(fakes.store, record.id, "m", 60)
    assert isinstance(held, HeldClaim)
    with pytest.raises(RuntimeError), held:
        raise RuntimeError("boom")
    assert fakes.store.row(record.id)["claim_token"] is None
    assert fakes.store.released == [(record.id, "RuntimeError('boom')")]


def test_a_failed_release_leaves_the_claim_to_expire(fakes: MemoryServices) -> None:
    class Unreleasable(MemoryStore):
        def release(self, request_id: str, token: str, error: str | None) -> None:
            raise StoreError("down", retryable=True)

    store = Unreleasable()
    record = store.add()
    held = take_claim(store, record.id, "m", 60)
    assert isinstance(held, HeldClaim)
    with pytest.raises(ValueError), held:
        raise ValueError("boom")
    assert store.row(record.id)["claim_token"] == held.token


def test_no_claim_says_why(fakes: MemoryServices) -> None:
    record = fakes.store.add(status="failed")
    assert take_claim(fakes.store, record.id, "m", 60) is ClaimOutcome.DONE


# --- the sweep -------------------------------------------------------------------------------


def test_the_sweep_ends_stuck_requests_and_purges_old_ones(fakes: MemoryServices) -> None:
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    expired = fakes.store.add(created_at=old)
    sent = fakes.store.add(
        created_at=old, status="sending", send_started_at=old, image_path="p/sent.jpg"
    )
    fakes.messenger.held.append(_held(sent, caption(sent)))
    held = fakes.store.add(created_at=old, claim_owner="msg", claim_token="theirs")
    ancient = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    gone_one = fakes.store.add(created_at=ancient, status="delivered", image_path="p/old.jpg")
    fakes.environ = {"RETENTION_DAYS": "30"}
    report = sweep(fakes.services)
    assert report == SweepReport(expired=1, delivered=1, skipped=1, errors=0, purged=1)
    assert fakes.store.row(expired.id)["failure_reason"] == "expired"
    assert fakes.store.row(sent.id)["status"] == "delivered"
    assert fakes.store.row(held.id)["status"] == "queued"
    assert gone_one.id not in fakes.store.rows
    assert fakes.pictures.removed == ["p/old.jpg"]


def test_the_sweep_counts_a_request_it_could_not_finish(fakes: MemoryServices) -> None:
    record = fakes.store.add(created_at=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
    fakes.messenger.refusals.append(MessagingError("down", retryable=True))
    assert sweep(fakes.services).errors == 1
    assert fakes.store.row(record.id)["status"] == "sending"


def test_finish_stuck_finds_a_sent_picture(fakes: MemoryServices) -> None:
    record = fakes.store.add(status="sending", send_started_at=_ago(30), image_path="p/x.jpg")
    fakes.messenger.held.append(_held(record, caption(record)))
    assert finish_stuck(record.id, fakes.services) is CallbackOutcome.DELIVERED


# --- accepting -------------------------------------------------------------------------------

OURS = "+15550001111"
MOBILE = "+14155552671"


def ask(fakes: MemoryServices, deadline: Deadline | None = None, **fields: object) -> Accepted:
    values: dict[str, object] = {"recipient": MOBILE, "sender": OURS, "prompt": "a fox"}
    values.update(fields)
    return accept_picture_request(PictureRequest(**values), fakes.services, deadline)  # type: ignore[arg-type]


def test_a_request_is_recorded_then_published(fakes: MemoryServices) -> None:
    accepted = ask(fakes)
    assert accepted.outcome is Acceptance.QUEUED
    [job] = fakes.publisher.jobs
    assert job.request_id == accepted.request_id
    assert fakes.store.published == {accepted.request_id: f"msg_{accepted.request_id}"}


def test_no_message_id_is_written_when_the_caller_cannot_wait(fakes: MemoryServices) -> None:
    accepted = ask(fakes, Deadline.after(0.01))
    assert accepted.outcome is Acceptance.QUEUED
    assert fakes.store.published == {}


def test_a_refused_publish_fails_the_row_and_raises(fakes: MemoryServices) -> None:
    fakes.publisher.refuse = PublishError("QStash refused the job", retryable=False)
    with pytest.raises(PublishError):
        ask(fakes)
    [row] = fakes.store.rows.values()
    assert (row["status"], row["failure_reason"]) == ("failed", "publish_failed")


def test_a_resend_publishes_nothing(fakes: MemoryServices) -> None:
    first = ask(fakes, source_ref="SM" + "1" * 32)
    again = ask(fakes, source_ref="SM" + "1" * 32)
    assert again.outcome is Acceptance.DUPLICATE and again.request_id == first.request_id
    assert len(fakes.publisher.jobs) == 1


@pytest.mark.parametrize(
    ("creation", "outcome"),
    [
        (CreationOutcome.BUDGET, Acceptance.LIMITED),
        (CreationOutcome.NOT_ALLOWED, Acceptance.NOT_ALLOWED),
    ],
)
def test_a_request_the_store_turns_down_publishes_nothing(
    fakes: MemoryServices, creation: CreationOutcome, outcome: Acceptance
) -> None:
    fakes.store.next_creation = creation
    assert ask(fakes).outcome is outcome
    assert fakes.publisher.jobs == []


def test_an_unreachable_number_is_refused_before_anything_is_recorded(
    fakes: MemoryServices,
) -> None:
    accepted = ask(fakes, recipient="+19005550123")
    assert accepted.outcome is Acceptance.UNREACHABLE
    assert fakes.store.rows == {}


def test_whatsapp_off_records_nothing(fakes: MemoryServices) -> None:
    fakes.environ = {"WHATSAPP": "off"}
    accepted = ask(fakes, recipient=f"whatsapp:{MOBILE}", channel=Channel.WHATSAPP)
    assert accepted.outcome is Acceptance.NO_WHATSAPP
    assert fakes.store.rows == {}


def _ago(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def _held(record: RequestRecord, body: str) -> Sent:
    return Sent(record.recipient, record.sender, body, None, None)


class Forgetful(MemoryStore):
    """A store that records requests but fails every later write to them."""

    def record_published(self, request_id: str, message_id: str) -> None:
        raise StoreError("down", retryable=True, detail="timeout")

    def fail_unpublished(self, request_id: str, detail: str) -> bool:
        raise StoreError("down", retryable=True, detail="timeout")


def test_a_lost_message_id_write_does_not_stop_the_request() -> None:
    fakes = MemoryServices(store=Forgetful())
    assert ask(fakes).outcome is Acceptance.QUEUED
    assert len(fakes.publisher.jobs) == 1


def test_a_row_left_queued_by_a_failed_publish_is_left_to_the_sweep() -> None:
    fakes = MemoryServices(store=Forgetful())
    fakes.publisher.refuse = PublishError("QStash refused the job", retryable=True)
    with pytest.raises(PublishError):
        ask(fakes)
    [row] = fakes.store.rows.values()
    assert row["status"] == "queued"


def test_an_undo_resends_the_stored_picture_once(fakes: MemoryServices) -> None:
    from shared.delivery import resend_picture

    record = fakes.store.add(kind="undo")
    outcome = resend_picture(record.id, "a/b.jpg", fakes.services)
    assert outcome is CallbackOutcome.DELIVERED
    [sent] = fakes.messenger.sent
    assert sent.media_url == fakes.pictures.public_url("a/b.jpg")
    assert resend_picture(record.id, "a/b.jpg", fakes.services) is CallbackOutcome.ALREADY_DONE
    assert len(fakes.messenger.sent) == 1


def test_an_undo_refused_as_opted_out_is_remembered(fakes: MemoryServices) -> None:
    from shared.delivery import resend_picture

    record = fakes.store.add(kind="undo")
    fakes.messenger.refusals.append(MessagingError("refused", retryable=False, code=21610))
    assert resend_picture(record.id, "a/b.jpg", fakes.services) is CallbackOutcome.FAILED
    assert (record.recipient, record.sender) in fakes.store.opt_outs
    assert fakes.store.row(record.id)["failure_reason"] == "opted_out"
