"""The private link to a person's pictures: `GALLERY_URL/p/<token>`, one per person and our
number. The token is an HMAC of the pair and the link's generation under a server secret, so
PICTURES sends the same link each time and NEWLINK (the next generation) replaces it; only the
token's SHA-256 is stored, to find the pair again. Pure functions; store.py keeps the hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes of URL-safe base64, unpadded


def gallery_token(secret: str, address: str, sender: str, generation: int) -> str:
    message = f"gallery-link:{generation}:{address}:{sender}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def token_hash(token: str) -> str | None:
    """The stored form of a token, or None for text that cannot be one of ours."""
    if not _TOKEN.fullmatch(token):
        return None
    return hashlib.sha256(token.encode()).hexdigest()


def gallery_link(gallery_url: str, token: str) -> str:
    return f"{gallery_url.rstrip('/')}/p/{token}"
