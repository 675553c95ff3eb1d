"""What the Twilio stand-in's APIs share: the error shape, addresses and SIDs, dates, paging.

Messages, Studio, incoming numbers and Messaging Services (``devstack.twilio_*``) all answer
errors as :class:`ApiError`, date and name their resources the same way, and page their lists
with the same cursor tokens; this module holds those pieces so that each API module holds only
its own. It knows nothing of the emulator's state.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import flask
from werkzeug.datastructures import MultiDict

__all__ = [
    "API_VERSION",
    "DEFAULT_PAGE_SIZE",
    "E164",
    "MAX_PAGE_SIZE",
    "SERVICE_SID",
    "ApiError",
    "Paging",
    "account_path",
    "envelope_2010",
    "envelope_v2",
    "is_http_url",
    "iso8601",
    "json_response",
    "new_sid",
    "not_found",
    "paging_2010",
    "parse_paging",
    "rfc2822",
    "strip_json",
    "utc_now",
]

API_VERSION = "2010-04-01"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

E164 = re.compile(r"\+[1-9]\d{7,14}")
# A Messaging Service SID; anything else in MessagingServiceSid is 21705 [DOC errors/21705].
SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")


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


def not_found() -> ApiError:
    return ApiError(20404, f"The requested resource {flask.request.path} was not found", 404)


def json_response(payload: Any, status: int = 200) -> flask.Response:
    response = flask.jsonify(payload)
    response.status_code = status
    return response


def strip_json(name: str) -> str:
    """``<resource>/<sid>.json`` routes: the SID without its suffix, 404 without one."""
    if not name.endswith(".json"):
        flask.abort(404)
    return name.removesuffix(".json")


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def account_path(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{account_sid}"


def utc_now() -> datetime:
    """Now, to the second: Twilio's timestamps have one-second resolution."""
    return datetime.now(UTC).replace(microsecond=0)


def rfc2822(value: datetime | None) -> str | None:
    """2010-04-01 API dates: ``Mon, 06 Nov 2017 12:00:00 +0000``."""
    return format_datetime(value) if value is not None else None


def iso8601(value: datetime) -> str:
    """Studio v2 and Messaging v1 dates: ``2017-11-06T12:00:00Z`` (the SDK parses exactly this)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------------------------
# Paging
# --------------------------------------------------------------------------------------------


@dataclass
class Paging:
    """Paging of a list request, and its filters as sent (echoed into the paging URIs)."""

    filters: list[tuple[str, str]]
    page: int = 0
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str | None = None


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


def paging_2010(sids: list[str], query: Paging, path: str) -> tuple[slice, dict[str, Any]]:
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


def envelope_2010(
    key: str, resources: list[dict[str, Any]], query: Paging, path: str
) -> dict[str, Any]:
    """One page of all listed `resources` in the 2010-04-01 envelope, under `key`."""
    window, fields = paging_2010([resource["sid"] for resource in resources], query, path)
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
