"""Our two functions' public URLs: the ones we hand to QStash and Twilio, and reading them back.

`composite` is called at one URL for three things, told apart by the query:
- `?request=<id>`: QStash's callback after a generation attempt (publishing.py hands it out);
- `?message_status=<id>`: Twilio's status callback for a request's message (delivery.py);
- `?self_test=<nonce>`: the doctor's self-test (self_test.py).
`generate` is called at its configured URL with no query of ours.

Signatures cover the URL the caller used. Cloud Functions end TLS (and may rewrite the path)
in front of the function, so that URL is rebuilt from the configured one, never `request.url`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import StrEnum
from urllib.parse import urlencode

from .errors import BadRequest


class CompositeQuery(StrEnum):
    """The query parameter that says what a call to `composite` is."""

    REQUEST = "request"
    MESSAGE_STATUS = "message_status"
    SELF_TEST = "self_test"


def _with_query(base_url: str, name: CompositeQuery, value: str) -> str:
    return f"{base_url}?{urlencode({name.value: value})}"


def generation_callback_url(composite_url: str, request_id: str) -> str:
    """Where QStash posts the provider's answer for one request."""
    return _with_query(composite_url, CompositeQuery.REQUEST, request_id)


def message_status_url(composite_url: str, request_id: str) -> str:
    """Where Twilio reports how far a request's message got."""
    return _with_query(composite_url, CompositeQuery.MESSAGE_STATUS, request_id)


def self_test_url(composite_url: str, nonce: str) -> str:
    """Where the doctor's self-test message goes."""
    return _with_query(composite_url, CompositeQuery.SELF_TEST, nonce)


def is_message_status(query: Mapping[str, str]) -> bool:
    return CompositeQuery.MESSAGE_STATUS.value in query


def query_request_id(query: Mapping[str, str]) -> str | None:
    """The `?request=` value as given (unverified: see callbacks.bound_request_id)."""
    return query.get(CompositeQuery.REQUEST.value)


def query_self_test_nonce(query: Mapping[str, str]) -> str | None:
    return query.get(CompositeQuery.SELF_TEST.value)


def message_status_request_id(query: Mapping[str, str]) -> str:
    """The request a status callback is about, or `BadRequest`."""
    return parse_request_id(query.get(CompositeQuery.MESSAGE_STATUS.value))


def parse_request_id(value: str | None) -> str:
    """A request id in its canonical form, or `BadRequest`."""
    try:
        return str(uuid.UUID(value or ""))
    except ValueError as exc:
        raise BadRequest("the callback has no valid request id") from exc


def signed_url(configured_url: str, query_string: bytes) -> str:
    """The URL a webhook signer saw: our configured public URL plus the raw query string."""
    query = query_string.decode("latin-1")
    return f"{configured_url}?{query}" if query else configured_url
