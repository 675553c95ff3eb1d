"""Supabase access: the `requests` table (through PostgREST) and the picture bucket (Storage).

Every supabase/httpx exception is translated into `StoreError` here. Writes that belong to a
claimed run are conditional on the claim token, so a run that lost its claim cannot overwrite
the work of the run that holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import httpx
from postgrest.exceptions import APIError
from storage3.utils import StorageException
from supabase import Client, ClientOptions, create_client

from .catalogue import REFERENCE_LANGUAGE
from .errors import StoreError
from .records import (
    WHATSAPP_PREFIX,
    Channel,
    ClaimOutcome,
    CreationOutcome,
    FailureReason,
    OptOutSource,
    RequestKind,
    RequestRecord,
    RequestStatus,
)

if TYPE_CHECKING:
    from .self_test import SelfTestResult

TABLE = "requests"
SELF_TESTS = "self_tests"
PENDING_PHOTOS = "pending_photos"
PERSON_LANGUAGES = "person_languages"
GALLERY_LINKS = "gallery_links"
DELETED_PROMPT = "(deleted)"
PHOTOS_PREFIX = "photos/"  # the people's own photos, beside the pictures we made
OPT_OUTS = "opt_outs"
SERVICE_STATE = "service_state"
BLOCKED_NUMBERS = "blocked_numbers"
# We ask for JPEG (generation.py), so the original is one.
ORIGINAL_SUFFIX = "-original.jpg"
T = TypeVar("T")


@dataclass(frozen=True)
class NewRequest:
    recipient: str
    sender: str
    prompt: str
    channel: Channel
    model: str
    size: str
    quality: str
    source_ref: str | None = None  # Twilio's CallSid/MessageSid, to recognise a resend
    estimated_cost_usd: float = 0.0
    limits: dict[str, object] = field(default_factory=dict)
    caller_verdict: str | None = None  # a call's SHAKEN/STIR verdict
    kind: RequestKind = RequestKind.NEW
    parent_id: str | None = None
    source_path: str | None = None  # the picture in Storage an edit starts from
    language: str = REFERENCE_LANGUAGE  # what its caption and notices are written in


@dataclass(frozen=True)
class Creation:
    """The result of `create_request`; `record` is set when created or a duplicate."""

    outcome: CreationOutcome
    record: RequestRecord | None


@dataclass(frozen=True)
class Claim:
    """The result of `claim_request`; `record` and `token` are set when claimed."""

    outcome: ClaimOutcome
    record: RequestRecord | None
    token: str | None = None


def read_creation(data: Any) -> Creation:
    """`create_request`'s JSON answer, checked once here."""
    try:
        outcome = CreationOutcome(data["outcome"])
        row = data.get("request")
        record = RequestRecord.from_row(row) if row else None
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise StoreError("recording the request gave no usable answer", retryable=True) from exc
    if record is None and outcome in (CreationOutcome.CREATED, CreationOutcome.DUPLICATE):
        raise StoreError("recording the request gave no row", retryable=True)
    return Creation(outcome, record)


def read_claim(data: Any) -> Claim:
    """`claim_request`'s JSON answer, checked once here. A claim without its row and token
    is no claim: a run must never send without holding one."""
    if not isinstance(data, dict):
        return Claim(ClaimOutcome.MISSING, None)
    try:
        outcome = ClaimOutcome(str(data.get("outcome")))
        row = data.get("request")
        record = RequestRecord.from_row(row) if row else None
    except (TypeError, KeyError, ValueError) as exc:
        raise StoreError("claiming the request gave no usable answer", retryable=True) from exc
    token = data.get("token")
    if outcome is ClaimOutcome.CLAIMED and (record is None or not isinstance(token, str)):
        raise StoreError("claiming the request gave no row or token", retryable=True)
    return Claim(outcome, record, token if isinstance(token, str) else None)


def _storable(text: str, limit: int = 500) -> str:
    """Text PostgreSQL will take: no NUL bytes, no lone surrogates, at most `limit` chars.
    Error details come from vendors and callbacks, so they may hold either."""
    clean = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return clean[:limit]


def _values(statuses: Iterable[RequestStatus]) -> list[str]:
    return [status.value for status in statuses]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _is_uuid(text: str) -> bool:
    """Whether `text` can be a request id; PostgreSQL refuses anything else with an error."""
    try:
        UUID(text)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _number_forms(address: str) -> list[str]:
    """A number as SMS and as WhatsApp write it: create_request matches a block on either."""
    number = address.removeprefix(WHATSAPP_PREFIX)
    return [number, f"{WHATSAPP_PREFIX}{number}"]


def guard(action: str, call: Callable[[], T]) -> T:
    """Run a Supabase call, turning its failures into `StoreError`."""
    try:
        return call()
    except APIError as exc:
        raise StoreError(
            f"{action} failed",
            retryable=_retryable(str(exc.code or "")),
            detail=f"{exc.code}: {exc.message}",
        ) from exc
    except StorageException as exc:
        raise StoreError(f"{action} failed", retryable=True, detail=str(exc)[:300]) from exc
    except httpx.HTTPError as exc:
        raise StoreError(
            f"{action} failed: Supabase unreachable", retryable=True, detail=type(exc).__name__
        ) from exc


# SQLSTATE classes that fail the same way every time: data, integrity, access and syntax
# errors, and raised exceptions. PostgREST's own PGRST codes (unknown table, bad key) are
# configuration errors. Anything else (HTTP 5xx from the gateway, connection and lock
# errors) may pass on a retry.
_FINAL_SQLSTATE_CLASSES = ("22", "23", "42", "P0", "2B", "44")


def _retryable(code: str) -> bool:
    if code.startswith("PGRST"):
        return False
    return not (len(code) == 5 and code[:2] in _FINAL_SQLSTATE_CLASSES)


class RequestStore:
    """Reads and writes request rows; one per instance."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @classmethod
    def connect(cls, url: str, key: str, timeout_s: float = 10.0) -> RequestStore:
        options = ClientOptions(
            postgrest_client_timeout=timeout_s, storage_client_timeout=max(int(timeout_s), 20)
        )
        return cls(create_client(url, key, options))

    @property
    def client(self) -> Client:
        return self._client

    def create(self, new: NewRequest) -> Creation:
        """Record a request in one call, unless its recipient opted out or it is a resend."""
        params = {
            "p_recipient": new.recipient,
            "p_sender": new.sender,
            "p_prompt": new.prompt,
            "p_channel": new.channel.value,
            "p_model": new.model,
            "p_size": new.size,
            "p_quality": new.quality,
            "p_source_ref": new.source_ref,
            "p_estimated_cost_usd": new.estimated_cost_usd,
            "p_limits": new.limits,
            "p_caller_verdict": new.caller_verdict,
            "p_kind": new.kind.value,
            "p_parent_id": new.parent_id,
            "p_source_path": new.source_path,
            "p_language": new.language,
        }
        call = self._client.rpc("create_request", params).execute
        return read_creation(guard("recording the request", call).data)

    def set_opt_out(
        self, address: str, sender: str, *, opted_out: bool, source: OptOutSource
    ) -> None:
        params = {
            "p_address": address,
            "p_sender": sender,
            "p_opted_out": opted_out,
            "p_source": source.value,
        }
        guard("recording the opt-out", self._client.rpc("set_opt_out", params).execute)

    def is_opted_out(self, address: str, sender: str) -> bool:
        query = (
            self._client.table(OPT_OUTS)
            .select("address")
            .eq("address", address)
            .eq("sender", sender)
            .limit(1)
        )
        return bool(guard("reading the opt-outs", query.execute).data)

    def fail_waiting(self, address: str, sender: str, detail: str) -> list[str | None]:
        """End, as opted out, the requests for this pair that no callback is working on yet;
        return their QStash message ids (None where unknown), so their generations can still
        be cancelled."""
        fields = {
            "status": RequestStatus.FAILED.value,
            "failure_reason": FailureReason.OPTED_OUT.value,
            "failure_detail": _storable(detail),
            "failed_at": _now(),
        }
        query = (
            self._table()
            .update(fields)
            .eq("recipient", address)
            .eq("sender", sender)
            .eq("status", RequestStatus.QUEUED.value)
            .is_("claim_token", "null")
        )
        rows: list[dict[str, Any]] = guard("ending the opted-out requests", query.execute).data
        return [row.get("qstash_message_id") for row in rows]

    def record_published(self, request_id: str, message_id: str) -> None:
        """Remember the QStash message of a request, so it can be cancelled later."""
        query = (
            self._table()
            .update({"qstash_message_id": message_id})
            .eq("id", request_id)
            .is_("qstash_message_id", "null")
        )
        guard("recording the QStash message", query.execute)

    def get(self, request_id: str) -> RequestRecord | None:
        response = guard(
            "reading the request",
            self._table().select("*").eq("id", request_id).limit(1).execute,
        )
        return RequestRecord.from_row(response.data[0]) if response.data else None

    def fail_unpublished(self, request_id: str, detail: str) -> bool:
        """Mark a request that never reached QStash as failed; False if it had moved on."""
        fields = {
            "status": RequestStatus.FAILED.value,
            "failure_reason": FailureReason.PUBLISH_FAILED.value,
            "failure_detail": _storable(detail),
            "failed_at": _now(),
        }
        query = (
            self._table()
            .update(fields)
            .eq("id", request_id)
            .eq("status", RequestStatus.QUEUED.value)
        )
        return bool(guard("marking the request failed", query.execute).data)

    def switch_model(self, request_id: str, old: str, new: str) -> bool:
        """Move an unfinished request from `old` to `new` model; False if it had moved on."""
        query = (
            self._table()
            .update({"model": new})
            .eq("id", request_id)
            .eq("model", old)
            .in_("status", [RequestStatus.QUEUED.value, RequestStatus.COMPOSING.value])
        )
        return bool(guard("switching the model", query.execute).data)

    def claim(self, request_id: str, owner: str, lease_s: int) -> Claim:
        params = {"p_request_id": request_id, "p_owner": owner, "p_lease_seconds": lease_s}
        call = self._client.rpc("claim_request", params).execute
        return read_claim(guard("claiming the request", call).data)

    def release(self, request_id: str, token: str, error: str | None) -> None:
        params = {
            "p_request_id": request_id,
            "p_token": token,
            "p_error": _storable(error) if error else None,
        }
        guard("releasing the claim", self._client.rpc("release_request", params).execute)

    def record_attempt(self, request_id: str, message_id: str | None, error: str) -> int | None:
        params = {
            "p_request_id": request_id,
            "p_message_id": message_id,
            "p_error": _storable(error),
        }
        call = self._client.rpc("record_attempt", params).execute
        data: Any = guard("recording the attempt", call).data
        return data if isinstance(data, int) else None

    def record_message_status(
        self, request_id: str, message_sid: str, status: str, error_code: int | None
    ) -> bool:
        """Remember how far a request's message got (Twilio's status callback); False if it
        is not that request's message, or older news than we have."""
        params = {
            "p_request_id": request_id,
            "p_message_sid": message_sid,
            "p_status": status,
            "p_error_code": error_code,
        }
        call = self._client.rpc("record_message_status", params).execute
        return bool(guard("recording the message status", call).data)

    def update_claimed(self, request_id: str, token: str, fields: dict[str, Any]) -> bool:
        """Write `fields` only while we still hold the claim; False if we lost it."""
        query = self._table().update(fields).eq("id", request_id).eq("claim_token", token)
        return bool(guard("updating the request", query.execute).data)

    def mark_sending(
        self, request_id: str, token: str, *, image_path: str | None, extra: dict[str, Any]
    ) -> bool:
        fields = {"status": RequestStatus.SENDING.value, "send_started_at": _now(), **extra}
        if image_path is not None:
            fields["image_path"] = image_path
        return self.update_claimed(request_id, token, fields)

    def mark_delivered(
        self, request_id: str, token: str, message_sid: str, timings: dict[str, int]
    ) -> bool:
        fields: dict[str, Any] = {
            "status": RequestStatus.DELIVERED.value,
            "message_sid": message_sid,
            "delivered_at": _now(),
            "claim_owner": None,
            "claim_token": None,
            "claimed_until": None,
        }
        if timings:
            fields["timings"] = timings
        return self.update_claimed(request_id, token, fields)

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
        fields: dict[str, Any] = {
            "status": RequestStatus.FAILED.value,
            "failure_reason": reason.value,
            "failure_detail": _storable(detail),
            "failed_at": _now(),
            "notified": notified,
            "message_sid": message_sid,
            "claim_owner": None,
            "claim_token": None,
            "claimed_until": None,
        }
        return self.update_claimed(request_id, token, fields)

    def unfinished_before(self, cutoff: datetime, limit: int) -> list[RequestRecord]:
        """Requests created before `cutoff` that are still not delivered or failed."""
        query = (
            self._table()
            .select("*")
            .in_("status", _values(s for s in RequestStatus if not s.finished))
            .lt("created_at", cutoff.isoformat())
            .order("created_at")
            .limit(limit)
        )
        rows: list[dict[str, Any]] = guard("finding stuck requests", query.execute).data
        return [RequestRecord.from_row(row) for row in rows]

    def finished_before(self, cutoff: datetime, limit: int) -> list[tuple[str, tuple[str, ...]]]:
        """(id, the Storage paths only it holds) of finished requests created before `cutoff`."""
        query = (
            self._table()
            .select("id,image_path,kind,source_path")
            .in_("status", _values(s for s in RequestStatus if s.finished))
            .lt("created_at", cutoff.isoformat())
            .limit(limit)
        )
        rows: list[dict[str, Any]] = guard("finding old requests", query.execute).data
        return [(str(row["id"]), owned_paths(RequestRecord.from_partial(row))) for row in rows]

    def delete(self, request_ids: list[str]) -> int:
        if not request_ids:
            return 0
        query = self._table().delete().in_("id", request_ids)
        return len(guard("deleting old requests", query.execute).data)

    def recent_for(self, address: str, sender: str, limit: int) -> list[RequestRecord]:
        """This person's latest requests to our number, newest first (conversation.py)."""
        query = (
            self._table()
            .select("*")
            .eq("recipient", address)
            .eq("sender", sender)
            .order("created_at", desc=True)
            .limit(limit)
        )
        rows: list[dict[str, Any]] = guard("reading the conversation", query.execute).data
        return [RequestRecord.from_row(row) for row in rows]

    def pending_photo(self, address: str, sender: str) -> tuple[str, datetime] | None:
        """The photo this person sent without words, and when, if any."""
        query = (
            self._client.table(PENDING_PHOTOS)
            .select("path,received_at")
            .eq("address", address)
            .eq("sender", sender)
            .limit(1)
        )
        rows: Any = guard("reading the waiting photo", query.execute).data
        if not rows:
            return None
        return str(rows[0]["path"]), datetime.fromisoformat(rows[0]["received_at"])

    def language_for(self, address: str, sender: str) -> str | None:
        """The language this person chose for our number (None: they never said)."""
        query = (
            self._client.table(PERSON_LANGUAGES)
            .select("language")
            .eq("address", address)
            .eq("sender", sender)
            .limit(1)
        )
        rows: Any = guard("reading the person's language", query.execute).data
        return str(rows[0]["language"]) if rows else None

    def remember_language(self, address: str, sender: str, language: str) -> None:
        row = {"address": address, "sender": sender, "language": language, "chosen_at": _now()}
        upsert = self._client.table(PERSON_LANGUAGES).upsert(row).execute
        guard("remembering the person's language", upsert)

    def keep_photo(self, address: str, sender: str, path: str) -> str | None:
        """Remember a photo until the person says what to do with it; return the path of
        the photo it replaces, if any (one waits per person)."""
        before = self.pending_photo(address, sender)
        row = {"address": address, "sender": sender, "path": path, "received_at": _now()}
        guard("keeping the photo", self._client.table(PENDING_PHOTOS).upsert(row).execute)
        return before[0] if before and before[0] != path else None

    def forget_photo(self, address: str, sender: str) -> None:
        query = (
            self._client.table(PENDING_PHOTOS).delete().eq("address", address).eq("sender", sender)
        )
        guard("forgetting the photo", query.execute)

    def photos_before(self, cutoff: datetime, limit: int) -> list[tuple[str, str, str]]:
        """(address, sender, path) of waiting photos received before `cutoff`."""
        query = (
            self._client.table(PENDING_PHOTOS)
            .select("address,sender,path")
            .lt("received_at", cutoff.isoformat())
            .limit(limit)
        )
        rows: Any = guard("finding old photos", query.execute).data
        return [(str(r["address"]), str(r["sender"]), str(r["path"])) for r in rows]

    def set_gallery_link(
        self, address: str, sender: str, generation: int, token_sha256: str
    ) -> None:
        """Make this the person's one gallery link (an earlier one stops working)."""
        row = {
            "address": address,
            "sender": sender,
            "generation": generation,
            "token_sha256": token_sha256,
        }
        guard("keeping the gallery link", self._client.table(GALLERY_LINKS).upsert(row).execute)

    def gallery_generation(self, address: str, sender: str) -> int | None:
        """Which link the person has now (None: none yet)."""
        query = (
            self._client.table(GALLERY_LINKS)
            .select("generation")
            .eq("address", address)
            .eq("sender", sender)
            .limit(1)
        )
        rows: Any = guard("reading the gallery link", query.execute).data
        return int(rows[0]["generation"]) if rows else None

    def gallery_owner(self, token_sha256: str) -> tuple[str, str] | None:
        """(address, sender) whose gallery this token opens, if any."""
        query = (
            self._client.table(GALLERY_LINKS)
            .select("address,sender")
            .eq("token_sha256", token_sha256)
            .limit(1)
        )
        rows: Any = guard("reading the gallery link", query.execute).data
        return (str(rows[0]["address"]), str(rows[0]["sender"])) if rows else None

    def gallery_pictures(self, address: str, sender: str, limit: int) -> list[RequestRecord]:
        """The person's delivered pictures, newest first (an UNDO shows no new picture)."""
        query = (
            self._table()
            .select("*")
            .eq("recipient", address)
            .eq("sender", sender)
            .eq("status", RequestStatus.DELIVERED.value)
            .neq("kind", RequestKind.UNDO.value)
            .is_("deleted_at", "null")
            .is_("hidden_at", "null")
            .order("created_at", desc=True)
            .limit(limit)
        )
        rows: list[dict[str, Any]] = guard("reading the gallery", query.execute).data
        return [RequestRecord.from_row(row) for row in rows]

    def delete_picture(self, address: str, sender: str, request_id: str) -> tuple[str, ...]:
        """The person deletes one of their pictures: its prompt is replaced and the paths of
        its files returned, for Storage. Nothing (an empty tuple) if it is not theirs."""
        fields = {"deleted_at": _now(), "prompt": DELETED_PROMPT}
        query = (
            self._table()
            .update(fields)
            .eq("id", request_id)
            .eq("recipient", address)
            .eq("sender", sender)
            .is_("deleted_at", "null")
        )
        rows: list[dict[str, Any]] = guard("deleting the picture", query.execute).data
        return owned_paths(RequestRecord.from_row(rows[0])) if rows else ()

    def mark_link_sent(self, request_id: str, message_sid: str) -> RequestRecord | None:
        """Take the one chance to text the gallery link for a picture whose MMS
        (`message_sid`) never reached the phone; the request, the first time only."""
        query = (
            self._table()
            .update({"link_sent_at": _now()})
            .eq("id", request_id)
            .eq("message_sid", message_sid)
            .eq("status", RequestStatus.DELIVERED.value)
            .is_("link_sent_at", "null")
            .is_("deleted_at", "null")
        )
        rows: list[dict[str, Any]] = guard("marking the link sent", query.execute).data
        return RequestRecord.from_row(rows[0]) if rows else None

    def record_self_test(self, result: SelfTestResult) -> None:
        """Keep what `composite` saw of the doctor's self-test (see self_test.py)."""
        row = {
            "nonce": result.nonce,
            "sub_included_query": result.sub_included_query,
            "query_arrived": result.query_arrived,
        }
        # QStash delivers at least once: a second copy of the message finds its row and keeps it.
        query = self._client.table(SELF_TESTS).upsert(row)
        guard("recording the self-test", query.execute)

    # --- the operator console and the wall ---------------------------------------------------

    def is_paused(self) -> bool:
        """Whether the operator paused the service (create_request then records nothing)."""
        query = self._client.table(SERVICE_STATE).select("paused").eq("id", "true").limit(1)
        rows: Any = guard("reading the service state", query.execute).data
        return bool(rows and rows[0].get("paused"))

    def set_paused(self, paused: bool) -> None:
        """Pause or resume the whole service; an upsert, so a missing state row is made again."""
        row = {"id": True, "paused": paused, "paused_at": _now() if paused else None}
        guard("pausing the service", self._client.table(SERVICE_STATE).upsert(row).execute)

    def block_number(self, address: str, note: str | None) -> None:
        """Send this number no picture on any channel (create_request answers `blocked`)."""
        row = {"address": address, "note": _storable(note) if note else None}
        guard("blocking the number", self._client.table(BLOCKED_NUMBERS).upsert(row).execute)

    def unblock_number(self, address: str) -> None:
        """Lift a block in both of the number's forms, since a block matches either one."""
        query = self._client.table(BLOCKED_NUMBERS).delete().in_("address", _number_forms(address))
        guard("unblocking the number", query.execute)

    def blocked_numbers(self) -> list[str]:
        """The blocked numbers as stored, most recently blocked first (for the console)."""
        query = self._client.table(BLOCKED_NUMBERS).select("address").order("blocked_at", desc=True)
        rows: Any = guard("reading the blocked numbers", query.execute).data
        return [str(row["address"]) for row in rows]

    def hide_picture(self, request_id: str) -> bool:
        """Take a picture off the wall and the gallery; False if there is no such request or
        it was hidden already."""
        return self._stamp_once(request_id, "hidden_at", "hiding the picture")

    def approve_picture(self, request_id: str) -> bool:
        """Let a picture on the wall when it shows approved pictures only (WALL=approve);
        False if there is no such request or it was approved already."""
        return self._stamp_once(request_id, "approved_at", "approving the picture")

    def _stamp_once(self, request_id: str, column: str, action: str) -> bool:
        """Set a request's `column` to now, unless it is set already."""
        if not _is_uuid(request_id):
            return False
        query = self._table().update({column: _now()}).eq("id", request_id).is_(column, "null")
        return bool(guard(action, query.execute).data)

    def console_stats(self, budget_usd: float | None) -> dict[str, Any]:
        """The console's figures for the last 24 hours, computed in SQL (`console_stats`):
        counting rows here would mean reading every row, phone numbers included."""
        call = self._client.rpc("console_stats", {"p_budget_usd": budget_usd}).execute
        data: Any = guard("reading the console figures", call).data
        if not isinstance(data, dict):
            raise StoreError("reading the console figures gave no usable answer", retryable=True)
        return data

    def wall_pictures(
        self, since: datetime | None, approved_only: bool, limit: int
    ) -> list[dict[str, Any]]:
        """The newest pictures for the wall (id, prompt, image_path, delivered_at), delivered
        after `since`: the SQL returns no phone number, so none can reach a public screen."""
        params = {
            "p_since": since.isoformat() if since else None,
            "p_approved_only": approved_only,
            "p_limit": limit,
        }
        call = self._client.rpc("wall_pictures", params).execute
        rows: Any = guard("reading the wall", call).data
        if not isinstance(rows, list):
            raise StoreError("reading the wall gave no usable answer", retryable=True)
        return [dict(row) for row in rows]

    def _table(self) -> Any:
        return self._client.table(TABLE)


def owned_paths(record: RequestRecord) -> tuple[str, ...]:
    """What retention deletes with a request: its framed picture (and the original beside it,
    see PictureStore.remove), and a photo the person sent for it. An UNDO sent the picture of
    an earlier request again and owns nothing."""
    paths: list[str] = []
    if record.image_path and record.kind is not RequestKind.UNDO:
        paths.append(record.image_path)
    if record.source_path and record.source_path.startswith(PHOTOS_PREFIX):
        paths.append(record.source_path)
    return tuple(paths)


class PictureStore:
    """Uploads framed pictures to the public bucket and names their public URLs."""

    def __init__(self, client: Client, bucket: str) -> None:
        self._bucket = client.storage.from_(bucket)

    @staticmethod
    def path_for(record: RequestRecord) -> str:
        """Where the framed MMS picture goes."""
        created = record.created_at or datetime.now(UTC)
        return f"{created:%Y/%m/%d}/{record.media_token}.jpg"

    @staticmethod
    def original_path_for(framed_path: str) -> str:
        """Beside the framed picture: the provider's full-resolution original, unframed."""
        return framed_path.removesuffix(".jpg") + ORIGINAL_SUFFIX

    def upload(self, path: str, data: bytes, content_type: str = "image/jpeg") -> str:
        # file_options values must be lowercase strings; a bool crashes storage3.
        options = {"content-type": content_type, "cache-control": "86400", "upsert": "true"}
        guard("storing the picture", lambda: self._bucket.upload(path, data, options))  # type: ignore[arg-type]
        return self.public_url(path)

    def public_url(self, path: str) -> str:
        return str(self._bucket.get_public_url(path))

    def signed_url(self, path: str, expires_s: int) -> str:
        """A URL that reads `path` for `expires_s` seconds: how the provider fetches a picture
        to edit (an edit's body then stays small; see publishing.py)."""
        answer = guard(
            "signing the picture URL", lambda: self._bucket.create_signed_url(path, expires_s)
        )
        return str(answer["signedURL"])

    def signed_urls(self, paths: list[str], expires_s: int) -> dict[str, str]:
        """Signed URLs for many pictures in one request (a page of them, the wall's poll). A
        picture Storage does not have is left out [DOC storage createSignedUrls: an item's
        `error` instead of its URL]; Storage failing altogether is a `StoreError`."""
        if not paths:
            return {}
        answer = guard(
            "signing the picture URLs", lambda: self._bucket.create_signed_urls(paths, expires_s)
        )
        return {
            str(item["path"]): str(item["signedURL"])
            for item in answer
            if not item.get("error") and item.get("signedURL")
        }

    @staticmethod
    def photo_path(token: str, now: datetime | None = None) -> str:
        """Where a person's photo goes (EXIF removed: see photos.py)."""
        when = now or datetime.now(UTC)
        return f"{PHOTOS_PREFIX}{when:%Y/%m/%d}/{token}.jpg"

    def remove(self, paths: list[str]) -> None:
        """Delete framed pictures and the originals beside them."""
        every = [name for path in paths for name in (path, self.original_path_for(path))]
        if every:
            guard("deleting old pictures", lambda: self._bucket.remove(every))
