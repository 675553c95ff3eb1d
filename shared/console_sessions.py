"""The operator console's sign-in: a session cookie and the CSRF token every form carries.

Signing in with OPERATOR_KEY sets `pl_session` = `<issued>.<nonce>.<mac>`, an HMAC under a key
derived from OPERATOR_KEY (so a new operator key signs everyone out). The cookie is HttpOnly,
SameSite=Strict, scoped to /admin, and Secure unless the console is served from this machine.
Each form carries `csrf` = an HMAC of the session's nonce; a POST without the right one is
refused, whatever its cookie says. Pure functions; gallery/main.py sets and reads them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "pl_session"
COOKIE_PATH = "/admin"
CSRF_FIELD = "csrf"
KEY_FIELD = "operator_key"
DEFAULT_SESSION_HOURS = 12


def _key(operator_key: str) -> bytes:
    return hmac.new(operator_key.encode(), b"picture-line console session", hashlib.sha256).digest()


def _mac(operator_key: str, message: str) -> str:
    return hmac.new(_key(operator_key), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Session:
    nonce: str
    issued: int  # Unix seconds


def new_session_cookie(operator_key: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    nonce = secrets.token_urlsafe(18)
    body = f"{issued}.{nonce}"
    return f"{body}.{_mac(operator_key, body)}"


def read_session(
    cookie: str | None, operator_key: str, lifetime_s: int, now: float | None = None
) -> Session | None:
    """The session a cookie proves, or None (missing, forged, or expired)."""
    if not cookie or cookie.count(".") != 2:
        return None
    issued_text, nonce, mac = cookie.split(".")
    if not issued_text.isdigit() or not hmac.compare_digest(
        mac, _mac(operator_key, f"{issued_text}.{nonce}")
    ):
        return None
    issued = int(issued_text)
    current = now if now is not None else time.time()
    if not 0 <= current - issued <= lifetime_s:
        return None
    return Session(nonce, issued)


def csrf_token(operator_key: str, session: Session) -> str:
    return _mac(operator_key, f"csrf:{session.nonce}")


def csrf_ok(given: str | None, operator_key: str, session: Session) -> bool:
    return bool(given) and hmac.compare_digest(
        (given or "").encode("utf-8", "replace"), csrf_token(operator_key, session).encode()
    )


def key_matches(given: str | None, operator_key: str) -> bool:
    """The sign-in form's key, compared in constant time."""
    if not given or not operator_key:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), operator_key.encode())


def cookie_is_secure(console_url: str) -> bool:
    """Secure everywhere but this machine (a local stack serves plain http)."""
    local = ("http://127.0.0.1", "http://localhost", "http://[::1]")
    return not console_url.startswith(local)
