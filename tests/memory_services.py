"""In-memory stand-ins for the clients in `Services` (shared/services.py's protocols), for the
fast unit tests of the effects layer (delivery.py, accept.py, sweep.py).

They keep only what those modules rely on: a claim is one holder's, writes under a claim need
its token, a finished request cannot be claimed. The SQL itself (limits, leases, concurrency)
is tested against PostgreSQL in tests/test_database.py and through the stack tests.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from shared.deadline import Deadline
from shared.errors import MessagingError, PublishError
from shared.messaging import SentMessage
from shared.publishing import GenerationJob
from shared.records import (
    WHATSAPP_PREFIX,
    ClaimOutcome,
    CreationOutcome,
    FailureReason,
    OptOutSource,
    RequestKind,
    RequestRecord,
    RequestStatus,
)
from shared.secrets import Secret
from shared.self_test import SelfTestResult
from shared.services import Services
from shared.settings import Settings, load_settings
from shared.store import Claim, Creation, NewRequest, owned_paths
from tests.minimal_settings import MINIMAL

SECRETS = {
    "OPENAI_API_KEY": "sk-memory",
    "QSTASH_TOKEN": "qstash-memory",
    "SAFETY_IDENTIFIER_SALT": "salt-memory",
    "SUPABASE_SECRET_KEY": "sb-memory",
    "TWILIO_AUTH_TOKEN": "twilio-memory",
}
_ids = itertools.count(1)


def memory_settings(**environ: str) -> Settings:
    return load_settings({**MINIMAL, **SECRETS, **environ})


class MemoryStore:
    """The `requests` rows as dicts (the columns SQL has), plus opt-outs and claims."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.opt_outs: set[tuple[str, str]] = set()
        self.attempts: list[tuple[str, str | None, str]] = []
        self.released: list[tuple[str, str | None]] = []
        self.switches: list[tuple[str, str, str]] = []
        self.self_tests: list[SelfTestResult] = []
        self.published: dict[str, str] = {}
        self.photos: dict[tuple[str, str], tuple[str, datetime]] = {}
        self.gallery_links: dict[tuple[str, str], tuple[int, str]] = {}
        self.languages: dict[tuple[str, str], str] = {}
        self.paused = False
        self.blocked: dict[str, str | None] = {}  # address -> the operator's note
        # Set to make `create` answer this instead of recording (a limit, say).
        self.next_creation: CreationOutcome | None = None
        self.fail_writes: Exception | None = None  # raised by every write under a claim

    # --- rows -----------------------------------------------------------------------------

    def add(self, **fields: Any) -> RequestRecord:
        """A request row as `create_request` leaves it, with `fields` on top."""
        request_id = str(uuid.uuid4())
        row: dict[str, Any] = {
            "id": request_id,
            "status": RequestStatus.QUEUED.value,
            "recipient": "+15552000001",
            "sender": "+15550001111",
            "prompt": "a lighthouse at dusk",
            "media_token": uuid.uuid4().hex,
            "channel": "sms",
            "model": "gpt-image-2.6-flare",
            "attempts": 0,
            "created_at": datetime.now(UTC).isoformat(),
            "claim_owner": None,
            "claim_token": None,
        }
        row.update(fields)
        self.rows[request_id] = row
        return RequestRecord.from_row(row)

    def row(self, request_id: str) -> dict[str, Any]:
        return self.rows[request_id]

    def create(self, new: NewRequest) -> Creation:
        if self.next_creation is not None:
            return Creation(self.next_creation, None)
        if (new.recipient, new.sender) in self.opt_outs:
            return Creation(CreationOutcome.OPTED_OUT, None)
        for row in self.rows.values():
            if new.source_ref and row.get("source_ref") == new.source_ref:
                return Creation(CreationOutcome.DUPLICATE, RequestRecord.from_row(row))
        record = self.add(
            recipient=new.recipient,
            sender=new.sender,
            prompt=new.prompt,
            channel=new.channel.value,
            model=new.model,
            source_ref=new.source_ref,
            kind=new.kind.value,
            parent_id=new.parent_id,
            source_path=new.source_path,
            language=new.language,
        )
        return Creation(CreationOutcome.CREATED, record)

    def get(self, request_id: str) -> RequestRecord | None:
        row = self.rows.get(request_id)
        return RequestRecord.from_row(row) if row else None

    def record_published(self, request_id: str, message_id: str) -> None:
        self.published[request_id] = message_id

    def fail_unpublished(self, request_id: str, detail: str) -> bool:
        row = self.rows[request_id]
        if row["status"] != RequestStatus.QUEUED.value:
            return False
        row.update(status="failed", failure_reason="publish_failed", failure_detail=detail)
        return True

    def switch_model(self, request_id: str, old: str, new: str) -> bool:
        row = self.rows[request_id]
        self.switches.append((request_id, old, new))
        if row["model"] != old or RequestStatus(row["status"]).finished:
            return False
        row["model"] = new
        return True

    def record_attempt(self, request_id: str, message_id: str | None, error: str) -> int | None:
        row = self.rows.get(request_id)
        if row is None or RequestStatus(row["status"]).finished:
            return None
        self.attempts.append((request_id, message_id, error))
        row["attempts"] += 1
        return int(row["attempts"])

    # --- the claim --------------------------------------------------------------------------

    def claim(self, request_id: str, owner: str, lease_s: int) -> Claim:
        row = self.rows.get(request_id)
        if row is None:
            return Claim(ClaimOutcome.MISSING, None)
        record = RequestRecord.from_row(row)
        if record.status.finished:
            return Claim(ClaimOutcome.DONE, record)
        if row["claim_token"] is not None:
            busy = row["claim_owner"] == owner
            return Claim(ClaimOutcome.BUSY if busy else ClaimOutcome.TAKEN, record)
        token = f"token-{next(_ids)}"
        row.update(claim_owner=owner, claim_token=token)
        if row["status"] == RequestStatus.QUEUED.value:
            row["status"] = RequestStatus.COMPOSING.value
        return Claim(ClaimOutcome.CLAIMED, RequestRecord.from_row(row), token)

    def release(self, request_id: str, token: str, error: str | None) -> None:
        row = self.rows[request_id]
        if row["claim_token"] == token:
            row.update(claim_owner=None, claim_token=None)
        self.released.append((request_id, error))

    def take_claim_away(self, request_id: str) -> None:
        """As if the lease ran out and another run claimed the request."""
        self.rows[request_id].update(claim_owner="someone-else", claim_token="their-token")

    def update_claimed(self, request_id: str, token: str, fields: dict[str, Any]) -> bool:
        if self.fail_writes is not None:
            raise self.fail_writes
        row = self.rows[request_id]
        if row["claim_token"] != token:
            return False
        row.update(fields)
        return True

    def mark_sending(
        self, request_id: str, token: str, *, image_path: str | None, extra: dict[str, Any]
    ) -> bool:
        fields = {"status": "sending", "send_started_at": datetime.now(UTC).isoformat(), **extra}
        if image_path is not None:
            fields["image_path"] = image_path
        return self.update_claimed(request_id, token, fields)

    def mark_delivered(
        self, request_id: str, token: str, message_sid: str, timings: dict[str, int]
    ) -> bool:
        done = {"status": "delivered", "message_sid": message_sid, "timings": timings}
        return self.update_claimed(request_id, token, {**done, **_unclaimed()})

    def mark_failed(
        self,
        request_id: str,
        token: str,
        reason: FailureReason,
        detail: str,
        *,
        notified: bool,
        message_sid: str | None,
    ) -> bool:
        failed = {
            "status": "failed",
            "failure_reason": reason.value,
            "failure_detail": detail,
            "notified": notified,
            "message_sid": message_sid,
        }
        return self.update_claimed(request_id, token, {**failed, **_unclaimed()})

    # --- messages and opt-outs --------------------------------------------------------------

    def record_message_status(
        self, request_id: str, message_sid: str, status: str, error_code: int | None
    ) -> bool:
        row = self.rows.get(request_id)
        if row is None or row.get("message_sid") != message_sid:
            return False
        row["message_status"] = status
        return True

    def set_opt_out(
        self, address: str, sender: str, *, opted_out: bool, source: OptOutSource
    ) -> None:
        if opted_out:
            self.opt_outs.add((address, sender))
        else:
            self.opt_outs.discard((address, sender))

    def is_opted_out(self, address: str, sender: str) -> bool:
        return (address, sender) in self.opt_outs

    def fail_waiting(self, address: str, sender: str, detail: str) -> list[str | None]:
        ended = []
        for row in self.rows.values():
            waiting = row["status"] == RequestStatus.QUEUED.value and row["claim_token"] is None
            if waiting and row["recipient"] == address and row["sender"] == sender:
                row.update(status="failed", failure_reason="opted_out", failure_detail=detail)
                ended.append(row.get("qstash_message_id"))
        return ended

    # --- the sweep --------------------------------------------------------------------------

    def unfinished_before(self, cutoff: datetime, limit: int) -> list[RequestRecord]:
        records = [RequestRecord.from_row(row) for row in self.rows.values()]
        stuck = [
            r for r in records if not r.status.finished and r.created_at and r.created_at < cutoff
        ]
        return stuck[:limit]

    def finished_before(self, cutoff: datetime, limit: int) -> list[tuple[str, tuple[str, ...]]]:
        records = [RequestRecord.from_row(row) for row in self.rows.values()]
        old = [r for r in records if r.status.finished and r.created_at and r.created_at < cutoff]
        return [(r.id, owned_paths(r)) for r in old][:limit]

    def recent_for(self, address: str, sender: str, limit: int) -> list[RequestRecord]:
        mine = [
            RequestRecord.from_row(row)
            for row in self.rows.values()
            if row["recipient"] == address and row["sender"] == sender
        ]
        mine.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return mine[:limit]

    def pending_photo(self, address: str, sender: str) -> tuple[str, datetime] | None:
        return self.photos.get((address, sender))

    def keep_photo(self, address: str, sender: str, path: str) -> str | None:
        before = self.photos.get((address, sender))
        self.photos[(address, sender)] = (path, datetime.now(UTC))
        return before[0] if before and before[0] != path else None

    def forget_photo(self, address: str, sender: str) -> None:
        self.photos.pop((address, sender), None)

    def language_for(self, address: str, sender: str) -> str | None:
        return self.languages.get((address, sender))

    def remember_language(self, address: str, sender: str, language: str) -> None:
        self.languages[(address, sender)] = language

    def photos_before(self, cutoff: datetime, limit: int) -> list[tuple[str, str, str]]:
        old = [(a, s, p) for (a, s), (p, when) in self.photos.items() if when < cutoff]
        return old[:limit]

    def delete(self, request_ids: list[str]) -> int:
        gone = [self.rows.pop(request_id) for request_id in request_ids if request_id in self.rows]
        return len(gone)

    def set_gallery_link(
        self, address: str, sender: str, generation: int, token_sha256: str
    ) -> None:
        self.gallery_links[(address, sender)] = (generation, token_sha256)

    def gallery_generation(self, address: str, sender: str) -> int | None:
        link = self.gallery_links.get((address, sender))
        return link[0] if link else None

    def gallery_owner(self, token_sha256: str) -> tuple[str, str] | None:
        return next(
            (pair for pair, (_, h) in self.gallery_links.items() if h == token_sha256), None
        )

    def gallery_pictures(self, address: str, sender: str, limit: int) -> list[RequestRecord]:
        mine = self.recent_for(address, sender, len(self.rows))
        shown = [r for r in mine if r.has_picture and r.kind is not RequestKind.UNDO]
        return [r for r in shown if not self.rows[r.id].get("hidden_at")][:limit]

    def delete_picture(self, address: str, sender: str, request_id: str) -> tuple[str, ...]:
        row = self.rows.get(request_id)
        if row is None or (row["recipient"], row["sender"]) != (address, sender):
            return ()
        if row.get("deleted_at"):
            return ()
        row.update(deleted_at=datetime.now(UTC).isoformat(), prompt="(deleted)")
        return owned_paths(RequestRecord.from_row(row))

    def mark_link_sent(self, request_id: str, message_sid: str) -> RequestRecord | None:
        row = self.rows.get(request_id)
        if row is None or row.get("message_sid") != message_sid or row.get("link_sent_at"):
            return None
        row["link_sent_at"] = datetime.now(UTC).isoformat()
        return RequestRecord.from_row(row)

    def record_self_test(self, result: SelfTestResult) -> None:
        self.self_tests.append(result)

    # --- the operator console and the wall (console_stats and wall_pictures are SQL; these
    # keep their shapes, not their arithmetic: tests/test_console_sql.py checks that) --------

    def is_paused(self) -> bool:
        return self.paused

    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    def block_number(self, address: str, note: str | None) -> None:
        self.blocked[address] = note

    def unblock_number(self, address: str) -> None:
        number = address.removeprefix(WHATSAPP_PREFIX)
        for form in (number, f"{WHATSAPP_PREFIX}{number}"):
            self.blocked.pop(form, None)

    def blocked_numbers(self) -> list[str]:
        return list(reversed(self.blocked))

    def hide_picture(self, request_id: str) -> bool:
        return self._stamp(request_id, "hidden_at")

    def approve_picture(self, request_id: str) -> bool:
        return self._stamp(request_id, "approved_at")

    def _stamp(self, request_id: str, column: str) -> bool:
        row = self.rows.get(request_id)
        if row is None or row.get(column):
            return False
        row[column] = datetime.now(UTC).isoformat()
        return True

    def console_stats(self, budget_usd: float | None) -> dict[str, Any]:
        now = datetime.now(UTC)
        current_hour = now.replace(minute=0, second=0, microsecond=0)
        hours = [current_hour - timedelta(hours=23 - n) for n in range(24)]
        day = [r for r in self.rows.values() if _created(r) > now - timedelta(hours=24)]
        per_hour = Counter(_created(r).replace(minute=0, second=0, microsecond=0) for r in day)
        recent = sorted(self.rows.values(), key=_created, reverse=True)[:20]
        return {
            "requests_per_hour": [{"hour": h.isoformat(), "count": per_hour[h]} for h in hours],
            "outcomes": dict(Counter(str(r["status"]) for r in day)),
            "failure_reasons": dict(
                Counter(str(r["failure_reason"]) for r in day if r.get("failure_reason"))
            ),
            "spend_today_usd": 0,
            "budget_usd": budget_usd,
            "to_mms_seconds_p50": None,
            "to_mms_seconds_p95": None,
            "paused": self.paused,
            "recent": [
                {
                    **{k: r.get(k) for k in _RECENT_COLUMNS},
                    "prompt": None if r.get("deleted_at") else r.get("prompt"),
                    "recipient": _masked(str(r["recipient"])),
                }
                for r in recent
            ],
        }

    def wall_pictures(
        self, since: datetime | None, approved_only: bool, limit: int
    ) -> list[dict[str, Any]]:
        shown = [
            r
            for r in self.rows.values()
            if r["status"] == RequestStatus.DELIVERED.value
            and r.get("delivered_at")
            and not r.get("deleted_at")
            and not r.get("hidden_at")
            and r.get("kind", RequestKind.NEW.value) != RequestKind.UNDO.value
            and (since is None or datetime.fromisoformat(r["delivered_at"]) > since)
            and (not approved_only or r.get("approved_at"))
        ]
        shown.sort(key=lambda r: datetime.fromisoformat(r["delivered_at"]), reverse=True)
        columns = ("id", "prompt", "image_path", "delivered_at")
        return [{k: r.get(k) for k in columns} for r in shown[:limit]]


def _unclaimed() -> dict[str, Any]:
    return {"claim_owner": None, "claim_token": None}


_RECENT_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "channel",
    "status",
    "failure_reason",
    "deleted_at",
    "model",
    "message_sid",
    "handset_status",
    "hidden_at",
    "approved_at",
    "generated_at",
    "send_started_at",
    "delivered_at",
    "failed_at",
)


def _created(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["created_at"])


def _masked(address: str) -> str:
    """As console_stats masks a recipient: its first 4 and last 2 characters."""
    prefix = WHATSAPP_PREFIX if address.startswith(WHATSAPP_PREFIX) else ""
    number = address.removeprefix(WHATSAPP_PREFIX)
    return f"{prefix}{number[:4]}{'•' * max(len(number) - 6, 1)}{number[-2:]}"


class MemoryPictures:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.removed: list[str] = []

    def upload(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        self.files[path] = data
        return self.public_url(path)

    def public_url(self, path: str) -> str:
        return f"https://pictures.test/{path}"

    def signed_url(self, path: str, expires_s: int) -> str:
        return f"https://pictures.test/sign/{path}?expires={expires_s}"

    def signed_urls(self, paths: list[str], expires_s: int) -> dict[str, str]:
        return {path: self.signed_url(path, expires_s) for path in paths if path in self.files}

    def remove(self, paths: list[str]) -> None:
        for path in paths:
            self.removed.append(path)
            self.files.pop(path, None)


class MemoryPublisher:
    def __init__(self) -> None:
        self.jobs: list[GenerationJob] = []
        self.cancelled: list[str] = []
        self.refuse: PublishError | None = None

    def publish(
        self, job: GenerationJob, provider_key: Secret, deadline: Deadline | None = None
    ) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.jobs.append(job)
        return f"msg_{job.deduplication_id}"

    def cancel(self, message_id: str) -> bool:
        self.cancelled.append(message_id)
        return True


@dataclass
class Sent:
    to: str
    from_: str
    body: str
    media_url: str | None
    status_callback: str | None
    sid: str = field(default_factory=lambda: f"SM{uuid.uuid4().hex}")


class MemoryMessenger:
    """Twilio's side: what was sent, and what it already has from runs that died."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        # Messages Twilio holds that no run recorded (a run died after Twilio took them).
        self.held: list[Sent] = []
        self.refusals: list[MessagingError] = []  # raised by the next sends, in order
        self.lookups = 0

    def send(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        media_url: str | None = None,
        status_callback: str | None = None,
    ) -> SentMessage:
        if self.refusals:
            raise self.refusals.pop(0)
        message = Sent(to, from_, body, media_url, status_callback)
        self.sent.append(message)
        return SentMessage(message.sid, "queued")

    def find_sent(
        self, *, to: str, from_: str, bodies: Collection[str], created_at: datetime | None
    ) -> str | None:
        self.lookups += 1
        for message in [*self.held, *self.sent]:
            if message.to == to and message.from_ == from_ and message.body in bodies:
                return message.sid
        return None


@dataclass
class MemoryServices:
    """`Services` built from the fakes, with the fakes kept typed for the assertions."""

    store: MemoryStore = field(default_factory=MemoryStore)
    pictures: MemoryPictures = field(default_factory=MemoryPictures)
    publisher: MemoryPublisher = field(default_factory=MemoryPublisher)
    messenger: MemoryMessenger = field(default_factory=MemoryMessenger)
    environ: Mapping[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        return Services(
            settings=memory_settings(**self.environ),
            store=self.store,
            pictures=self.pictures,
            publisher=self.publisher,
            messenger=self.messenger,
            http=requests.Session(),
        )
