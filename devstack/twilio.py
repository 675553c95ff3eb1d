"""Local stand-in for the Twilio REST APIs this project uses, good enough for the real SDK.

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
* Messaging Services (``TwilioConfig.messaging_services``, by default one service,
  :data:`DEFAULT_MESSAGING_SERVICE_SID`, holding every configured number): a create with
  ``MessagingServiceSid`` starts ``accepted``, takes a sender from the service's pool when it
  names no ``From``, then goes ``queued`` -> ``sent`` -> ``delivered``.
* Incoming messages (``POST /__dev/incoming``): the inbound Message (``inbound``/``received``),
  the signed incoming-message webhook to the number's ``sms_url``, and one ``outbound-reply``
  Message per ``<Message>`` of the TwiML answer.
* ``GET`` of one message, of the message list (filters and paging the SDK sends), of media.
* Studio Flows v2 (``studio.twilio.com/v2/Flows``): validate, create, list, fetch, update,
  delete. Definitions are checked with :func:`devstack.studio_runner.check_flow`; a failing one
  gets 81022 with ``details.errors[]`` (``message``, ``property_path``), as Studio answers.
* Incoming phone numbers (``.../IncomingPhoneNumbers``): list (``PhoneNumber``/``FriendlyName``
  filters), fetch and update of the numbers in ``TwilioConfig.phone_numbers``; this is how a
  number's voice and messaging webhooks are pointed at a Studio flow.
* The Messaging Services API (``messaging.twilio.com/v1/Services``): fetch a service and list
  its sender pool (``/v1/Services/<MG…>/PhoneNumbers``), read-only, for ``deploy.sh doctor``.
* Dev-only JSON control endpoints under ``/__dev/`` (no auth): outbox, STOP list, fault
  injection, wait-idle, reset, numbers, flows, incoming messages.

Chosen where Twilio's behaviour was not pinned down (see the project's Twilio notes):

* Media larger than ``media_max_bytes`` in total fails with 11751 ("Media exceeds messaging
  provider size limit"), the code Twilio documents for an MMS over its 5 MB channel limit.
* Media files in the outbox are numbered from 0, like Twilio's ``MediaUrl{N}`` webhook fields.
* A path account SID other than the configured one is answered like bad credentials (401/20003).
* Status callbacks carry ``ErrorCode``/``ErrorMessage`` only when there is an error, as Twilio's do.
* Fault responses for 5xx use codes 20500/20503 and, for stand-in-only cases, 20502/20504.
* A missing required parameter is 20001 ("Missing required parameter X in the post body").
* Flows: an invalid ``Status`` is 81022 too (``property_path`` ``Status``); a flow's revision
  goes up only when its definition or status changes, and its commit message is that of the
  latest revision. Lists come in creation order and, as on Twilio, without ``definition``,
  ``valid``, ``errors`` and ``warnings`` (fetch one flow for those).
* Numbers: SIDs are derived from account and number, so they survive restarts and resets;
  reset restores the start state (empty URLs). A bad URL is 21402, a bad method 21403 (the codes
  Twilio documents for number configuration); ``PhoneNumber`` matches a part of the number with
  ``*`` for any digit, ``FriendlyName`` matches exactly.
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
  created). Inbound media is not emulated (``NumMedia`` is ``0``). The outbox shows outbound
  messages only.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
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

from devstack.studio_runner import check_flow

log = logging.getLogger(__name__)

DEV_ACCOUNT_SID = "AC0d5e7a11c0ffee0000d15ea5e0000001"
DEV_AUTH_TOKEN = "d3adbeefd3adbeefd3adbeefd3adbeef"

API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
MAX_MEDIA = 10
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
CALLBACK_TIMEOUT_S = 5.0

STUDIO_BASE_URL = "https://studio.twilio.com"
WEBHOOKS_BASE_URL = "https://webhooks.twilio.com"
MESSAGING_BASE_URL = "https://messaging.twilio.com"
FLOW_STATUSES = ("draft", "published")
FLOW_INVALID_CODE = 81022
DEFAULT_PHONE_NUMBERS = ("+15005550006",)  # Twilio's magic "valid and available" test number
# The one Messaging Service the stand-in has unless configured otherwise; fixed so that settings
# and tests can name it.
DEFAULT_MESSAGING_SERVICE_SID = "MG0d5e7a11c0ffee0000d15ea5e0000001"

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
FAULT_KINDS = ("500", "503", "timeout", "21610", "21211", "20429", "reset")

_E164 = re.compile(r"\+[1-9]\d{7,14}")
_WHATSAPP = "whatsapp:"
# A Messaging Service SID; anything else in MessagingServiceSid is 21705 [DOC errors/21705].
_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
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
    phone_numbers: tuple[str, ...] = DEFAULT_PHONE_NUMBERS  # the account's incoming numbers
    # The account's Messaging Services: SID -> sender pool (numbers of `phone_numbers`, each in
    # one service at most, as on Twilio). None: DEFAULT_MESSAGING_SERVICE_SID with every number.
    messaging_services: Mapping[str, tuple[str, ...]] | None = None


class ApiError(Exception):
    """A Twilio REST error; rendered as ``{code, message, more_info, status[, details]}``."""

    def __init__(
        self, code: int, message: str, status: int = 400, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details

    def body(self) -> dict[str, Any]:
        # No "type"/"title" keys: with those the SDK would raise TwilioServiceException instead.
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _missing(name: str) -> ApiError:
    return ApiError(20001, f"Missing required parameter {name} in the post body")


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
class Paging:
    """Paging of a list request, and its filters as sent (echoed into the paging URIs)."""

    filters: list[tuple[str, str]]
    page: int = 0
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str | None = None


@dataclass
class ListQuery(Paging):
    """Filters and paging of a message list request (names as the SDK sends them)."""

    to: str | None = None
    from_: str | None = None
    sent_on: date | None = None
    sent_before: date | None = None
    sent_after: date | None = None


@dataclass
class FlowRecord:
    """A Studio flow; `definition` is the parsed JSON object."""

    sid: str
    friendly_name: str
    definition: dict[str, Any]
    status: str
    commit_message: str | None
    author_sid: str | None
    date_created: datetime
    date_updated: datetime
    revision: int = 1


@dataclass
class FlowChange:
    """A validated flow update; None leaves a field as it is (Status is always given)."""

    status: str
    definition: dict[str, Any] | None = None
    friendly_name: str | None = None
    commit_message: str | None = None
    author_sid: str | None = None


@dataclass
class NumberRecord:
    sid: str
    phone_number: str
    settings: dict[str, Any]  # the writable resource fields, keyed by their JSON names
    date_created: datetime
    date_updated: datetime


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _rfc2822(value: datetime | None) -> str | None:
    return format_datetime(value) if value is not None else None


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _iso8601(value: datetime) -> str:
    """Studio v2 dates: ``2017-11-06T12:00:00Z`` (the SDK parses exactly this form)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# Validation of a create request
# --------------------------------------------------------------------------------------------


def _is_address(value: str) -> bool:
    return _E164.fullmatch(value.removeprefix(_WHATSAPP)) is not None


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


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


def _check_addresses(to: str, from_: str) -> None:
    _check_to(to)
    _check_from(to, from_)


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
    if service and _SERVICE_SID.fullmatch(service) is None:
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
    if not all(_is_http_url(url) for url in media_urls):
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


def _account_path(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}"


def message_resource(record: MessageRecord, account_sid: str) -> dict[str, Any]:
    """The MessageInstance JSON Twilio answers with."""
    uri = f"{_account_path(account_sid)}/Messages/{record.sid}"
    # "For messages sent via a Messaging Service, num_segments is initially 0, since a sender
    # hasn't yet been assigned" [DOC message-resource, SDK MessageInstance docstring].
    unassigned = record.status == "accepted"
    segments = 0 if unassigned else count_segments(record.body, len(record.media))
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": record.body,
        "date_created": _rfc2822(record.date_created),
        "date_sent": _rfc2822(record.date_sent),
        "date_updated": _rfc2822(record.date_updated),
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
# Studio flows: checks of a request and JSON shapes
# --------------------------------------------------------------------------------------------

# check_flow quotes names with repr(): either quote style, with backslash escapes.
_QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_STATE_AT = re.compile(r"states\[(\d+)\]")
_WIDGET_NAMED = re.compile(rf"widget {_QUOTED}")
_TRANSITION_AT = re.compile(r"transitions\[(\d+)\]")
_TRANSITION_OF = re.compile(rf"transition {_QUOTED}")
_PROPERTY_NAMED = re.compile(rf"property {_QUOTED}")
_TOP_LEVEL_KEY = re.compile(rf"(?:unexpected top-level key )?{_QUOTED}")


def _pointer(*parts: object) -> str:
    """A JSON pointer into the definition, written like Studio's ``#/states/3/properties/url``."""
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in parts)
    return "/".join(("#", *escaped))


def _index_of(items: Any, key: str, value: str) -> int | None:
    """Index of the first object in the list `items` whose `key` is `value`."""
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get(key) == value:
            return index
    return None


def _widget_path(problem: str, match: re.Match[str], definition: Any) -> str:
    states = definition.get("states") if isinstance(definition, dict) else None
    index = _index_of(states, "name", ast.literal_eval(match[1]))
    if index is None:
        return _pointer("states")
    if transition := _TRANSITION_AT.search(problem, match.end()):
        return _pointer("states", index, "transitions", transition[1])
    if event := _TRANSITION_OF.search(problem, match.end()):
        transitions = states[index].get("transitions") if isinstance(states, list) else None
        position = _index_of(transitions, "event", ast.literal_eval(event[1]))
        if position is not None:
            return _pointer("states", index, "transitions", position)
    if prop := _PROPERTY_NAMED.search(problem, match.end()):
        return _pointer("states", index, "properties", ast.literal_eval(prop[1]))
    return _pointer("states", index)


def property_path(problem: str, definition: Any) -> str:
    """Where in `definition` a :func:`check_flow` problem lies, as a JSON pointer.

    check_flow reports readable lines, not paths; their wording is regular enough to map back
    (``states[2] ...``, ``widget 'Gather' (...): property 'hints' ...``, ``'flags' must ...``).
    """
    if problem.startswith(("duplicate widget name", "more than one trigger")):
        return _pointer("states")
    if problem.startswith("initial_state "):
        return _pointer("initial_state")
    if match := _STATE_AT.match(problem):
        return _pointer("states", match[1])
    if match := _WIDGET_NAMED.match(problem):
        return _widget_path(problem, match, definition)
    if match := _TOP_LEVEL_KEY.match(problem):
        return _pointer(ast.literal_eval(match[1]))
    return "#"


def _flow_invalid(errors: list[dict[str, str]]) -> ApiError:
    details = {"errors": errors}
    return ApiError(FLOW_INVALID_CODE, "Flow definition validation failed", details=details)


def parse_definition(raw: str) -> dict[str, Any]:
    """The parsed ``Definition`` parameter; 81022 listing every problem when it is no valid flow."""
    try:
        definition = json.loads(raw)
    except ValueError as exc:
        message = f"Definition is not valid JSON: {exc}"
        raise _flow_invalid([{"message": message, "property_path": "#"}]) from exc
    problems = check_flow(definition)
    if problems or not isinstance(definition, dict):  # check_flow reports any non-object
        paths = [property_path(problem, definition) for problem in problems]
        errors = [{"message": m, "property_path": p} for m, p in zip(problems, paths, strict=True)]
        raise _flow_invalid(errors)
    return definition


def _flow_status(status: str) -> str:
    if status not in FLOW_STATUSES:
        message = f"Status must be one of {', '.join(FLOW_STATUSES)}, not {status!r}"
        raise _flow_invalid([{"message": message, "property_path": "Status"}])
    return status


def parse_new_flow(form: MultiDict[str, str]) -> FlowRecord:
    """A new flow from a create or Validate form; raise `ApiError` on the first problem."""
    for name in ("FriendlyName", "Status", "Definition"):
        if not form.get(name):
            raise _missing(name)
    status = _flow_status(form["Status"])
    definition = parse_definition(form["Definition"])
    now = _now()
    return FlowRecord(
        sid=_new_sid("FW"),
        friendly_name=form["FriendlyName"],
        definition=definition,
        status=status,
        commit_message=form.get("CommitMessage") or None,
        author_sid=form.get("AuthorSid") or None,
        date_created=now,
        date_updated=now,
    )


def parse_flow_change(form: MultiDict[str, str]) -> FlowChange:
    """An update form: ``Status`` is required; a ``Definition`` replaces the whole definition."""
    if not form.get("Status"):
        raise _missing("Status")
    status = _flow_status(form["Status"])
    raw = form.get("Definition")
    return FlowChange(
        status=status,
        definition=parse_definition(raw) if raw is not None else None,
        friendly_name=form.get("FriendlyName") or None,
        commit_message=form.get("CommitMessage") or None,
        author_sid=form.get("AuthorSid") or None,
    )


def apply_flow_change(record: FlowRecord, change: FlowChange, now: datetime) -> None:
    """Update `record`; a new revision only when the definition or the status changes.

    A deploy script re-sending the same flow must not pile up revisions (nor appear to change).
    """
    definition = record.definition if change.definition is None else change.definition
    if definition != record.definition or change.status != record.status:
        record.revision += 1
        record.definition, record.status = definition, change.status
        record.commit_message = change.commit_message  # it describes this revision
        record.author_sid = change.author_sid or record.author_sid
        record.date_updated = now
    if change.friendly_name is not None and change.friendly_name != record.friendly_name:
        record.friendly_name = change.friendly_name
        record.date_updated = now


def flow_webhook_url(account_sid: str, flow_sid: str) -> str:
    """The URL that starts the flow; a number's voice and SMS URLs are set to it."""
    return f"{WEBHOOKS_BASE_URL}/v1/Accounts/{account_sid}/Flows/{flow_sid}"


def flow_resource(record: FlowRecord, account_sid: str, *, listed: bool = False) -> dict[str, Any]:
    """The FlowInstance JSON; a list item lacks the definition and its checks, as on Twilio."""
    url = f"{STUDIO_BASE_URL}/v2/Flows/{record.sid}"
    links = {"test_users": "TestUsers", "revisions": "Revisions", "executions": "Executions"}
    return {
        "sid": record.sid,
        "account_sid": account_sid,
        "author_sid": record.author_sid,
        "friendly_name": record.friendly_name,
        "definition": None if listed else record.definition,
        "status": record.status,
        "revision": record.revision,
        "commit_message": record.commit_message,
        "valid": None if listed else True,  # an invalid definition is never stored
        "errors": None if listed else [],
        "warnings": None if listed else [],
        "date_created": _iso8601(record.date_created),
        "date_updated": _iso8601(record.date_updated),
        "webhook_url": flow_webhook_url(account_sid, record.sid),
        "url": url,
        "links": {name: f"{url}/{path}" for name, path in links.items()},
    }


# --------------------------------------------------------------------------------------------
# Incoming phone numbers: checks of an update and JSON shape
# --------------------------------------------------------------------------------------------

# Writable fields of a number: form parameter -> (JSON field, kind of value).
_NUMBER_PARAMS: dict[str, tuple[str, str]] = {
    "FriendlyName": ("friendly_name", "text"),
    "ApiVersion": ("api_version", "text"),
    "VoiceUrl": ("voice_url", "url"),
    "VoiceMethod": ("voice_method", "method"),
    "VoiceFallbackUrl": ("voice_fallback_url", "url"),
    "VoiceFallbackMethod": ("voice_fallback_method", "method"),
    "VoiceApplicationSid": ("voice_application_sid", "text"),
    "VoiceCallerIdLookup": ("voice_caller_id_lookup", "bool"),
    "VoiceReceiveMode": ("voice_receive_mode", "text"),
    "SmsUrl": ("sms_url", "url"),
    "SmsMethod": ("sms_method", "method"),
    "SmsFallbackUrl": ("sms_fallback_url", "url"),
    "SmsFallbackMethod": ("sms_fallback_method", "method"),
    "SmsApplicationSid": ("sms_application_sid", "text"),
    "StatusCallback": ("status_callback", "url"),
    "StatusCallbackMethod": ("status_callback_method", "method"),
    "TrunkSid": ("trunk_sid", "text"),
    "IdentitySid": ("identity_sid", "text"),
    "AddressSid": ("address_sid", "text"),
    "BundleSid": ("bundle_sid", "text"),
    "EmergencyStatus": ("emergency_status", "text"),
    "EmergencyAddressSid": ("emergency_address_sid", "text"),
}
# A number as bought: no webhooks, Twilio's default methods.
_NUMBER_DEFAULTS: dict[str, Any] = {
    "api_version": API_VERSION,
    "voice_url": "",
    "voice_method": "POST",
    "voice_fallback_url": "",
    "voice_fallback_method": "POST",
    "voice_application_sid": "",
    "voice_caller_id_lookup": False,
    "voice_receive_mode": "voice",
    "sms_url": "",
    "sms_method": "POST",
    "sms_fallback_url": "",
    "sms_fallback_method": "POST",
    "sms_application_sid": "",
    "status_callback": "",
    "status_callback_method": "POST",
    "trunk_sid": None,
    "identity_sid": None,
    "address_sid": None,
    "bundle_sid": None,
    "emergency_status": "Inactive",
    "emergency_address_sid": None,
}


def _number_sid(account_sid: str, phone_number: str) -> str:
    # Derived, not random: a SID noted once keeps working across stand-in restarts and resets.
    return "PN" + hashlib.sha256(f"{account_sid}:{phone_number}".encode()).hexdigest()[:32]


def _display_number(phone_number: str) -> str:
    """Twilio's default friendly name: ``(500) 555-0006`` for a +1 number, else as given."""
    digits = phone_number.removeprefix("+1")
    if phone_number.startswith("+1") and len(digits) == 10:
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    return phone_number


def new_number(account_sid: str, phone_number: str, now: datetime) -> NumberRecord:
    if _E164.fullmatch(phone_number) is None:
        raise ValueError(f"TwilioConfig.phone_numbers: {phone_number!r} is not E.164")
    settings = {**_NUMBER_DEFAULTS, "friendly_name": _display_number(phone_number)}
    return NumberRecord(_number_sid(account_sid, phone_number), phone_number, settings, now, now)


def _number_value(param: str, kind: str, raw: str) -> Any:
    if kind == "url" and raw and not _is_http_url(raw):  # "" clears a URL
        raise ApiError(21402, f"{param} is not a valid URL: {raw}")
    if kind == "method":
        if raw.upper() not in ("GET", "POST"):
            raise ApiError(21403, f"{param} must be GET or POST, not {raw!r}")
        return raw.upper()
    if kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise ApiError(20001, f"Invalid {param}: {raw}")
        return raw.lower() == "true"
    return raw


def parse_number_update(form: MultiDict[str, str], account_sid: str) -> dict[str, Any]:
    """The fields an update sets, all checked before any is applied; unknown parameters are
    ignored, as Twilio does."""
    # AccountSid on update moves the number to another (sub)account; the stand-in has one.
    if form.get("AccountSid", account_sid) != account_sid:
        raise ApiError(20001, "Numbers cannot move to another account in the stand-in")
    return {
        field: _number_value(param, kind, form[param])
        for param, (field, kind) in _NUMBER_PARAMS.items()
        if param in form
    }


def number_matches(
    record: NumberRecord, phone_number: str | None, friendly_name: str | None, origin: str | None
) -> bool:
    """The list filters: ``PhoneNumber`` is any part of the number, ``*`` standing for a digit."""
    if phone_number is not None:
        pattern = re.escape(phone_number).replace(r"\*", r"\d")
        if re.search(pattern, record.phone_number) is None:
            return False
    if friendly_name is not None and record.settings["friendly_name"] != friendly_name:
        return False
    return origin is None or origin == "twilio"  # all the stand-in's numbers are Twilio's own


def number_resource(record: NumberRecord, account_sid: str) -> dict[str, Any]:
    """The IncomingPhoneNumberInstance JSON Twilio answers with."""
    uri = f"{_account_path(account_sid)}/IncomingPhoneNumbers/{record.sid}"
    return {
        "account_sid": account_sid,
        "address_requirements": "none",
        "beta": False,
        "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
        "date_created": _rfc2822(record.date_created),
        "date_updated": _rfc2822(record.date_updated),
        "emergency_address_status": "unregistered",
        "origin": "twilio",
        "phone_number": record.phone_number,
        "sid": record.sid,
        "status": "in-use",
        "subresource_uris": {"assigned_add_ons": f"{uri}/AssignedAddOns.json"},
        "type": "local",
        "uri": f"{uri}.json",
        **record.settings,
    }


# --------------------------------------------------------------------------------------------
# Messaging Services and incoming messages
# --------------------------------------------------------------------------------------------


def service_resource(sid: str, account_sid: str, created: datetime) -> dict[str, Any]:
    """The Messaging Service JSON (``GET /v1/Services/<sid>``) [DOC messaging/api/service-resource;
    SDK messaging/v1/service/__init__.py]: the fields the SDK reads, with Twilio's defaults for
    a service made in the Console. Values of `usecase` other than "undeclared" are [UNCONFIRMED]."""
    url = f"{MESSAGING_BASE_URL}/v1/Services/{sid}"
    return {
        "account_sid": account_sid,
        "sid": sid,
        "friendly_name": "Picture Line senders",
        "date_created": _iso8601(created),
        "date_updated": _iso8601(created),
        "inbound_request_url": None,
        "inbound_method": "POST",
        "fallback_url": None,
        "fallback_method": "POST",
        "status_callback": None,
        "sticky_sender": True,
        "mms_converter": True,
        "smart_encoding": True,
        "scan_message_content": "inherit",
        "fallback_to_long_code": True,
        "area_code_geomatch": True,
        "synchronous_validation": False,
        "validity_period": 14400,
        "url": url,
        "links": {
            "phone_numbers": f"{url}/PhoneNumbers",
            "short_codes": f"{url}/ShortCodes",
            "alpha_senders": f"{url}/AlphaSenders",
        },
        "usecase": "undeclared",
        "us_app_to_person_registered": False,
        "use_inbound_webhook_on_number": True,
    }


def service_number_resource(
    service_sid: str, account_sid: str, phone_number: str, created: datetime
) -> dict[str, Any]:
    """One sender of a Messaging Service (``/v1/Services/<sid>/PhoneNumbers``) [DOC
    messaging/api/phonenumber-resource]. Its SID is the incoming number's PN SID (a number is
    added to a service by that SID) [DOC]; `capabilities` is a list of strings [SDK], whose exact
    values are [UNCONFIRMED]."""
    sid = _number_sid(account_sid, phone_number)
    return {
        "sid": sid,
        "account_sid": account_sid,
        "service_sid": service_sid,
        "date_created": _iso8601(created),
        "date_updated": _iso8601(created),
        "phone_number": phone_number,
        "country_code": "US" if phone_number.startswith("+1") else None,
        "capabilities": ["SMS", "MMS", "Voice"],
        "url": f"{MESSAGING_BASE_URL}/v1/Services/{service_sid}/PhoneNumbers/{sid}",
    }


def resolve_services(config: TwilioConfig) -> dict[str, tuple[str, ...]]:
    """The account's Messaging Services (SID -> sender pool); ValueError for a bad config."""
    if config.messaging_services is None:
        numbers = tuple(config.phone_numbers)
        return {DEFAULT_MESSAGING_SERVICE_SID: numbers} if numbers else {}
    services = {sid: tuple(pool) for sid, pool in config.messaging_services.items()}
    owner: dict[str, str] = {}
    for sid, pool in services.items():
        where = f"TwilioConfig.messaging_services[{sid!r}]"
        if _SERVICE_SID.fullmatch(sid) is None:
            raise ValueError(f"{where}: a SID is MG and 32 hex digits")
        if not pool:
            raise ValueError(f"{where}: a service needs at least one sender")
        for number in pool:
            if number not in config.phone_numbers:
                raise ValueError(f"{where}: {number!r} is not in TwilioConfig.phone_numbers")
            if number in owner:
                # A number belongs to one Messaging Service at a time [DOC errors/21712].
                raise ValueError(f"{where}: {number!r} is already in {owner[number]}")
            owner[number] = sid
    return services


def _notice(code: int | None, message: str) -> dict[str, Any]:
    """A problem Twilio would show in its debugger rather than answer to anyone."""
    return {"code": code, "message": message}


def incoming_params(record: MessageRecord, account_sid: str) -> dict[str, str]:
    """The incoming-message webhook form [DOC messaging/guides/webhook-request, note 3.1]."""
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
    return params


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


def is_twilio_url(url: str) -> bool:
    """A URL on twilio.com, such as a Studio flow's webhook: never requested from here."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "twilio.com" or host.endswith(".twilio.com")


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


def _parse_page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(20001, f"Invalid PageSize: {raw}")
    return min(int(raw), MAX_PAGE_SIZE)


def parse_paging(args: MultiDict[str, str], filter_names: Iterable[str] = ()) -> Paging:
    page = args.get("Page", "0")
    return Paging(
        filters=[(name, args[name]) for name in filter_names if name in args],
        page=int(page) if page.isdigit() else 0,
        page_size=_parse_page_size(args.get("PageSize")),
        page_token=args.get("PageToken") or None,
    )


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


def _page_start(sids: list[str], query: Paging) -> tuple[int, int]:
    """Start and end (exclusive) indexes of the page in the listed `sids`.

    Page tokens are cursors, like Twilio's: ``PA<sid>`` = the page after that record,
    ``PB<sid>`` = the page before it. New records arriving between pages then neither repeat
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


def _page_uri(path: str, query: Paging, page: int, token: str | None) -> str:
    pairs = [*query.filters, ("PageSize", str(query.page_size)), ("Page", str(page))]
    if token:
        pairs.append(("PageToken", token))
    return f"{path}?{urlencode(pairs)}"


def _neighbour_uris(
    sids: list[str], start: int, end: int, query: Paging, path: str
) -> tuple[str | None, str | None]:
    """URIs of the next and previous page (None at either end) of ``sids[start:end]``."""
    shown = sids[start:end]
    next_uri = None
    if shown and end < len(sids):
        next_uri = _page_uri(path, query, query.page + 1, "PA" + shown[-1])
    previous_uri = None
    if shown and start > 0:
        previous_uri = _page_uri(path, query, max(0, query.page - 1), "PB" + shown[0])
    return next_uri, previous_uri


def _paging_2010(sids: list[str], query: Paging, path: str) -> tuple[slice, dict[str, Any]]:
    """The page's slice of the listed `sids` and the 2010-04-01 paging fields (relative URIs)."""
    start, end = _page_start(sids, query)
    shown = len(sids[start:end])
    next_uri, previous_uri = _neighbour_uris(sids, start, end, query, path)
    fields = {
        "page": query.page,
        "page_size": query.page_size,
        "start": start,
        "end": start + max(0, shown - 1),
        "uri": _page_uri(path, query, query.page, query.page_token),
        "first_page_uri": _page_uri(path, query, 0, None),
        "next_page_uri": next_uri,
        "previous_page_uri": previous_uri,
    }
    return slice(start, end), fields


def page_envelope(
    records: list[MessageRecord], query: ListQuery, path: str, account_sid: str
) -> dict[str, Any]:
    """One page of the newest-first message `records`."""
    window, fields = _paging_2010([record.sid for record in records], query, path)
    shown = [message_resource(record, account_sid) for record in records[window]]
    return {"messages": shown, **fields}


def envelope_2010(
    key: str, resources: list[dict[str, Any]], query: Paging, path: str
) -> dict[str, Any]:
    """One page of all listed `resources` in the 2010-04-01 envelope, under `key`."""
    window, fields = _paging_2010([resource["sid"] for resource in resources], query, path)
    return {key: resources[window], **fields}


def envelope_v2(
    key: str, resources: list[dict[str, Any]], query: Paging, url: str
) -> dict[str, Any]:
    """One page in the envelope of the newer APIs (Studio v2): ``meta`` with absolute URLs.

    The SDK finds the records through ``meta.key`` and follows ``meta.next_page_url`` as is.
    """
    sids = [resource["sid"] for resource in resources]
    start, end = _page_start(sids, query)
    next_url, previous_url = _neighbour_uris(sids, start, end, query, url)
    meta = {
        "key": key,
        "page": query.page,
        "page_size": query.page_size,
        "url": _page_uri(url, query, query.page, query.page_token),
        "first_page_url": _page_uri(url, query, 0, None),
        "next_page_url": next_url,
        "previous_page_url": previous_url,
    }
    return {key: resources[start:end], "meta": meta}


# --------------------------------------------------------------------------------------------
# Emulator state
# --------------------------------------------------------------------------------------------


class FlowStore:
    """The account's Studio flows, in creation order."""

    def __init__(self, account_sid: str) -> None:
        self.account_sid = account_sid
        self._lock = threading.Lock()
        self._flows: dict[str, FlowRecord] = {}

    def reset(self) -> None:
        with self._lock:
            self._flows.clear()

    def add(self, record: FlowRecord) -> dict[str, Any]:
        with self._lock:
            self._flows[record.sid] = record
            log.info("created flow %s %r", record.sid, record.friendly_name)
            return flow_resource(record, self.account_sid)

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._flows.get(sid)
            return flow_resource(record, self.account_sid) if record else None

    def update(self, sid: str, change: FlowChange) -> dict[str, Any] | None:
        with self._lock:
            record = self._flows.get(sid)
            if record is None:
                return None
            apply_flow_change(record, change, _now())
            return flow_resource(record, self.account_sid)

    def delete(self, sid: str) -> bool:
        with self._lock:
            return self._flows.pop(sid, None) is not None

    def listed(self) -> list[dict[str, Any]]:
        """What ``GET /v2/Flows`` shows of each flow."""
        with self._lock:
            return [
                flow_resource(item, self.account_sid, listed=True) for item in self._flows.values()
            ]

    def complete(self) -> list[dict[str, Any]]:
        """Every flow with its definition (for ``/__dev/flows``)."""
        with self._lock:
            return [flow_resource(item, self.account_sid) for item in self._flows.values()]


class NumberStore:
    """The account's incoming phone numbers: those of ``TwilioConfig.phone_numbers``."""

    def __init__(self, account_sid: str, phone_numbers: Iterable[str]) -> None:
        self.account_sid = account_sid
        self._phone_numbers = tuple(phone_numbers)
        self._lock = threading.Lock()
        self._numbers: dict[str, NumberRecord] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the numbers as configured, with no webhooks."""
        now = _now()
        fresh = [new_number(self.account_sid, number, now) for number in self._phone_numbers]
        with self._lock:
            self._numbers = {record.sid: record for record in fresh}

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._numbers.get(sid)
            return number_resource(record, self.account_sid) if record else None

    def settings_of(self, phone_number: str) -> dict[str, Any] | None:
        """The current webhook settings of one of the account's numbers (a copy)."""
        with self._lock:
            found = (r for r in self._numbers.values() if r.phone_number == phone_number)
            record = next(found, None)
            return dict(record.settings) if record else None

    def update(self, sid: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            record = self._numbers.get(sid)
            if record is None:
                return None
            record.settings.update(settings)
            record.date_updated = _now()
            log.info("updated number %s: %s", record.phone_number, sorted(settings))
            return number_resource(record, self.account_sid)

    def listed(
        self,
        phone_number: str | None = None,
        friendly_name: str | None = None,
        origin: str | None = None,
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                number_resource(record, self.account_sid)
                for record in self._numbers.values()
                if number_matches(record, phone_number, friendly_name, origin)
            ]


class TwilioEmulator:
    """State of one stand-in (messages, STOP list, faults, flows, numbers, Messaging Services);
    lives at ``app.extensions["twilio"]``."""

    def __init__(self, config: TwilioConfig) -> None:
        self.config = config
        config.outbox_dir.mkdir(parents=True, exist_ok=True)
        self.flows = FlowStore(config.account_sid)
        self.numbers = NumberStore(config.account_sid, config.phone_numbers)  # checks E.164
        self.services = resolve_services(config)  # fixed for the stand-in's life
        self.services_created = _now()
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
        """Forget messages, STOP list, faults and flows, empty the outbox of our files, and put
        the numbers back as configured."""
        self.flows.reset()
        self.numbers.reset()
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
                status=status,
                direction=direction,
                messaging_service_sid=request.messaging_service_sid,
            )
            self._messages[record.sid] = record
            resource = message_resource(record, self.config.account_sid)
        log.info("%s %s to %s with %d media", status, record.sid, record.to, len(media))
        self._start_delivery(record.sid)
        return resource

    def receive(self, from_: str, to: str, body: str) -> tuple[dict[str, Any], dict[str, str]]:
        """Store a message someone sent to our number `to`; its JSON and its webhook form.

        It is a Message resource too, ``inbound`` and ``received``, dated when the webhook goes
        out [DOC message-resource; SDK MessageInstance docstring of date_sent]. STOP and START
        keywords update the STOP list first; Twilio still forwards them [DOC].
        """
        now = _now()
        keyword = body.strip().upper()
        with self._lock:
            self._seq += 1
            record = MessageRecord(
                sid=_new_sid("SM"),
                seq=self._seq,
                to=to,
                from_=from_,
                body=body,
                status_callback=None,
                media=[],
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
            account_sid = self.config.account_sid
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
        if from_ not in self.config.phone_numbers:
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
        """What the account sent, replies included, oldest first (received messages are not
        outgoing mail; list them with ``GET Messages.json``)."""
        with self._lock:
            records = sorted(self._messages.values(), key=lambda record: record.seq)
            sent = [record for record in records if record.direction != "inbound"]
            return [outbox_entry(record, self.config.account_sid) for record in sent]

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


# --------------------------------------------------------------------------------------------
# HTTP: the REST API
# --------------------------------------------------------------------------------------------

api = flask.Blueprint("twilio_api", __name__, url_prefix=f"/{API_VERSION}/Accounts/<account_sid>")
# studio.twilio.com: LocalTwilioHttpClient keeps only the path, so it shares this server.
studio = flask.Blueprint("twilio_studio", __name__, url_prefix="/v2")
# messaging.twilio.com, likewise.
messaging = flask.Blueprint("twilio_messaging", __name__, url_prefix="/v1")
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


def _unauthorized() -> flask.Response:
    response = _json(ApiError(20003, "Authenticate", status=401).body(), 401)
    response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
    return response


@api.before_request
def _authenticate() -> flask.Response | None:
    config = _emulator().config
    path_sid = (flask.request.view_args or {}).get("account_sid")
    if _credentials_match(config) and path_sid == config.account_sid:
        return None
    return _unauthorized()


@studio.before_request
@messaging.before_request
def _authenticate_studio() -> flask.Response | None:
    # Studio and Messaging paths carry no account SID: the credentials alone name the account.
    return None if _credentials_match(_emulator().config) else _unauthorized()


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
    request = validate_create(
        form, emulator.opted_out(), emulator.services, emulator.config.phone_numbers
    )
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


@api.get("/IncomingPhoneNumbers.json")
def list_numbers(account_sid: str) -> flask.Response:
    args = flask.request.args
    query = parse_paging(args, ("PhoneNumber", "FriendlyName", "Origin", "Beta"))
    numbers = _emulator().numbers.listed(
        args.get("PhoneNumber"), args.get("FriendlyName"), args.get("Origin")
    )
    return _json(envelope_2010("incoming_phone_numbers", numbers, query, flask.request.path))


@api.get("/IncomingPhoneNumbers/<name>")
def fetch_number(account_sid: str, name: str) -> flask.Response:
    resource = _emulator().numbers.get(_strip_json(name))
    if resource is None:
        raise _not_found()
    return _json(resource)


@api.post("/IncomingPhoneNumbers/<name>")
def update_number(account_sid: str, name: str) -> flask.Response:
    numbers = _emulator().numbers
    sid = _strip_json(name)
    if numbers.get(sid) is None:  # an unknown number is 404 whatever the form holds
        raise _not_found()
    resource = numbers.update(sid, parse_number_update(flask.request.form, account_sid))
    if resource is None:
        raise _not_found()
    return _json(resource)


# --------------------------------------------------------------------------------------------
# HTTP: Studio Flows v2
# --------------------------------------------------------------------------------------------


@studio.post("/Flows/Validate")
def validate_flow() -> flask.Response:
    parse_new_flow(flask.request.form)  # raises 81022 (or 20001) when it would not be accepted
    return _json({"valid": True})


@studio.post("/Flows")
def create_flow() -> flask.Response:
    return _json(_emulator().flows.add(parse_new_flow(flask.request.form)), 201)


@studio.get("/Flows")
def list_flows() -> flask.Response:
    query = parse_paging(flask.request.args)
    flows = _emulator().flows.listed()
    return _json(envelope_v2("flows", flows, query, f"{STUDIO_BASE_URL}/v2/Flows"))


@studio.get("/Flows/<sid>")
def fetch_flow(sid: str) -> flask.Response:
    resource = _emulator().flows.get(sid)
    if resource is None:
        raise _not_found()
    return _json(resource)


@studio.post("/Flows/<sid>")
def update_flow(sid: str) -> flask.Response:
    flows = _emulator().flows
    if flows.get(sid) is None:  # an unknown flow is 404 whatever the form holds
        raise _not_found()
    resource = flows.update(sid, parse_flow_change(flask.request.form))
    if resource is None:
        raise _not_found()
    return _json(resource)


@studio.delete("/Flows/<sid>")
def delete_flow(sid: str) -> flask.Response:
    if not _emulator().flows.delete(sid):
        raise _not_found()
    return flask.Response(status=204)


# --------------------------------------------------------------------------------------------
# HTTP: Messaging Services v1 (read-only)
# --------------------------------------------------------------------------------------------


def _service_pool(sid: str) -> tuple[str, ...]:
    pool = _emulator().services.get(sid)
    if pool is None:
        raise _not_found()
    return pool


@messaging.get("/Services/<sid>")
def fetch_service(sid: str) -> flask.Response:
    emulator = _emulator()
    _service_pool(sid)
    return _json(service_resource(sid, emulator.config.account_sid, emulator.services_created))


@messaging.get("/Services/<sid>/PhoneNumbers")
def list_service_numbers(sid: str) -> flask.Response:
    emulator = _emulator()
    numbers = [
        service_number_resource(sid, emulator.config.account_sid, number, emulator.services_created)
        for number in _service_pool(sid)
    ]
    url = f"{MESSAGING_BASE_URL}/v1/Services/{sid}/PhoneNumbers"
    return _json(envelope_v2("phone_numbers", numbers, parse_paging(flask.request.args), url))


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


@dev.get("/numbers")
def dev_numbers() -> flask.Response:
    return _json({"numbers": _emulator().numbers.listed()})


@dev.get("/flows")
def dev_flows() -> flask.Response:
    return _json({"flows": _emulator().flows.complete()})


def _incoming_from_body(emulator: TwilioEmulator) -> tuple[str, str, str, str | None]:
    """``{"from", "to", "body", "url"?}`` of an incoming message, checked."""
    payload = _json_body()
    sender, number = payload.get("from"), payload.get("to")
    text, url = payload.get("body", ""), payload.get("url")
    if not isinstance(sender, str) or _E164.fullmatch(sender.strip()) is None:
        flask.abort(400, "from must be an E.164 number like +15558675310")
    if not isinstance(number, str) or number.strip() not in emulator.config.phone_numbers:
        ours = ", ".join(emulator.config.phone_numbers)
        flask.abort(400, f"to must be one of our numbers: {ours}")
    if not isinstance(text, str):
        flask.abort(400, "body must be a string")
    if url is not None and (not isinstance(url, str) or not _is_http_url(url)):
        flask.abort(400, "url must be an http(s) URL")
    return sender.strip(), number.strip(), text, url


@dev.post("/incoming")
def dev_incoming() -> flask.Response:
    """Someone texts our number: Twilio's side of it, synchronously.

    Records the inbound message, sends the signed incoming-message webhook to `url` (POST) or
    to the number's ``sms_url`` (with its ``sms_method``), and sends the TwiML answer's
    replies. Answers ``{inbound_sid, inbound, webhook_url, webhook_status, replies, notices}``:
    `replies` are the Message resources created, `notices` what Twilio's debugger would show.
    """
    emulator = _emulator()
    sender, number, text, url = _incoming_from_body(emulator)
    method = "POST"
    if url is None:
        settings = emulator.numbers.settings_of(number) or {}
        url, method = settings.get("sms_url") or None, settings.get("sms_method", "POST")
    if url is not None and is_twilio_url(url):
        # A Studio flow's webhook lives on twilio.com; never call the real Twilio from here.
        flask.abort(409, f"{url} is a Twilio URL; run Studio flows with devstack.studio_runner")
    inbound, params = emulator.receive(sender, number, text)
    result: dict[str, Any] = {
        "inbound_sid": inbound["sid"],
        "inbound": inbound,
        "webhook_url": url,
        "webhook_status": None,
        "replies": [],
        "notices": [],
    }
    if url is None:  # no messaging webhook configured: Twilio only stores the message
        return _json(result)
    answer = post_incoming_webhook(url, method, params, emulator.config.auth_token)
    replies, notices = read_twiml_answer(answer, url)
    created, refused = emulator.reply(sender, number, replies)
    for notice in notices + refused:
        log.info("incoming %s: %s %s", inbound["sid"], notice["code"], notice["message"])
    result.update(webhook_status=answer.status, replies=created, notices=notices + refused)
    return _json(result)


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
    """A Flask app emulating the Twilio APIs above; state at ``app.extensions["twilio"]``."""
    app = flask.Flask(__name__)
    app.extensions["twilio"] = TwilioEmulator(config)
    app.register_blueprint(api)
    app.register_blueprint(studio)
    app.register_blueprint(messaging)
    app.register_blueprint(dev)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    return app
