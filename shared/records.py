"""The request record, as stored in `public.requests`, and the answers of the SQL functions that
write it (see supabase/migrations). Every value SQL writes or answers is one of these enums, so a
renamed value fails one unit test (tests/test_sql_contract.py) rather than production."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .catalogue import REFERENCE_LANGUAGE


class RequestStatus(StrEnum):
    QUEUED = "queued"
    COMPOSING = "composing"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.DELIVERED, RequestStatus.FAILED)


class FailureReason(StrEnum):
    PUBLISH_FAILED = "publish_failed"
    REFUSED = "refused"
    PROVIDER_BUSY = "provider_busy"
    PROVIDER_ERROR = "provider_error"
    BAD_RESPONSE = "bad_response"
    MODEL_UNAVAILABLE = "model_unavailable"  # the provider no longer serves the model
    TOO_LARGE = "too_large"  # the answer outgrew QStash's message limit and was cut
    UNDELIVERABLE = "undeliverable"
    OPTED_OUT = "opted_out"
    EXPIRED = "expired"


class RequestKind(StrEnum):
    """What a request asks for (see conversation.py): a new picture, or a follow-up to one."""

    NEW = "new"  # DRAW <prompt>
    AGAIN = "again"  # another take of the last picture's prompt
    REFINE = "refine"  # an edit of the last picture, the text as the instruction
    RESTYLE = "restyle"  # an edit of the person's own photo
    UNDO = "undo"  # the picture before the last change, sent again at no provider cost

    @property
    def is_follow_up(self) -> bool:
        return self is not RequestKind.NEW


class CreationOutcome(StrEnum):
    """`create_request`'s answer: recorded, a resend of one already recorded, or why not."""

    CREATED = "created"
    DUPLICATE = "duplicate"  # the same Twilio source_ref was recorded before
    PAUSED = "paused"  # the operator paused the service (console)
    BLOCKED = "blocked"  # the operator blocked the recipient's number (console)
    OPTED_OUT = "opted_out"
    NOT_ALLOWED = "not_allowed"  # an allowlist is set and the recipient is not on it
    PER_NUMBER_HOUR = "per_number_hour"
    PER_NUMBER_DAY = "per_number_day"
    GLOBAL_DAY = "global_day"
    BUDGET = "budget"

    @property
    def is_limit(self) -> bool:
        return self in _LIMITS


_LIMITS = frozenset(
    {
        CreationOutcome.PER_NUMBER_HOUR,
        CreationOutcome.PER_NUMBER_DAY,
        CreationOutcome.GLOBAL_DAY,
        CreationOutcome.BUDGET,
    }
)


class ClaimOutcome(StrEnum):
    """`claim_request`'s answer."""

    CLAIMED = "claimed"
    MISSING = "missing"  # no such request
    DONE = "done"  # delivered or failed already
    TAKEN = "taken"  # another callback holds the claim
    BUSY = "busy"  # this same callback's earlier run still holds it


class OptOutSource(StrEnum):
    """Who told us a person opted out (`opt_outs.source`)."""

    KEYWORD = "keyword"  # they texted STOP (or START) to us
    TWILIO_21610 = "twilio_21610"  # Twilio refused a send: they had replied STOP to Twilio


# How Twilio writes a WhatsApp address: whatsapp:+15551234567.
WHATSAPP_PREFIX = "whatsapp:"


class Channel(StrEnum):
    API = "api"
    VOICE = "voice"
    SMS = "sms"
    WHATSAPP = "whatsapp"


def reference_for(request_id: str) -> str:
    """The short code a person sees for a request ("Ref 5f0c1a52"), in every message about it."""
    return request_id.replace("-", "")[:8]


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class RequestRecord:
    id: str
    status: RequestStatus
    recipient: str
    sender: str
    prompt: str
    media_token: str
    channel: Channel = Channel.API
    model: str = ""
    attempts: int = 0
    image_path: str | None = None
    send_started_at: datetime | None = None
    message_sid: str | None = None
    failure_reason: FailureReason | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None
    kind: RequestKind = RequestKind.NEW
    parent_id: str | None = None
    source_path: str | None = None  # the picture in Storage an edit starts from
    source_ref: str | None = None  # Twilio's MessageSid or CallSid that asked for it
    deleted_at: datetime | None = None  # the person deleted it from their gallery
    language: str = REFERENCE_LANGUAGE  # what its caption and notices are written in (catalogue.py)

    @property
    def has_picture(self) -> bool:
        """Delivered, with its picture still kept."""
        return (
            self.status is RequestStatus.DELIVERED
            and self.image_path is not None
            and self.deleted_at is None
        )

    @property
    def reference(self) -> str:
        return reference_for(self.id)

    @classmethod
    def from_partial(cls, row: dict[str, Any]) -> RequestRecord:
        """A record from a row read with only some columns (the rest left empty)."""
        full = {"status": "delivered", "recipient": "", "sender": "", "prompt": ""}
        return cls.from_row({**full, "media_token": "", **row})

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RequestRecord:
        reason = row.get("failure_reason")
        return cls(
            id=str(row["id"]),
            status=RequestStatus(row["status"]),
            recipient=row["recipient"],
            sender=row["sender"],
            prompt=row["prompt"],
            media_token=row["media_token"],
            channel=Channel(row.get("channel") or "api"),
            model=str(row.get("model") or ""),
            attempts=int(row.get("attempts") or 0),
            image_path=row.get("image_path"),
            send_started_at=_time(row.get("send_started_at")),
            message_sid=row.get("message_sid"),
            failure_reason=FailureReason(reason) if reason else None,
            created_at=_time(row.get("created_at")),
            delivered_at=_time(row.get("delivered_at")),
            kind=RequestKind(row.get("kind") or RequestKind.NEW.value),
            parent_id=str(row["parent_id"]) if row.get("parent_id") else None,
            source_path=row.get("source_path"),
            source_ref=row.get("source_ref"),
            deleted_at=_time(row.get("deleted_at")),
            language=str(row.get("language") or REFERENCE_LANGUAGE),
        )
