"""QStash callbacks: verifying `Upstash-Signature` and reading the callback body.

The signature is an HS256 JWT signed with the current or the next signing key. Its `sub` claim
is "the URL of your endpoint" [DOC], which we compare with the URL we configured (the function
never trusts `request.url`: TLS ends in front of it). Its `body` claim is the SHA-256 of the raw
body. PyJWT is used directly because the qstash SDK's Receiver ignores its clock tolerance.

Whether `sub` includes the callback URL's query string is [UNCONFIRMED], so the query is never
the only proof of which request a callback is for: publishing forwards the request id as a
header, and QStash echoes the publish's headers inside the signed body (`sourceHeader`) [DOC].
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

import jwt

from .endpoints import parse_request_id
from .errors import BadRequest, SignatureError
from .image_models import parse_size

CLOCK_LEEWAY_S = 60
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}", re.ASCII)
# Forwarded on publish as `Upstash-Forward-Picture-Line-Request`; QStash strips the prefix and
# sends it to the provider (which ignores it), then echoes it in the callback's `sourceHeader`.
REQUEST_HEADER = "Picture-Line-Request"
# The sweep schedule's body: signed, so a replayed callback body cannot start a sweep.
SWEEP_BODY = {"picture_line": "sweep"}


def verify_qstash_signature(
    token: str | None,
    raw_body: bytes,
    urls: tuple[str, ...],
    signing_keys: tuple[str, str],
    *,
    leeway: int = CLOCK_LEEWAY_S,
) -> dict[str, Any]:
    """Return the verified claims, or raise `SignatureError` saying why (for our logs only).

    `urls` are the forms of our URL QStash may have signed: with the query, and without it.
    """
    if not token:
        raise SignatureError("missing Upstash-Signature header")
    failures: list[str] = []
    for key in signing_keys:
        if not key:
            continue
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["HS256"],
                issuer="Upstash",
                leeway=leeway,
                options={"require": ["iss", "sub", "exp", "nbf", "body"], "verify_aud": False},
            )
        except jwt.PyJWTError as exc:
            failures.append(type(exc).__name__)
            continue
        if claims["sub"] not in urls:
            # The configured URL, not the query: that is the caller's text, and unverified.
            expected = urls[0].split("?", 1)[0]
            raise SignatureError("signature is for another URL", detail=f"expected {expected}")
        expected = base64.urlsafe_b64encode(hashlib.sha256(raw_body).digest()).decode()
        if not hmac.compare_digest(str(claims["body"]).rstrip("="), expected.rstrip("=")):
            raise SignatureError("body does not match the signature")
        return claims
    raise SignatureError("signature did not verify", detail=", ".join(failures) or "no key")


@dataclass(frozen=True)
class QStashCallback:
    """One callback: what the destination (the image provider) answered on one attempt."""

    status: int | None
    body: bytes
    retried: int = 0
    max_retries: int = 0
    source_message_id: str | None = None
    dlq_id: str | None = None
    created_at_ms: int | None = None
    header: dict[str, list[str]] = field(default_factory=dict)
    source_header: dict[str, list[str]] = field(default_factory=dict)
    source_body: bytes = b""
    body_field_chars: int = 0  # length of the base64 `body` as received, for truncation

    @property
    def request_id(self) -> str | None:
        """The request id forwarded on publish, from the signed `sourceHeader`."""
        return _first(self.source_header, REQUEST_HEADER)

    @property
    def requested_model(self) -> str | None:
        """The model the publish asked for, from the signed `sourceBody`."""
        model = self._requested("model")
        return model if isinstance(model, str) else None

    @property
    def requested_size(self) -> tuple[int, int] | None:
        """The WxH the publish asked for (a GPT image model answers exactly that size)."""
        size = self._requested("size")
        return parse_size(size) if isinstance(size, str) else None

    def _requested(self, field_name: str) -> object:
        try:
            value: object = json.loads(self.source_body).get(field_name)
        except (ValueError, AttributeError, RecursionError):
            return None
        return value

    def looks_truncated(self, limit_bytes: int) -> bool:
        """Whether QStash cut this answer at the plan's message size [DOC callbacks]. How it
        cuts (raw bytes, or the base64) is [UNCONFIRMED], so both are recognised, as is a
        provider Content-Length longer than what arrived."""
        declared = _first(self.header, "Content-Length")
        if declared is not None and _count(declared) > len(self.body):
            return True
        near = limit_bytes * 0.98
        return len(self.body) >= near or self.body_field_chars >= near

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def is_final(self) -> bool:
        """No further attempt will follow: the failure callback, or the last retry."""
        return self.dlq_id is not None or self.retried >= self.max_retries


def parse_callback(raw: bytes) -> QStashCallback:
    """Read a callback body; QStash omits zero and empty fields, so absent means 0/None."""
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise BadRequest("callback body is not JSON") from exc
    if not isinstance(payload, dict):
        raise BadRequest("callback body is not a JSON object")
    status = payload.get("status")
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        raise BadRequest("callback status is not a number")
    try:
        body = base64.b64decode(payload.get("body") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        # A body truncated at the plan's size limit is no longer valid base64. Keep what there
        # is; reading the picture will then fail and be reported as a bad response.
        body = b""
    header = payload.get("header")
    source_header = payload.get("sourceHeader")
    encoded = payload.get("body")
    return QStashCallback(
        status=status or None,
        body=body,
        retried=_count(payload.get("retried")),
        max_retries=_count(payload.get("maxRetries")),
        source_message_id=_text(payload.get("sourceMessageId")),
        dlq_id=_text(payload.get("dlqId")),
        created_at_ms=_count(payload.get("createdAt")) or None,
        header=header if isinstance(header, dict) else {},
        source_header=source_header if isinstance(source_header, dict) else {},
        source_body=_decoded(payload.get("sourceBody")),
        body_field_chars=len(encoded) if isinstance(encoded, str) else 0,
    )


def bound_request_id(query_id: str | None, callback: QStashCallback, query_signed: bool) -> str:
    """The request this callback is for, proven by signed content, or `SignatureError`.

    The signed `sourceHeader` must agree with the URL's `?request=`; a callback without it
    (published before this header existed) is taken only when `sub` covered the query.
    """
    signed = callback.request_id
    if signed is None:
        if not query_signed:
            raise SignatureError("the callback's request id is not signed")
        return parse_request_id(query_id)
    if query_id is not None and query_id != signed:
        raise SignatureError("the signed request id differs from the one in the URL")
    return parse_request_id(signed)


def is_sweep_body(raw: bytes) -> bool:
    try:
        return bool(json.loads(raw) == SWEEP_BODY)
    except (ValueError, RecursionError):
        return False


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    """A header's first value; QStash writes them as lists under canonical names."""
    for key, values in headers.items():
        if isinstance(key, str) and key.lower() == name.lower():
            if isinstance(values, list) and values and isinstance(values[0], str):
                return values[0]
            if isinstance(values, str):
                return values
    return None


def _decoded(value: Any) -> bytes:
    try:
        return base64.b64decode(value or "", validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        return b""


# Counts and millisecond times fit well within this; anything larger is not QStash's.
_MAX_COUNT = 2**53
_MAX_COUNT_DIGITS = 16


def _count(value: Any) -> int:
    """A non-negative count; 0 for anything else, including absurd values (int() of a string
    of more than 4300 digits raises, and would have made a signed callback a 500)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value) if len(value) <= _MAX_COUNT_DIGITS else 0
    if isinstance(value, int) and 0 <= value <= _MAX_COUNT:
        return value
    return 0


def _text(value: Any) -> str | None:
    """An id as QStash writes them (msg_…, 1725323658779-0); anything else is dropped, so
    no stray byte (a NUL, a lone surrogate) ever reaches the database."""
    return value if isinstance(value, str) and _ID.fullmatch(value) else None
