"""The request record, as stored in `public.requests` (see supabase/migrations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


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


# How Twilio writes a WhatsApp address: whatsapp:+15551234567.
WHATSAPP_PREFIX = "whatsapp:"


class Channel(StrEnum):
    API = "api"
    VOICE = "voice"
    SMS = "sms"
    WHATSAPP = "whatsapp"


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

    @property
    def reference(self) -> str:
        """A short code shown to the person and used to find our own message at Twilio."""
        return self.id.replace("-", "")[:8]

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
        )
