"""QStash callbacks: verifying `Upstash-Signature` and reading the callback body.

The signature is an HS256 JWT signed with the current or the next signing key. Its `sub` claim
is the exact URL QStash called, which we compare with the URL we configured (the function never
trusts `request.url`: TLS ends in front of it). Its `body` claim is the SHA-256 of the raw body.
PyJWT is used directly because the qstash SDK's Receiver ignores its clock tolerance.
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

from .errors import BadRequest, SignatureError

CLOCK_LEEWAY_S = 60
_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}", re.ASCII)


def verify_qstash_signature(
    token: str | None,
    raw_body: bytes,
    url: str,
    signing_keys: tuple[str, str],
    *,
    leeway: int = CLOCK_LEEWAY_S,
) -> dict[str, Any]:
    """Return the verified claims, or raise `SignatureError` saying why (for our logs only)."""
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
        if claims["sub"] != url:
            raise SignatureError("signature is for another URL", detail=f"expected {url}")
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
    return QStashCallback(
        status=status or None,
        body=body,
        retried=_count(payload.get("retried")),
        max_retries=_count(payload.get("maxRetries")),
        source_message_id=_text(payload.get("sourceMessageId")),
        dlq_id=_text(payload.get("dlqId")),
        created_at_ms=_count(payload.get("createdAt")) or None,
        header=header if isinstance(header, dict) else {},
    )


def _count(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return 0


def _text(value: Any) -> str | None:
    """An id as QStash writes them (msg_…, 1725323658779-0); anything else is dropped, so
    no stray byte (a NUL, a lone surrogate) ever reaches the database."""
    return value if isinstance(value, str) and _ID.fullmatch(value) else None
