"""The Twilio stand-in's Messages API: sending, delivering, receiving and listing messages.

What Twilio does with a message, as far as this project can tell it apart:

* ``POST .../Messages.json`` is checked in Twilio's order, with Twilio's error codes, and
  answered 201 with status ``queued``; then, like Twilio, a background thread fetches each
  ``MediaUrl``, checks status, content type and size, and marks the message ``sent`` ->
  ``delivered`` (written to the outbox) or ``failed`` with an error code. ``StatusCallback``
  gets signed form POSTs for each later status.
* With a Messaging Service (``MessagingServiceSid``, or an ``MG…`` SID as ``From``) the message
  starts ``accepted``, takes a sender from the service's pool when it names no ``From``, then
  goes ``queued`` -> ``sent`` -> ``delivered``.
* An incoming message (:func:`deliver_incoming`) is an ``inbound``/``received`` Message, a
  signed incoming-message webhook to the number's ``sms_url``, and one ``outbound-reply``
  Message per ``<Message>`` of the TwiML answer. A picture someone sends makes it an ``MM…``
  message with one Media resource (``ME…``) per file, served at Twilio's media URL
  ``.../Messages/<MM>/Media/<ME>`` and named in the webhook's ``MediaUrl{N}`` and
  ``MediaContentType{N}`` fields.
* ``GET`` of one message, of the message list (the filters and paging the SDK sends), of media.

Chosen where Twilio's behaviour was not pinned down (see the project's Twilio notes):

* Media larger than ``media_max_bytes`` in total fails with 11751 ("Media exceeds messaging
  provider size limit"), the code Twilio documents for an MMS over its 5 MB channel limit.
* Media files in the outbox are numbered from 0, like Twilio's ``MediaUrl{N}`` webhook fields.
* Status callbacks carry ``ErrorCode``/``ErrorMessage`` only when there is an error, as Twilio's do.
* Message lists: ``DateSent``, ``DateSent<`` and ``DateSent>`` compare whole UTC days, also when
  given a full datetime (what the SDK always sends), because Twilio is reported to ignore the
  time of day there; ``<`` and ``>`` include the day itself.
* Messaging Services: a pool sender is the service's first number; a ``From`` outside the
  service's pool but in the account is used (Twilio only warns, 21711); a ``From`` outside the
  account is 21660 with a service. Without a service, ``From`` is not checked against the
  account, so tests may send from any well-formed number. While ``accepted`` without a ``From``,
  the resource's ``from`` is null and ``num_segments`` is ``"0"`` (no sender assigned yet).
* Incoming messages: the webhook waits ``WEBHOOK_TIMEOUT_S``; a TwiML answer is read when its
  Content-Type is text/xml, application/xml or text/html; problems Twilio reports in its
  debugger are returned as ``notices`` ({code, message}) instead. ``<Redirect>`` and the
  ``action``/``statusCallback`` attributes are not followed, and replies get no status
  callbacks. STOP/START keywords change the STOP list (no automatic confirmation message is
  created). The outbox shows outbound messages only.
* Inbound media: the stand-in behaves like an account with "HTTP Basic Authentication for
  media" on, so a media URL needs the account SID and auth token like every API route (401 and
  20003 without them), and answers the bytes themselves with their Content-Type (no redirect to
  a CDN URL). The files are kept in memory until reset; any MIME type is taken, unchecked,
  since phones send what they like (iPhones send HEIC).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import flask
import requests
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from devstack.twilio_api import (
    API_VERSION,
    DEFAULT_PAGE_SIZE,
    E164,
    SERVICE_SID,
    ApiError,
    Paging,
    account_path,
    is_http_url,
    json_response,
    new_sid,
    not_found,
    paging_2010,
    parse_paging,
    rfc2822,
    strip_json,
    utc_now,
)

__all__ = [
    "CREATE_ENDPOINT",
    "MAX_MEDIA",
    "FetchedMedia",
    "IncomingMessage",
    "MessageStore",
    "deliver_incoming",
    "init_app",
    "media_url",
]

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
CALLBACK_TIMEOUT_S = 5.0

# Twilio waits about 15 s for the answer to an incoming-message webhook [3P: twilio/ai skills,
# project note 3.2].
WEBHOOK_TIMEOUT_S = 15.0
# A TwiML answer over 64 kB is refused with 11750 [DOC errors/11750].
MAX_TWIML_BYTES = 64 * 1024
# Content types Twilio reads TwiML from; any other is 12300 [DOC errors/12300]. text/html is
# taken too [UNCONFIRMED].
TWIML_TYPES = ("text/xml", "application/xml", "text/html")
# Whole-body keywords, case-insensitive, that Twilio handles itself and still forwards to the
# webhook [DOC support 223134027, project note 3.3].
# Twilio's default opt-out words [DOC messaging/tutorials/advanced-opt-out].
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})

# Types Twilio transcodes for MMS; the only ones this project sends. The value is the outbox
# file extension.
IMAGE_TYPES = {"image/jpeg": "jpg", "image/jpg": "jpg", "image/png": "png", "image/gif": "gif"}
MAGIC_BYTES = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/jpg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}

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
# Records
# --------------------------------------------------------------------------------------------


class DeliveryError(Exception):
    """Why a message failed after it was accepted (becomes its error_code/error_message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class MediaRecord:
    sid: str
    url: str  # outbound: where Twilio fetches it; inbound: its Twilio media URL
    content_type: str | None = None  # outbound: known once fetched
    size: int | None = None
    path: Path | None = None  # outbound: set once written to the outbox
    date_created: datetime | None = None
    data: bytes | None = None  # inbound: the file someone sent, kept in memory


@dataclass
class MessageRecord:
    sid: str
    seq: int  # creation order; timestamps have one-second resolution, like Twilio's
    to: str
    from_: str | None  # None: a Messaging Service has not picked the sender yet
    body: str
    status_callback: str | None
    media: list[MediaRecord]
    date_created: datetime
    date_updated: datetime
    date_sent: datetime | None = None
    status: str = "queued"
    error_code: int | None = None
    error_message: str | None = None
    direction: str = "outbound-api"  # or "inbound", "outbound-reply" [DOC message-resource]
    messaging_service_sid: str | None = None


@dataclass
class OutboundRequest:
    """A validated create request."""

    to: str
    from_: str | None  # None: the Messaging Service picks it
    body: str
    media_urls: list[str]
    status_callback: str | None
    messaging_service_sid: str | None = None


@dataclass
class TwimlReply:
    """One ``<Message>`` of a TwiML answer; None addresses default to the conversation's."""

    body: str
    media_urls: list[str]
    to: str | None = None
    from_: str | None = None


@dataclass
class WebhookAnswer:
    """What the incoming-message webhook answered; `status` is None when nothing came back."""

    status: int | None
    content_type: str = ""
    body: bytes = b""
    failure: str | None = None  # why no answer came (connection error, timeout)


@dataclass
class FetchedMedia:
    """A media file and its type: fetched for an outbound message, or sent to our number."""

    content_type: str
    data: bytes


@dataclass
class IncomingMessage:
    """A message someone sends to our number `to`, with the files attached to it."""

    from_: str
    to: str
    body: str
    media: list[FetchedMedia]


@dataclass
class ListQuery(Paging):
    """Filters and paging of a message list request (names as the SDK sends them)."""

    to: str | None = None
    from_: str | None = None
    sent_on: date | None = None
    sent_before: date | None = None
    sent_after: date | None = None


# --------------------------------------------------------------------------------------------
# Validation of a create request
# --------------------------------------------------------------------------------------------


def _is_address(value: str) -> bool:
    return E164.fullmatch(value.removeprefix(_WHATSAPP)) is not None


def _check_to(to: str) -> None:
    if not to:
        raise ApiError(21604, "A 'To' phone number is required.")
    if not _is_address(to):
        raise ApiError(21211, f"The 'To' number {to} is not a valid phone number.")


def _check_from(to: str, from_: str) -> None:
    same_channel = to.startswith(_WHATSAPP) == from_.startswith(_WHATSAPP)
    if not _is_address(from_) or not same_channel:
        raise ApiError(
            21606,
            f"The 'From' phone number provided ({from_}) is not a valid message-capable "
            "phone number for this destination.",
        )


def _check_sender(
    to: str,
    from_: str,
    service: str,
    services: Mapping[str, tuple[str, ...]],
    account_numbers: set[str],
) -> tuple[str, str]:
    """The create's ``(From, MessagingServiceSid)``, "" where absent, once both are usable.

    Codes and titles from Twilio's error pages [DOC errors/21603, 21705, 21701, 21660, 21711];
    that each is answered with HTTP 400 is [UNCONFIRMED].
    """
    if not service and from_.upper().startswith("MG"):
        # "You can provide any of the above sender types in your From parameter", a Messaging
        # Service SID included [DOC errors/21603].
        from_, service = "", from_
    if not from_ and not service:
        raise ApiError(
            21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message."
        )
    if service and SERVICE_SID.fullmatch(service) is None:
        raise ApiError(21705, f"The Messaging Service {service} is invalid.")
    if service and service not in services:
        raise ApiError(21701, f"The Messaging Service {service} does not exist.")
    if from_:
        _check_from(to, from_)
        # With a service, From must belong to the account [DOC errors/21660, SDK docstring of
        # `from_`]; without one the stand-in stays lenient (see the module docstring).
        if service and from_ not in account_numbers:
            raise ApiError(21660, f"Mismatch between the 'From' number {from_} and the account.")
        if service and from_ not in services[service]:
            # A warning only: the message still goes out from From [DOC errors/21711 is a
            # WARNING; that sending goes on is UNCONFIRMED].
            log.info("warning 21711: %s is not in Messaging Service %s", from_, service)
    elif to.startswith(_WHATSAPP):
        # Pools here hold phone numbers only, so no sender fits [UNCONFIRMED code].
        raise ApiError(21606, f"Messaging Service {service} has no sender for {to}.")
    return from_, service


def _check_content(body: str, media_urls: list[str]) -> None:
    if not body and not media_urls:
        raise ApiError(21602, "Message body is required.")
    if len(body) > MAX_BODY_CHARS:
        raise ApiError(21617, f"The message body is longer than {MAX_BODY_CHARS} characters.")
    if len(media_urls) > MAX_MEDIA:
        raise ApiError(21623, f"At most {MAX_MEDIA} media files can be sent in one message.")
    if not all(is_http_url(url) for url in media_urls):
        raise ApiError(21620, "Invalid media URL(s).")


def validate_create(
    form: MultiDict[str, str],
    opted_out: Iterable[str],
    services: Mapping[str, tuple[str, ...]] | None = None,
    account_numbers: Iterable[str] = (),
) -> OutboundRequest:
    """Check a create form in Twilio's order of checks; raise `ApiError` on the first problem.

    `services` are the account's Messaging Services (SID -> pool), `account_numbers` its
    incoming numbers. Where the sender checks come in that order is the stand-in's choice.
    """
    to = form.get("To", "").strip()
    body = form.get("Body", "")
    media_urls = form.getlist("MediaUrl")
    _check_to(to)
    # The SDK sends the service as MessagingServiceSid, next to From when both are given [SDK
    # MessageList._create].
    from_, service = _check_sender(
        to,
        form.get("From", "").strip(),
        form.get("MessagingServiceSid", "").strip(),
        services or {},
        set(account_numbers),
    )
    _check_content(body, media_urls)
    if to in set(opted_out):
        raise ApiError(21610, "Attempt to send to unsubscribed recipient")
    return OutboundRequest(
        to,
        from_ or None,
        body,
        media_urls,
        form.get("StatusCallback") or None,
        messaging_service_sid=service or None,
    )


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


def message_resource(record: MessageRecord, account_sid: str) -> dict[str, Any]:
    """The MessageInstance JSON Twilio answers with."""
    uri = f"{account_path(account_sid)}/Messages/{record.sid}"
    # "For messages sent via a Messaging Service, num_segments is initially 0, since a sender
    # hasn't yet been assigned" [DOC message-resource, SDK MessageInstance docstring].
    unassigned = record.status == "accepted"
    segments = 0 if unassigned else count_segments(record.body, len(record.media))
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": record.body,
        "date_created": rfc2822(record.date_created),
        "date_sent": rfc2822(record.date_sent),
        "date_updated": rfc2822(record.date_updated),
        "direction": record.direction,
        "error_code": record.error_code,
        "error_message": record.error_message,
        "from": record.from_,
        "messaging_service_sid": record.messaging_service_sid,
        "num_media": str(len(record.media)),  # a string, as Twilio sends it [SDK]
        "num_segments": str(segments),
        "price": None,
        "price_unit": "USD",
        "sid": record.sid,
        "status": record.status,
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": record.to,
        "uri": f"{uri}.json",
    }


def media_resource(media: MediaRecord, message: MessageRecord, account_sid: str) -> dict[str, Any]:
    uri = f"{account_path(account_sid)}/Messages/{message.sid}/Media/{media.sid}.json"
    return {
        "account_sid": account_sid,
        "content_type": media.content_type,
        "date_created": rfc2822(media.date_created),
        "date_updated": rfc2822(media.date_created),
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
# Incoming messages: the webhook and its TwiML answer
# --------------------------------------------------------------------------------------------


def _notice(code: int | None, message: str) -> dict[str, Any]:
    """A problem Twilio would show in its debugger rather than answer to anyone."""
    return {"code": code, "message": message}


def incoming_params(record: MessageRecord, account_sid: str) -> dict[str, str]:
    """The incoming-message webhook form [DOC messaging/guides/webhook-request, note 3.1].

    Each media file is a pair of indexed fields, ``MediaUrl{N}`` and ``MediaContentType{N}``,
    N from 0 [DOC]; none is sent for a message without media.
    """
    params = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "Body": record.body,
        "From": record.from_ or "",
        "MessageSid": record.sid,
        "NumMedia": str(len(record.media)),
        "NumSegments": str(count_segments(record.body, len(record.media))),
        # Deprecated duplicates of MessageSid that Twilio still sends [DOC].
        "SmsMessageSid": record.sid,
        "SmsSid": record.sid,
        "SmsStatus": "received",
        "To": record.to,
    }
    if record.messaging_service_sid:  # only when the number is in a service [DOC]
        params["MessagingServiceSid"] = record.messaging_service_sid
    for index, item in enumerate(record.media):
        params[f"MediaUrl{index}"] = item.url
        params[f"MediaContentType{index}"] = item.content_type or ""
    return params


def media_url(base_url: str, account_sid: str, message_sid: str, media_sid: str) -> str:
    """Twilio's URL of a media file, on the stand-in at `base_url` [DOC media-resource]."""
    message_path = f"{account_path(account_sid)}/Messages/{message_sid}"
    return f"{base_url.rstrip('/')}{message_path}/Media/{media_sid}"


def _read_body(response: requests.Response) -> bytes:
    """The answer, cut after MAX_TWIML_BYTES + 1 bytes (enough to know it is too long)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=16 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_TWIML_BYTES:
            break
    return b"".join(chunks)[: MAX_TWIML_BYTES + 1]


def post_incoming_webhook(
    url: str, method: str, params: dict[str, str], auth_token: str
) -> WebhookAnswer:
    """Send the incoming-message webhook, signed like every Twilio webhook [DOC security].

    POST signs the URL plus the sorted form; GET puts the form in the query string and signs
    that URL alone, exactly as ``RequestValidator.compute_signature`` computes [SDK].
    """
    validator = RequestValidator(auth_token)
    headers = {"I-Twilio-Idempotency-Token": str(uuid.uuid4()), "User-Agent": "TwilioProxy/1.1"}
    data: dict[str, str] | None = params
    target = url
    if method == "GET":
        target = url + ("&" if "?" in url else "?") + urlencode(params)
        data = None
        headers["X-Twilio-Signature"] = validator.compute_signature(target, {})
    else:
        headers["X-Twilio-Signature"] = validator.compute_signature(url, params)
    try:
        with requests.request(
            method, target, data=data, headers=headers, timeout=WEBHOOK_TIMEOUT_S, stream=True
        ) as response:
            content_type = response.headers.get("Content-Type", "")
            return WebhookAnswer(response.status_code, content_type, _read_body(response))
    except requests.Timeout:
        return WebhookAnswer(None, failure=f"no answer within {WEBHOOK_TIMEOUT_S:g} s")
    except requests.RequestException as exc:
        return WebhookAnswer(None, failure=type(exc).__name__)


def _twiml_message(element: ET.Element) -> TwimlReply:
    """``<Message>text</Message>`` or ``<Message><Body/><Media/>...</Message>`` [DOC TwiML]."""
    bodies = [child.text or "" for child in element if child.tag == "Body"]
    text = "".join(bodies) if bodies else (element.text or "")
    media = [(child.text or "").strip() for child in element if child.tag == "Media"]
    # Surrounding whitespace (pretty-printed XML) is not sent [UNCONFIRMED].
    return TwimlReply(
        text.strip(), [url for url in media if url], element.get("to"), element.get("from")
    )


def parse_messaging_twiml(data: bytes) -> tuple[list[TwimlReply], list[dict[str, Any]]]:
    """The ``<Message>`` verbs of a messaging TwiML document, and notices for the rest."""
    try:
        # Our own functions' answer, at most 64 kB; the bundled expat (>= 2.4.1) refuses
        # entity-expansion bombs.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as exc:
        return [], [_notice(12100, f"Document parse failure: {exc}")]  # [DOC errors/12100]
    if root.tag != "Response":
        return [], [_notice(12102, "The root element must be Response")]  # [DOC errors/12102]
    replies: list[TwimlReply] = []
    notices: list[dict[str, Any]] = []
    for verb in root:
        # Message, Sms and Redirect are the valid verbs; any other is 14110 [DOC errors/14110].
        if verb.tag in ("Message", "Sms"):
            replies.append(_twiml_message(verb))
        elif verb.tag == "Redirect":
            notices.append(_notice(None, "<Redirect> is not emulated by the stand-in; ignored"))
        else:
            notices.append(_notice(14110, f"Invalid Verb for Message Reply: <{verb.tag}>"))
    return replies, notices


def read_twiml_answer(
    answer: WebhookAnswer, url: str
) -> tuple[list[TwimlReply], list[dict[str, Any]]]:
    """The replies a webhook answer asks for; none, with Twilio's error, when it is unusable."""
    if answer.status is None:  # 11200 "HTTP retrieval failure" [DOC errors/11200]
        return [], [_notice(11200, f"HTTP retrieval failure: {url} ({answer.failure})")]
    if not 200 <= answer.status < 300:
        return [], [_notice(11200, f"HTTP retrieval failure: {url} answered {answer.status}")]
    if len(answer.body) > MAX_TWIML_BYTES:
        return [], [_notice(11750, "TwiML response body too large")]  # [DOC errors/11750]
    if not answer.body.strip():
        # No reply either way: 204 acknowledges [3P: twilio/ai skills]; an empty 200 is logged
        # as 11200 [3P get-convex/twilio#9].
        notice = _notice(11200, f"HTTP retrieval failure: {url} answered an empty body")
        return [], [] if answer.status == 204 else [notice]
    content_type = _declared_type(answer.content_type)
    if content_type not in TWIML_TYPES:
        return [], [_notice(12300, f"Invalid Content-Type {content_type!r} from {url}")]
    return parse_messaging_twiml(answer.body)


# --------------------------------------------------------------------------------------------
# Media fetching and status callbacks (what Twilio does after accepting a message)
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


def _parse_when(name: str, value: str) -> date:
    """The UTC day a ``DateSent`` filter names.

    Twilio documents ``YYYY-MM-DD`` (GMT) [DOC message-resource, read filters]; the SDK always
    sends ``YYYY-MM-DDTHH:MM:SSZ``, also for a `date` (midnight) [SDK serialize.iso8601_datetime].
    Twilio accepts such values [3P twilio/twilio-oai#21] but compares days only: "it only cares
    about the Date part of the DateSent parameter" [3P twilio/twilio-java#432, re-filed by a
    Twilio maintainer as #501]; "Twilio doesn't offer more granular date filters" [3P
    saintpete/logrole#6]. An offset is taken into account by moving to UTC [UNCONFIRMED].
    """
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(20001, f"Invalid {name}: {value}") from exc
    return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).date()


def parse_list_query(args: MultiDict[str, str]) -> ListQuery:
    paging = parse_paging(args, ("To", "From", "DateSent", "DateSent<", "DateSent>"))
    query = ListQuery(paging.filters, paging.page, paging.page_size, paging.page_token)
    query.to = args.get("To")
    query.from_ = args.get("From")
    if "DateSent" in args:
        query.sent_on = _parse_when("DateSent", args["DateSent"])
    if "DateSent<" in args:
        query.sent_before = _parse_when("DateSent<", args["DateSent<"])
    if "DateSent>" in args:
        query.sent_after = _parse_when("DateSent>", args["DateSent>"])
    return query


def matches(record: MessageRecord, query: ListQuery) -> bool:
    """Apply the filters; ``DateSent<``/``DateSent>`` are whole days and inclusive (they mean
    "on or before" and "on or after" [DOC message-resource])."""
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
    day = sent.date()  # stored in UTC
    return (
        (query.sent_on is None or day == query.sent_on)
        and (query.sent_before is None or day <= query.sent_before)
        and (query.sent_after is None or day >= query.sent_after)
    )


def page_envelope(
    records: list[MessageRecord], query: ListQuery, path: str, account_sid: str
) -> dict[str, Any]:
    """One page of the newest-first message `records`."""
    window, fields = paging_2010([record.sid for record in records], query, path)
    shown = [message_resource(record, account_sid) for record in records[window]]
    return {"messages": shown, **fields}


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class MessageStore:
    """The account's messages, its STOP list and the deliveries under way."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        phone_numbers: Iterable[str],
        services: Mapping[str, tuple[str, ...]],
        outbox_dir: Path,
        media_max_bytes: int,
        media_fetch_timeout_s: float,
        closing: threading.Event,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token  # signs status callbacks and incoming-message webhooks
        self.phone_numbers = tuple(phone_numbers)  # the account's own numbers
        self.services = services  # Messaging Service SID -> sender pool
        self.outbox_dir = outbox_dir  # delivered messages are written here
        self.media_max_bytes = media_max_bytes
        self.media_fetch_timeout_s = media_fetch_timeout_s
        self.closing = closing  # set once the stand-in closes: no more status callbacks
        outbox_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards all state below and outbox writes
        self._messages: dict[str, MessageRecord] = {}
        self._opted_out: set[str] = set()
        self._seq = 0
        self._pending = 0
        self._idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        """True once no message is being delivered (media fetch, outbox, callbacks)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def reset(self) -> None:
        """Forget messages and the STOP list, and empty the outbox of our files."""
        with self._lock:
            self._messages.clear()
            self._opted_out.clear()
            for path in self.outbox_dir.iterdir():
                if _OUTBOX_FILE.fullmatch(path.name):
                    path.unlink(missing_ok=True)

    # --- STOP list -----------------------------------------------------------------------------

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

    # --- messages ------------------------------------------------------------------------------

    def service_of(self, number: str) -> str | None:
        """The Messaging Service whose pool holds `number`, if any."""
        return next((sid for sid, pool in self.services.items() if number in pool), None)

    def create(self, request: OutboundRequest) -> dict[str, Any]:
        """Store a message created through the REST API, start its delivery, return its JSON.

        With a Messaging Service it starts ``accepted``, else ``queued``; no status callback is
        sent for that first status [DOC guides/outbound-message-status-in-status-callbacks].
        """
        status = "accepted" if request.messaging_service_sid else "queued"
        return self._add_outbound(request, "outbound-api", status)

    def _add_outbound(
        self, request: OutboundRequest, direction: str, status: str
    ) -> dict[str, Any]:
        now = utc_now()
        prefix = "MM" if request.media_urls else "SM"
        media = [MediaRecord(sid=new_sid("ME"), url=url) for url in request.media_urls]
        with self._lock:
            self._seq += 1
            record = MessageRecord(
                sid=new_sid(prefix),
                seq=self._seq,
                to=request.to,
                from_=request.from_,
                body=request.body,
                status_callback=request.status_callback,
                media=media,
                date_created=now,
                date_updated=now,
                status=status,
                direction=direction,
                messaging_service_sid=request.messaging_service_sid,
            )
            self._messages[record.sid] = record
            resource = message_resource(record, self.account_sid)
        log.info("%s %s to %s with %d media", status, record.sid, record.to, len(media))
        self._start_delivery(record.sid)
        return resource

    def receive(
        self, incoming: IncomingMessage, base_url: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Store a message someone sent to our number; its JSON and its webhook form.

        It is a Message resource too, ``inbound`` and ``received``, dated when the webhook goes
        out [DOC message-resource; SDK MessageInstance docstring of date_sent]; ``MM…`` when it
        has media, each file a Media resource behind its media URL on `base_url`. STOP and
        START keywords update the STOP list first; Twilio still forwards them [DOC].
        """
        now = utc_now()
        from_, to, body = incoming.from_, incoming.to, incoming.body
        keyword = body.strip().upper()
        sid = new_sid("MM" if incoming.media else "SM")
        media: list[MediaRecord] = []
        for item in incoming.media:
            media_sid = new_sid("ME")
            url = media_url(base_url, self.account_sid, sid, media_sid)
            media.append(
                MediaRecord(
                    sid=media_sid,
                    url=url,
                    content_type=item.content_type,
                    size=len(item.data),
                    date_created=now,
                    data=item.data,
                )
            )
        with self._lock:
            self._seq += 1
            record = MessageRecord(
                sid=sid,
                seq=self._seq,
                to=to,
                from_=from_,
                body=body,
                status_callback=None,
                media=media,
                date_created=now,
                date_updated=now,
                date_sent=now,
                status="received",
                direction="inbound",
                messaging_service_sid=self.service_of(to),
            )
            self._messages[record.sid] = record
            if keyword in OPT_OUT_KEYWORDS:
                self._opted_out.add(from_)
            elif keyword in OPT_IN_KEYWORDS:
                self._opted_out.discard(from_)
            account_sid = self.account_sid
            return message_resource(record, account_sid), incoming_params(record, account_sid)

    def reply(
        self, sender: str, number: str, replies: list[TwimlReply]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Send the TwiML replies to `sender`'s message to our `number`: their resources, and
        notices for those Twilio would not send.

        Each ``<Message>`` becomes an ``outbound-reply`` Message, from our number to the sender
        unless its ``from``/``to`` attributes say otherwise [DOC message-resource, TwiML
        <Message>]. Replies start ``queued`` and get no status callback: TwiML names none
        unless ``action`` is set, which the stand-in ignores.
        """
        opted_out = self.opted_out()
        resources: list[dict[str, Any]] = []
        notices: list[dict[str, Any]] = []
        for item in replies:
            to, from_ = item.to or sender, item.from_ or number
            problem = self._reply_problem(to, from_, item, opted_out)
            if problem is not None:
                notices.append(problem)
                continue
            service = self.service_of(from_)  # [UNCONFIRMED] that a reply carries it
            request = OutboundRequest(to, from_, item.body, item.media_urls, None, service)
            resources.append(self._add_outbound(request, "outbound-reply", "queued"))
        return resources, notices

    def _reply_problem(
        self, to: str, from_: str, item: TwimlReply, opted_out: set[str]
    ) -> dict[str, Any] | None:
        try:
            _check_to(to)
        except ApiError as exc:  # 14101 Invalid "To" attribute [DOC errors/14101]
            return _notice(14101, f'Invalid "To" attribute: {exc.message}')
        try:
            _check_from(to, from_)
        except ApiError as exc:  # 14102 Invalid "From" attribute [DOC errors/14102]
            return _notice(14102, f'Invalid "From" attribute: {exc.message}')
        if from_ not in self.phone_numbers:
            return _notice(14102, f'Invalid "From" attribute: {from_} is not our number')
        try:
            # The create's checks; that TwiML replies get the same codes is [UNCONFIRMED].
            _check_content(item.body, item.media_urls)
        except ApiError as exc:
            return _notice(exc.code, exc.message)
        if to in opted_out:
            return _notice(21610, "Attempt to send to unsubscribed recipient")
        return None

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._messages.get(sid)
            return message_resource(record, self.account_sid) if record else None

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
            return [media_resource(item, record, self.account_sid) for item in fetched]

    def media_file(self, sid: str, media_sid: str) -> MediaRecord | None:
        with self._lock:
            record = self._messages.get(sid)
            items = record.media if record else []
            return next((item for item in items if item.sid == media_sid), None)

    def outbox(self) -> list[dict[str, Any]]:
        """What the account sent, replies included, oldest first (received messages are not
        outgoing mail; list them with ``GET Messages.json``)."""
        with self._lock:
            records = sorted(self._messages.values(), key=lambda record: record.seq)
            sent = [record for record in records if record.direction != "inbound"]
            return [outbox_entry(record, self.account_sid) for record in sent]

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
            accepted = record is not None and record.status == "accepted"
        if record is None:
            return
        if accepted:
            # The service has picked a sender: accepted -> queued, with a status callback, as
            # for every change after creation [DOC guides/outbound-message-status-in-status-
            # callbacks; the stored copy is cut before its Messaging Service part, so also
            # 3P somleng/somleng#977, a Twilio-compatible server doing the same].
            self._set_status(sid, "queued")
        try:
            fetched = fetch_all_media(urls, self.media_max_bytes, self.media_fetch_timeout_s)
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
            record.date_updated = utc_now()
            if status == "queued" and record.from_ is None and record.messaging_service_sid:
                # Twilio "selects the optimal sender from the Messaging Service's Sender Pool"
                # [SDK docstring of messaging_service_sid]; here: the pool's first number.
                record.from_ = self.services[record.messaging_service_sid][0]
            if status == "sent":
                record.date_sent = record.date_updated
            if error is not None:
                record.error_code, record.error_message = error.code, error.message
            if status == "delivered":
                self._write_record(record)
            params = self._callback_params(record)
            callback = record.status_callback
        if callback and is_http_url(callback) and not self.closing.is_set():
            post_status_callback(callback, params, self.auth_token)

    def _commit_delivery(self, sid: str, fetched: list[FetchedMedia]) -> None:
        """Write the media files; under the lock so that reset() cannot interleave."""
        with self._lock:
            record = self._messages.get(sid)
            if record is None:
                return
            for index, (item, got) in enumerate(zip(record.media, fetched, strict=True)):
                path = self.outbox_dir / f"{sid}-{index}.{IMAGE_TYPES[got.content_type]}"
                _write_atomic(path, got.data)
                item.content_type, item.size, item.path = got.content_type, len(got.data), path
                item.date_created = utc_now()

    def _write_record(self, record: MessageRecord) -> None:
        entry = outbox_entry(record, self.account_sid)
        path = self.outbox_dir / f"{record.sid}.json"
        _write_atomic(path, json.dumps(entry, indent=2).encode())

    def _callback_params(self, record: MessageRecord) -> dict[str, str]:
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": record.from_ or "",
            "MessageSid": record.sid,
            "MessageStatus": record.status,
            "SmsSid": record.sid,
            "SmsStatus": record.status,
            "To": record.to,
        }
        if record.messaging_service_sid:
            params["MessagingServiceSid"] = record.messaging_service_sid
        if record.error_code is not None:
            params["ErrorCode"] = str(record.error_code)
            params["ErrorMessage"] = record.error_message or ""
        return params


def deliver_incoming(
    messages: MessageStore,
    incoming: IncomingMessage,
    url: str | None,
    method: str,
    base_url: str,
) -> dict[str, Any]:
    """Someone texts (or sends pictures to) our number: Twilio's side of it, synchronously.

    Records the inbound message and its media (served on `base_url`, the stand-in's own URL);
    when the number has a messaging webhook (`url`, requested with `method`), sends it the
    signed incoming-message webhook and sends the TwiML answer's replies. Returns
    ``{inbound_sid, inbound, media_urls, webhook_url, webhook_status, twiml, replies,
    notices}``: `twiml` is the answer's body as text (None without an answer), `replies` the
    Message resources created, `notices` what Twilio's debugger would show.
    """
    inbound, params = messages.receive(incoming, base_url)
    result: dict[str, Any] = {
        "inbound_sid": inbound["sid"],
        "inbound": inbound,
        "media_urls": [params[f"MediaUrl{index}"] for index in range(len(incoming.media))],
        "webhook_url": url,
        "webhook_status": None,
        "twiml": None,
        "replies": [],
        "notices": [],
    }
    if url is None:  # no messaging webhook configured: Twilio only stores the message
        return result
    answer = post_incoming_webhook(url, method, params, messages.auth_token)
    replies, notices = read_twiml_answer(answer, url)
    created, refused = messages.reply(incoming.from_, incoming.to, replies)
    for notice in notices + refused:
        log.info("incoming %s: %s %s", inbound["sid"], notice["code"], notice["message"])
    result.update(
        webhook_status=answer.status,
        twiml=answer.body.decode(errors="replace") if answer.status is not None else None,
        replies=created,
        notices=notices + refused,
    )
    return result


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


api = flask.Blueprint(
    "twilio_messages", __name__, url_prefix=f"/{API_VERSION}/Accounts/<account_sid>"
)
_EXTENSION = "twilio.messages"


def init_app(app: flask.Flask, messages: MessageStore) -> None:
    """Serve the Messages API from `app`, on `messages`.

    The app checks credentials, and may answer a create with an injected fault, before these
    views run (see devstack.twilio).
    """
    app.extensions[_EXTENSION] = messages
    app.register_blueprint(api)


def _messages() -> MessageStore:
    messages: MessageStore = flask.current_app.extensions[_EXTENSION]
    return messages


@api.post("/Messages.json")
def create_message(account_sid: str) -> flask.Response:
    messages = _messages()
    request = validate_create(
        flask.request.form, messages.opted_out(), messages.services, messages.phone_numbers
    )
    return json_response(messages.create(request), 201)


# The endpoint devstack.twilio injects its faults into.
CREATE_ENDPOINT = f"{api.name}.{create_message.__name__}"


@api.get("/Messages.json")
def list_messages(account_sid: str) -> flask.Response:
    messages = _messages()
    query = parse_list_query(flask.request.args)
    records = messages.newest_first(query)
    envelope = page_envelope(records, query, flask.request.path, messages.account_sid)
    return json_response(envelope)


@api.get("/Messages/<name>")
def fetch_message(account_sid: str, name: str) -> flask.Response:
    resource = _messages().get(strip_json(name))
    if resource is None:
        raise not_found()
    return json_response(resource)


@api.get("/Messages/<sid>/Media.json")
def list_media(account_sid: str, sid: str) -> flask.Response:
    media = _messages().media_of(sid)
    if media is None:
        raise not_found()
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
    return json_response(envelope)


@api.get("/Messages/<sid>/Media/<name>")
def fetch_media_item(account_sid: str, sid: str, name: str) -> flask.Response:
    """``<ME>.json`` is the media resource; ``<ME>`` alone is the file itself, as on Twilio."""
    messages = _messages()
    item = messages.media_file(sid, name.removesuffix(".json"))
    if item is None or item.content_type is None:
        raise not_found()
    if name.endswith(".json"):
        media = messages.media_of(sid) or []
        return json_response(next(entry for entry in media if entry["sid"] == item.sid))
    if item.data is not None:  # a file someone sent us, kept in memory
        return flask.Response(item.data, content_type=item.content_type)
    if item.path is None or not item.path.exists():
        raise not_found()
    return flask.send_file(item.path, mimetype=item.content_type)
