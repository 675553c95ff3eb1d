"""Local stand-in for Twilio's REST Messages API (2010-04-01), good enough for the real SDK.

The official `twilio` SDK talks to it unchanged once its URLs are rewritten, see
:class:`LocalTwilioHttpClient`::

    from twilio.rest import Client
    client = Client(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, http_client=LocalTwilioHttpClient(url))
    client.messages.create(to="+15558675310", from_="+15017122661", media_url=[...])

What it emulates:

* Basic auth with one account (SID + auth token); Twilio's error JSON and codes on bad input.
* ``POST .../Messages.json`` answers 201 with status ``queued``, then, like Twilio, fetches each
  ``MediaUrl`` in a background thread, checks status, content type and size, and marks the
  message ``sent`` -> ``delivered`` (written to ``outbox_dir``) or ``failed`` with an error code.
  ``StatusCallback`` gets signed form POSTs for each later status.
* ``GET`` of one message, of the message list (filters and paging the SDK sends), of media.
* Dev-only JSON control endpoints under ``/__dev/`` (no auth): outbox, STOP list, fault
  injection, wait-idle, reset.

Chosen where Twilio's behaviour was not pinned down (see the project's Twilio notes):

* Media larger than ``media_max_bytes`` in total fails with 11751 ("Media exceeds messaging
  provider size limit"), the code Twilio documents for an MMS over its 5 MB channel limit.
* Media files in the outbox are numbered from 0, like Twilio's ``MediaUrl{N}`` webhook fields.
* A path account SID other than the configured one is answered like bad credentials (401/20003).
* Status callbacks carry ``ErrorCode``/``ErrorMessage`` only when there is an error, as Twilio's do.
* Fault responses for 5xx use codes 20500/20503 and, for stand-in-only cases, 20502/20504.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import flask
import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

DEV_ACCOUNT_SID = "AC0d5e7a11c0ffee0000d15ea5e0000001"
DEV_AUTH_TOKEN = "d3adbeefd3adbeefd3adbeefd3adbeef"

API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
CALLBACK_TIMEOUT_S = 5.0

# Types Twilio transcodes for MMS; the only ones this project sends. The value is the outbox
# file extension.
IMAGE_TYPES = {"image/jpeg": "jpg", "image/jpg": "jpg", "image/png": "png", "image/gif": "gif"}
MAGIC_BYTES = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/jpg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}
FAULT_KINDS = ("500", "503", "timeout", "21610", "21211", "20429", "reset")

_E164 = re.compile(r"\+[1-9]\d{7,14}")
_WHATSAPP = "whatsapp:"
# Outbox files this module writes, so that reset never deletes anything else.
_OUTBOX_FILE = re.compile(r"(MM|SM)[0-9a-f]{32}(-\d+\.[a-z]+|\.json)")
# GSM 03.38 basic and extension tables: decides 7-bit (160/153) vs UCS-2 (70/67) segments.
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = set("^{}\\[~]|€\f")


# --------------------------------------------------------------------------------------------
# Pointing the real SDK at the stand-in
# --------------------------------------------------------------------------------------------


def rewrite_twilio_url(url: str, base_url: str) -> str:
    """Return `url` on `base_url` if it targets ``https://twilio.com`` or a subdomain, else as is.

    Path and query are kept, so paging URIs and filters survive; `base_url` may carry a path
    prefix (it is prepended to the original path).
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not (host == "twilio.com" or host.endswith(".twilio.com")):
        return url
    rewritten = base_url.rstrip("/") + parts.path
    return f"{rewritten}?{parts.query}" if parts.query else rewritten


class LocalTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """A `TwilioHttpClient` that sends every ``https://*.twilio.com`` request to `base_url`.

    Everything else the SDK does (form encoding, auth header, paging, error mapping) stays real.
    `kwargs` go to `TwilioHttpClient` (e.g. ``timeout=``, ``max_retries=``).
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(method, rewrite_twilio_url(url, self.base_url), *args, **kwargs)


# --------------------------------------------------------------------------------------------
# Configuration, records and errors
# --------------------------------------------------------------------------------------------


@dataclass
class TwilioConfig:
    outbox_dir: Path  # delivered messages are written here
    account_sid: str = DEV_ACCOUNT_SID
    auth_token: str = DEV_AUTH_TOKEN
    media_max_bytes: int = 5 * 1024 * 1024
    media_fetch_timeout_s: float = 10.0


class ApiError(Exception):
    """A Twilio REST error; rendered as ``{code, message, more_info, status}``."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


class DeliveryError(Exception):
    """Why a message failed after it was accepted (becomes its error_code/error_message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class MediaRecord:
    sid: str
    url: str
    content_type: str | None = None  # known once fetched
    size: int | None = None
    path: Path | None = None  # set once written to the outbox
    date_created: datetime | None = None


@dataclass
class MessageRecord:
    sid: str
    seq: int  # creation order; timestamps have one-second resolution, like Twilio's
    to: str
    from_: str
    body: str
    status_callback: str | None
    media: list[MediaRecord]
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    status: str = "queued"
    error_code: int | None = None
    error_message: str | None = None


@dataclass
class OutboundRequest:
    """A validated create request."""

    to: str
    from_: str
    body: str
    media_urls: list[str]
    status_callback: str | None


@dataclass
class Fault:
    kind: str
    times: int  # -1: until cleared
    to: str | None = None
    delay_s: float = 30.0

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "times": self.times, "to": self.to, "delay_s": self.delay_s}


@dataclass
class FetchedMedia:
    content_type: str
    data: bytes


@dataclass
class ListQuery:
    """Filters and paging of a message list request (names as the SDK sends them)."""

    filters: list[tuple[str, str]]  # the raw filter pairs, echoed into paging URIs
    to: str | None = None
    from_: str | None = None
    sent_on: date | None = None
    sent_before: datetime | date | None = None
    sent_after: datetime | date | None = None
    page: int = 0
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str | None = None


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _rfc2822(value: datetime | None) -> str | None:
    return format_datetime(value) if value is not None else None


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------------------------
# Validation of a create request
# --------------------------------------------------------------------------------------------


def _is_address(value: str) -> bool:
    return _E164.fullmatch(value.removeprefix(_WHATSAPP)) is not None


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _check_addresses(to: str, from_: str) -> None:
    if not to:
        raise ApiError(21604, "A 'To' phone number is required.")
    if not _is_address(to):
        raise ApiError(21211, f"The 'To' number {to} is not a valid phone number.")
    if not from_:
        raise ApiError(21606, "A 'From' phone number is required.")
    same_channel = to.startswith(_WHATSAPP) == from_.startswith(_WHATSAPP)
    if not _is_address(from_) or not same_channel:
        raise ApiError(
            21606,
            f"The 'From' phone number provided ({from_}) is not a valid message-capable "
            "phone number for this destination.",
        )


def _check_content(body: str, media_urls: list[str]) -> None:
    if not body and not media_urls:
        raise ApiError(21602, "Message body is required.")
    if len(body) > MAX_BODY_CHARS:
        raise ApiError(21617, f"The message body is longer than {MAX_BODY_CHARS} characters.")
    if len(media_urls) > MAX_MEDIA:
        raise ApiError(21623, f"At most {MAX_MEDIA} media files can be sent in one message.")
    if not all(_is_http_url(url) for url in media_urls):
        raise ApiError(21620, "Invalid media URL(s).")


def validate_create(form: MultiDict[str, str], opted_out: Iterable[str]) -> OutboundRequest:
    """Check a create form in Twilio's order of checks; raise `ApiError` on the first problem."""
    to = form.get("To", "").strip()
    from_ = form.get("From", "").strip()
    body = form.get("Body", "")
    media_urls = form.getlist("MediaUrl")
    _check_addresses(to, from_)
    _check_content(body, media_urls)
    if to in set(opted_out):
        raise ApiError(21610, "Attempt to send to unsubscribed recipient")
    return OutboundRequest(to, from_, body, media_urls, form.get("StatusCallback") or None)


def count_segments(body: str, num_media: int) -> int:
    """SMS segments Twilio would bill; an MMS is one message whatever its text length."""
    if num_media or not body:
        return 1
    if set(body) <= _GSM7_BASIC | _GSM7_EXTENDED:
        units = sum(2 if char in _GSM7_EXTENDED else 1 for char in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else -(-units // multi)


# --------------------------------------------------------------------------------------------
# JSON shapes
# --------------------------------------------------------------------------------------------


def _account_path(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}"


def message_resource(record: MessageRecord, account_sid: str) -> dict[str, Any]:
    """The MessageInstance JSON Twilio answers with."""
    uri = f"{_account_path(account_sid)}/Messages/{record.sid}"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": record.body,
        "date_created": _rfc2822(record.date_created),
        "date_sent": _rfc2822(record.date_sent),
        "date_updated": _rfc2822(record.date_updated),
        "direction": "outbound-api",
        "error_code": record.error_code,
        "error_message": record.error_message,
        "from": record.from_,
        "messaging_service_sid": None,
        "num_media": str(len(record.media)),
        "num_segments": str(count_segments(record.body, len(record.media))),
        "price": None,
        "price_unit": "USD",
        "sid": record.sid,
        "status": record.status,
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": record.to,
        "uri": f"{uri}.json",
    }


def media_resource(media: MediaRecord, message: MessageRecord, account_sid: str) -> dict[str, Any]:
    uri = f"{_account_path(account_sid)}/Messages/{message.sid}/Media/{media.sid}.json"
    return {
        "account_sid": account_sid,
        "content_type": media.content_type,
        "date_created": _rfc2822(media.date_created),
        "date_updated": _rfc2822(media.date_created),
        "parent_sid": message.sid,
        "sid": media.sid,
        "uri": uri,
    }


def outbox_entry(record: MessageRecord, account_sid: str) -> dict[str, Any]:
    """The message resource plus what only the stand-in knows: media URLs and local files."""
    media = [
        {
            "sid": item.sid,
            "url": item.url,
            "content_type": item.content_type,
            "size": item.size,
            "path": str(item.path) if item.path else None,
        }
        for item in record.media
    ]
    return {
        **message_resource(record, account_sid),
        "media": media,
        "status_callback": record.status_callback,
    }


# --------------------------------------------------------------------------------------------
# Media fetching (what Twilio does after accepting an MMS)
# --------------------------------------------------------------------------------------------


def _declared_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _read_capped(response: requests.Response, budget: int, url: str) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > budget:
        raise _too_large(url)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        size += len(chunk)
        if size > budget:  # stop reading: the server may lie about or omit Content-Length
            raise _too_large(url)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(url: str) -> DeliveryError:
    return DeliveryError(11751, f"Media at {url} exceeds the messaging provider size limit.")


def fetch_media(url: str, budget: int, timeout_s: float) -> FetchedMedia:
    """GET one media URL and check it like Twilio; raise `DeliveryError` when unusable."""
    try:
        with requests.get(url, timeout=timeout_s, stream=True) as response:
            if not 200 <= response.status_code < 300:
                raise DeliveryError(
                    11200, f"HTTP retrieval failure: {url} answered {response.status_code}."
                )
            content_type = _declared_type(response.headers.get("Content-Type"))
            if content_type not in IMAGE_TYPES:
                raise DeliveryError(12300, f"Invalid Content-Type {content_type!r} at {url}.")
            data = _read_capped(response, budget, url)
    except requests.RequestException as exc:
        raise DeliveryError(
            11200, f"HTTP retrieval failure: {url} ({type(exc).__name__})."
        ) from exc
    if not data.startswith(MAGIC_BYTES[content_type]):
        raise DeliveryError(12300, f"Content-Type {content_type} at {url} does not match the file.")
    return FetchedMedia(content_type, data)


def fetch_all_media(urls: list[str], max_bytes: int, timeout_s: float) -> list[FetchedMedia]:
    fetched: list[FetchedMedia] = []
    used = 0
    for url in urls:
        item = fetch_media(url, max_bytes - used, timeout_s)  # the limit is for the whole message
        used += len(item.data)
        fetched.append(item)
    return fetched


def _write_atomic(path: Path, data: bytes) -> None:
    # Readers poll the outbox; never let them see half a file.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def post_status_callback(url: str, params: dict[str, str], auth_token: str) -> None:
    """POST a signed status update; best effort like Twilio (errors are logged, not raised)."""
    signature = RequestValidator(auth_token).compute_signature(url, params)
    headers = {
        "X-Twilio-Signature": signature,
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        "User-Agent": "TwilioProxy/1.1",
    }
    try:
        requests.post(url, data=params, headers=headers, timeout=CALLBACK_TIMEOUT_S)
    except requests.RequestException as exc:
        log.info("status callback to %s failed: %s", url, type(exc).__name__)


# --------------------------------------------------------------------------------------------
# List filters and paging
# --------------------------------------------------------------------------------------------


def _parse_when(name: str, value: str) -> datetime | date:
    """Twilio accepts ``YYYY-MM-DD``; the SDK sends ``YYYY-MM-DDTHH:MM:SSZ`` (naive = UTC)."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(20001, f"Invalid {name}: {value}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _parse_page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(20001, f"Invalid PageSize: {raw}")
    return min(int(raw), MAX_PAGE_SIZE)


def parse_list_query(args: MultiDict[str, str]) -> ListQuery:
    filter_names = ("To", "From", "DateSent", "DateSent<", "DateSent>")
    query = ListQuery(filters=[(name, args[name]) for name in filter_names if name in args])
    query.to = args.get("To")
    query.from_ = args.get("From")
    if "DateSent" in args:
        sent_on = _parse_when("DateSent", args["DateSent"])
        query.sent_on = sent_on.date() if isinstance(sent_on, datetime) else sent_on
    if "DateSent<" in args:
        query.sent_before = _parse_when("DateSent<", args["DateSent<"])
    if "DateSent>" in args:
        query.sent_after = _parse_when("DateSent>", args["DateSent>"])
    page = args.get("Page", "0")
    query.page = int(page) if page.isdigit() else 0
    query.page_size = _parse_page_size(args.get("PageSize"))
    query.page_token = args.get("PageToken") or None
    return query


def _on_or_before(sent: datetime, bound: datetime | date) -> bool:
    return sent <= bound if isinstance(bound, datetime) else sent.date() <= bound


def _on_or_after(sent: datetime, bound: datetime | date) -> bool:
    return sent >= bound if isinstance(bound, datetime) else sent.date() >= bound


def matches(record: MessageRecord, query: ListQuery) -> bool:
    """Apply the filters; ``DateSent<``/``DateSent>`` are inclusive (they mean <= and >=)."""
    if query.to is not None and record.to != query.to:
        return False
    if query.from_ is not None and record.from_ != query.from_:
        return False
    date_filtered = query.sent_on or query.sent_before or query.sent_after
    if date_filtered and record.date_sent is None:
        return False
    sent = record.date_sent
    if sent is None:
        return True
    return (
        (query.sent_on is None or sent.date() == query.sent_on)
        and (query.sent_before is None or _on_or_before(sent, query.sent_before))
        and (query.sent_after is None or _on_or_after(sent, query.sent_after))
    )


def _page_start(sids: list[str], query: ListQuery) -> tuple[int, int]:
    """Start and end (exclusive) indexes of the page in the newest-first `sids`.

    Page tokens are cursors, like Twilio's: ``PA<sid>`` = the page after that message,
    ``PB<sid>`` = the page before it. New messages arriving between pages then neither repeat
    nor skip records.
    """
    token = query.page_token
    if token is None:
        start = query.page * query.page_size
        return start, start + query.page_size
    anchor = token[2:]
    if token[:2] not in ("PA", "PB") or anchor not in sids:
        raise ApiError(20001, f"Invalid PageToken: {token}")
    index = sids.index(anchor)
    if token.startswith("PA"):
        return index + 1, index + 1 + query.page_size
    return max(0, index - query.page_size), index


def _page_uri(path: str, query: ListQuery, page: int, token: str | None) -> str:
    pairs = [*query.filters, ("PageSize", str(query.page_size)), ("Page", str(page))]
    if token:
        pairs.append(("PageToken", token))
    return f"{path}?{urlencode(pairs)}"


def page_envelope(
    records: list[MessageRecord], query: ListQuery, path: str, account_sid: str
) -> dict[str, Any]:
    """One page of the newest-first `records`, in Twilio's 2010-04-01 paging envelope."""
    sids = [record.sid for record in records]
    start, end = _page_start(sids, query)
    page_records = records[start:end]
    next_uri = None
    if page_records and end < len(records):
        next_uri = _page_uri(path, query, query.page + 1, "PA" + page_records[-1].sid)
    previous_uri = None
    if page_records and start > 0:
        previous_uri = _page_uri(path, query, max(0, query.page - 1), "PB" + page_records[0].sid)
    return {
        "messages": [message_resource(record, account_sid) for record in page_records],
        "page": query.page,
        "page_size": query.page_size,
        "start": start,
        "end": start + max(0, len(page_records) - 1),
        "uri": _page_uri(path, query, query.page, query.page_token),
        "first_page_uri": _page_uri(path, query, 0, None),
        "next_page_uri": next_uri,
        "previous_page_uri": previous_uri,
    }


# --------------------------------------------------------------------------------------------
# Emulator state
# --------------------------------------------------------------------------------------------


class TwilioEmulator:
    """Messages, STOP list and faults of one stand-in; lives at ``app.extensions["twilio"]``."""

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config
        config.outbox_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards all state below and outbox writes
        self._messages: dict[str, MessageRecord] = {}
        self._opted_out: set[str] = set()
        self._faults: list[Fault] = []
        self._seq = 0
        self._pending = 0
        self._idle = threading.Condition()
        self.closing = threading.Event()  # interrupts "timeout" fault sleeps on close()

    # --- lifecycle -------------------------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """True once no message is being delivered (media fetch, outbox, callbacks)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self.closing.set()

    def reset(self) -> None:
        """Forget messages, STOP list and faults, and empty the outbox of our files."""
        with self._lock:
            self._messages.clear()
            self._opted_out.clear()
            self._faults.clear()
            for path in self.config.outbox_dir.iterdir():
                if _OUTBOX_FILE.fullmatch(path.name):
                    path.unlink(missing_ok=True)

    # --- STOP list and faults ----------------------------------------------------------------

    def set_opted_out(self, number: str, opted_out: bool) -> list[str]:
        with self._lock:
            if opted_out:
                self._opted_out.add(number)
            else:
                self._opted_out.discard(number)
            return sorted(self._opted_out)

    def opted_out(self) -> set[str]:
        with self._lock:
            return set(self._opted_out)

    def add_fault(self, fault: Fault) -> list[dict[str, Any]]:
        with self._lock:
            self._faults.append(fault)
            return [item.as_json() for item in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [item.as_json() for item in self._faults]

    def take_fault(self, to: str) -> Fault | None:
        """Consume one use of the first fault that applies to a create for `to`."""
        with self._lock:
            for fault in self._faults:
                if fault.to is None or fault.to == to:
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # --- messages ------------------------------------------------------------------------------

    def create(self, request: OutboundRequest) -> dict[str, Any]:
        """Store a queued message, start its delivery, return its resource JSON."""
        now = _now()
        prefix = "MM" if request.media_urls else "SM"
        media = [MediaRecord(sid=_new_sid("ME"), url=url) for url in request.media_urls]
        with self._lock:
            self._seq += 1
            record = MessageRecord(
                sid=_new_sid(prefix),
                seq=self._seq,
                to=request.to,
                from_=request.from_,
                body=request.body,
                status_callback=request.status_callback,
                media=media,
                date_created=now,
                date_updated=now,
            )
            self._messages[record.sid] = record
            resource = message_resource(record, self.config.account_sid)
        log.info("accepted %s to %s with %d media", record.sid, record.to, len(media))
        self._start_delivery(record.sid)
        return resource

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._messages.get(sid)
            return message_resource(record, self.config.account_sid) if record else None

    def newest_first(self, query: ListQuery) -> list[MessageRecord]:
        with self._lock:
            records = [record for record in self._messages.values() if matches(record, query)]
        return sorted(records, key=lambda record: record.seq, reverse=True)

    def media_of(self, sid: str) -> list[dict[str, Any]] | None:
        """Media resources of a message (only those Twilio has fetched), None if unknown."""
        with self._lock:
            record = self._messages.get(sid)
            if record is None:
                return None
            fetched = [item for item in record.media if item.content_type is not None]
            return [media_resource(item, record, self.config.account_sid) for item in fetched]

    def media_file(self, sid: str, media_sid: str) -> MediaRecord | None:
        with self._lock:
            record = self._messages.get(sid)
            items = record.media if record else []
            return next((item for item in items if item.sid == media_sid), None)

    def outbox(self) -> list[dict[str, Any]]:
        with self._lock:
            records = sorted(self._messages.values(), key=lambda record: record.seq)
            return [outbox_entry(record, self.config.account_sid) for record in records]

    # --- delivery (background) ---------------------------------------------------------------

    def _start_delivery(self, sid: str) -> None:
        with self._idle:
            self._pending += 1
        thread = threading.Thread(target=self._deliver, args=(sid,), name=f"twilio-{sid[:12]}")
        thread.daemon = True  # a slow media server must not keep the process alive
        thread.start()

    def _deliver(self, sid: str) -> None:
        try:
            self._deliver_steps(sid)
        except Exception:  # a bug here must not leave wait_idle() hanging
            log.exception("delivery of %s crashed", sid)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _deliver_steps(self, sid: str) -> None:
        with self._lock:
            record = self._messages.get(sid)
            urls = [item.url for item in record.media] if record else []
        if record is None:
            return
        config = self.config
        try:
            fetched = fetch_all_media(urls, config.media_max_bytes, config.media_fetch_timeout_s)
        except DeliveryError as exc:
            log.info("message %s failed: %s %s", sid, exc.code, exc.message)
            self._set_status(sid, "failed", error=exc)
            return
        self._set_status(sid, "sent")
        self._commit_delivery(sid, fetched)
        self._set_status(sid, "delivered")

    def _set_status(self, sid: str, status: str, error: DeliveryError | None = None) -> None:
        with self._lock:
            record = self._messages.get(sid)
            if record is None:  # reset while delivering
                return
            record.status = status
            record.date_updated = _now()
            if status == "sent":
                record.date_sent = record.date_updated
            if error is not None:
                record.error_code, record.error_message = error.code, error.message
            if status == "delivered":
                self._write_record(record)
            params = self._callback_params(record)
            callback = record.status_callback
        if callback and _is_http_url(callback) and not self.closing.is_set():
            post_status_callback(callback, params, self.config.auth_token)

    def _commit_delivery(self, sid: str, fetched: list[FetchedMedia]) -> None:
        """Write the media files; under the lock so that reset() cannot interleave."""
        with self._lock:
            record = self._messages.get(sid)
            if record is None:
                return
            for index, (item, got) in enumerate(zip(record.media, fetched, strict=True)):
                path = self.config.outbox_dir / f"{sid}-{index}.{IMAGE_TYPES[got.content_type]}"
                _write_atomic(path, got.data)
                item.content_type, item.size, item.path = got.content_type, len(got.data), path
                item.date_created = _now()

    def _write_record(self, record: MessageRecord) -> None:
        entry = outbox_entry(record, self.config.account_sid)
        path = self.config.outbox_dir / f"{record.sid}.json"
        _write_atomic(path, json.dumps(entry, indent=2).encode())

    def _callback_params(self, record: MessageRecord) -> dict[str, str]:
        params = {
            "AccountSid": self.config.account_sid,
            "ApiVersion": API_VERSION,
            "From": record.from_,
            "MessageSid": record.sid,
            "MessageStatus": record.status,
            "SmsSid": record.sid,
            "SmsStatus": record.status,
            "To": record.to,
        }
        if record.error_code is not None:
            params["ErrorCode"] = str(record.error_code)
            params["ErrorMessage"] = record.error_message or ""
        return params


# --------------------------------------------------------------------------------------------
# HTTP: the REST API
# --------------------------------------------------------------------------------------------

api = flask.Blueprint("twilio_api", __name__, url_prefix=f"/{API_VERSION}/Accounts/<account_sid>")
dev = flask.Blueprint("twilio_dev", __name__, url_prefix="/__dev")


def _emulator() -> TwilioEmulator:
    emulator: TwilioEmulator = flask.current_app.extensions["twilio"]
    return emulator


def _json(payload: Any, status: int = 200) -> flask.Response:
    response = flask.jsonify(payload)
    response.status_code = status
    return response


def _credentials_match(config: TwilioConfig) -> bool:
    auth = flask.request.authorization
    if auth is None or auth.type != "basic":
        return False
    # Compare as bytes: compare_digest rejects non-ASCII str, and callers control these values.
    user_ok = hmac.compare_digest((auth.username or "").encode(), config.account_sid.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), config.auth_token.encode())
    return user_ok and password_ok


@api.before_request
def _authenticate() -> flask.Response | None:
    config = _emulator().config
    path_sid = (flask.request.view_args or {}).get("account_sid")
    if _credentials_match(config) and path_sid == config.account_sid:
        return None
    response = _json(ApiError(20003, "Authenticate", status=401).body(), 401)
    response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


def _strip_json(name: str) -> str:
    """Messages/<sid>.json routes: the SID without its suffix, 404 without one."""
    if not name.endswith(".json"):
        flask.abort(404)
    return name.removesuffix(".json")


def _not_found() -> ApiError:
    return ApiError(20404, f"The requested resource {flask.request.path} was not found", 404)


def _fault_response(fault: Fault, to: str) -> flask.Response:
    emulator = _emulator()
    if fault.kind == "reset":
        return _drop_connection()
    if fault.kind == "timeout":
        emulator.closing.wait(fault.delay_s)
        raise ApiError(20504, "Gateway Timeout", 504)
    errors = {
        "500": ApiError(20500, "Internal Server Error", 500),
        "503": ApiError(20503, "Service Unavailable", 503),
        "20429": ApiError(20429, "Too Many Requests", 429),
        "21610": ApiError(21610, "Attempt to send to unsubscribed recipient"),
        "21211": ApiError(21211, f"The 'To' number {to} is not a valid phone number."),
    }
    raise errors[fault.kind]


def _drop_connection() -> flask.Response:
    """Close the connection with no reply, as a crashing proxy would."""
    sock = flask.request.environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):  # not werkzeug's dev server: say so with a 502
        raise ApiError(20502, "Bad Gateway (connection reset requested)", 502)
    # shutdown() works even though werkzeug still holds file objects on the socket; its later
    # write of our dummy response fails with BrokenPipeError, which werkzeug drops quietly.
    sock.shutdown(socket.SHUT_RDWR)
    return flask.Response(status=502)


@api.post("/Messages.json")
def create_message(account_sid: str) -> flask.Response:
    emulator = _emulator()
    form = flask.request.form
    fault = emulator.take_fault(form.get("To", "").strip())
    if fault is not None:
        return _fault_response(fault, form.get("To", ""))
    request = validate_create(form, emulator.opted_out())
    return _json(emulator.create(request), 201)


@api.get("/Messages.json")
def list_messages(account_sid: str) -> flask.Response:
    emulator = _emulator()
    query = parse_list_query(flask.request.args)
    records = emulator.newest_first(query)
    envelope = page_envelope(records, query, flask.request.path, emulator.config.account_sid)
    return _json(envelope)


@api.get("/Messages/<name>")
def fetch_message(account_sid: str, name: str) -> flask.Response:
    resource = _emulator().get(_strip_json(name))
    if resource is None:
        raise _not_found()
    return _json(resource)


@api.get("/Messages/<sid>/Media.json")
def list_media(account_sid: str, sid: str) -> flask.Response:
    media = _emulator().media_of(sid)
    if media is None:
        raise _not_found()
    path = flask.request.path
    first = f"{path}?{urlencode({'PageSize': DEFAULT_PAGE_SIZE, 'Page': 0})}"
    envelope = {
        "media_list": media,
        "page": 0,
        "page_size": DEFAULT_PAGE_SIZE,
        "start": 0,
        "end": max(0, len(media) - 1),
        "uri": first,
        "first_page_uri": first,
        "next_page_uri": None,
        "previous_page_uri": None,
    }
    return _json(envelope)


@api.get("/Messages/<sid>/Media/<name>")
def fetch_media_item(account_sid: str, sid: str, name: str) -> flask.Response:
    """``<ME>.json`` is the media resource; ``<ME>`` alone is the file itself, as on Twilio."""
    emulator = _emulator()
    item = emulator.media_file(sid, name.removesuffix(".json"))
    if item is None or item.content_type is None:
        raise _not_found()
    if name.endswith(".json"):
        media = emulator.media_of(sid) or []
        return _json(next(entry for entry in media if entry["sid"] == item.sid))
    if item.path is None or not item.path.exists():
        raise _not_found()
    return flask.send_file(item.path, mimetype=item.content_type)


# --------------------------------------------------------------------------------------------
# HTTP: dev-only control endpoints (no auth; never part of Twilio's API)
# --------------------------------------------------------------------------------------------


def _json_body() -> dict[str, Any]:
    payload = flask.request.get_json(silent=True)
    if payload is None:
        return {}
    if not isinstance(payload, dict):
        flask.abort(400, "expected a JSON object")
    return payload


def _number_from_body() -> str:
    number = _json_body().get("number")
    if not isinstance(number, str) or not number.strip():
        flask.abort(400, "expected {'number': '+1...'}")
    return number.strip()


@dev.get("/outbox")
def dev_outbox() -> flask.Response:
    return _json({"messages": _emulator().outbox()})


@dev.post("/opt-out")
def dev_opt_out() -> flask.Response:
    return _json({"opted_out": _emulator().set_opted_out(_number_from_body(), True)})


@dev.post("/opt-in")
def dev_opt_in() -> flask.Response:
    return _json({"opted_out": _emulator().set_opted_out(_number_from_body(), False)})


def _fault_from_body(body: dict[str, Any]) -> Fault:
    kind = str(body.get("kind", ""))
    times = body.get("times", 1)
    to = body.get("to")
    delay_s = body.get("delay_s", 30.0)
    if kind not in FAULT_KINDS:
        flask.abort(400, f"kind must be one of {', '.join(FAULT_KINDS)}")
    if isinstance(times, bool) or not isinstance(times, int) or times == 0 or times < -1:
        flask.abort(400, "times must be a positive integer or -1")
    if to is not None and not isinstance(to, str):
        flask.abort(400, "to must be a string")
    if isinstance(delay_s, bool) or not isinstance(delay_s, int | float) or delay_s < 0:
        flask.abort(400, "delay_s must be a non-negative number")
    return Fault(kind=kind, times=times, to=to, delay_s=float(delay_s))


@dev.post("/faults")
def dev_add_fault() -> flask.Response:
    faults = _emulator().add_fault(_fault_from_body(_json_body()))
    return _json({"faults": faults}, 201)


@dev.get("/faults")
def dev_list_faults() -> flask.Response:
    return _json({"faults": _emulator().faults()})


@dev.delete("/faults")
def dev_clear_faults() -> flask.Response:
    _emulator().clear_faults()
    return _json({"faults": []})


@dev.post("/wait-idle")
def dev_wait_idle() -> flask.Response:
    timeout = _json_body().get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        flask.abort(400, "timeout must be a non-negative number")
    idle = _emulator().wait_idle(float(timeout))
    return _json({"idle": idle}, 200 if idle else 408)


@dev.post("/reset")
def dev_reset() -> flask.Response:
    _emulator().reset()
    return _json({"reset": True})


# --------------------------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------------------------


def _api_error(error: ApiError) -> flask.Response:
    return _json(error.body(), error.status)


def _http_error(error: HTTPException) -> flask.Response:
    """Unknown routes and wrong methods answer in Twilio's error shape too (not /__dev/)."""
    status = error.code or 500
    if flask.request.path.startswith(f"{dev.url_prefix}/"):
        return _json({"error": error.description or error.name, "status": status}, status)
    if status == 404:
        return _api_error(_not_found())
    code = {405: 20004}.get(status, status)
    return _api_error(ApiError(code, error.description or error.name, status))


def create_app(config: TwilioConfig) -> flask.Flask:
    """A Flask app emulating Twilio's Messages API; state at ``app.extensions["twilio"]``."""
    app = flask.Flask(__name__)
    app.extensions["twilio"] = TwilioEmulator(config)
    app.register_blueprint(api)
    app.register_blueprint(dev)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app
