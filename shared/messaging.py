"""Sending the picture (MMS) and plain notices (SMS) with the Twilio SDK.

Twilio's errors are translated into `MessagingError` here, with `retryable` saying whether a
later attempt can succeed: an opted-out or invalid number never will; a 5xx or timeout might.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from .errors import MessagingError
from .records import WHATSAPP_PREFIX
from .secrets import Secret

OPTED_OUT = 21610
# Codes that will fail the same way every time for this recipient or request.
FINAL_CODES = frozenset(
    {
        21211,  # invalid To
        21408,  # region not enabled
        21602,  # body required
        21604,  # To required
        21606,  # From cannot send to this destination
        21608,  # trial account, unverified To
        21610,  # opted out (STOP)
        21612,  # To not reachable by SMS/MMS
        21614,  # To is not a mobile number
        21617,  # body too long
        21620,  # invalid media URL
        21623,  # too many media
        21603,  # no From and no Messaging Service
        21660,  # From is not a number of this account
        21701,  # TWILIO_MESSAGING_SERVICE_SID is not a service of this account
        21705,  # TWILIO_MESSAGING_SERVICE_SID is malformed
        30019,  # media too large for the carrier
        63016,  # WhatsApp: outside the 24-hour session window
    }
)
REQUEST_TIMEOUT_S = 15.0
# Twilio's clock and the database's may differ a little; a message this much older than its
# request can still be its own.
CLOCK_SKEW = timedelta(minutes=2)
# How many recent messages between the two numbers recovery reads (newest first).
RECOVERY_LOOKBACK = 50


def twilio_error_code(value: object) -> int | None:
    """Twilio's error code as a number, or None: it comes from the answer's JSON, and no
    answer of Twilio's may turn a refused send into a crash."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value < 10**6 else None
    text = str(value or "")
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else None


class RedirectingHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Sends every Twilio API call to `base_url` instead of https://*.twilio.com.

    Only used when TWILIO_API_BASE_URL is set (the local stand-in); the SDK still does all the
    request building, auth and error parsing.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._base = urlsplit(base_url)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        parts = urlsplit(url)
        url = urlunsplit((self._base.scheme, self._base.netloc, parts.path, parts.query, ""))
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class SentMessage:
    sid: str
    status: str


class Messenger:
    """Twilio Messages API; the client is built on first use, when the token is needed."""

    def __init__(
        self,
        account_sid: str,
        auth_token: Secret,
        api_base_url: str | None,
        messaging_service_sid: str | None = None,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_base_url = api_base_url
        # Registered (A2P 10DLC, toll-free) senders send through a Messaging Service. We still
        # name `from_`, so the person hears back from the number they contacted [DOC].
        self._messaging_service_sid = messaging_service_sid
        self._client: Client | None = None

    def _twilio(self) -> Client:
        if self._client is None:
            http: TwilioHttpClient = (
                RedirectingHttpClient(self._api_base_url, timeout=REQUEST_TIMEOUT_S)
                if self._api_base_url
                else TwilioHttpClient(timeout=REQUEST_TIMEOUT_S)
            )
            self._client = Client(self._account_sid, self._auth_token.reveal(), http_client=http)
        return self._client

    def send(
        self,
        *,
        to: str,
        from_: str,
        body: str,
        media_url: str | None = None,
        status_callback: str | None = None,
    ) -> SentMessage:
        try:
            message = self._twilio().messages.create(
                to=to,
                from_=from_,
                body=body,
                media_url=[media_url] if media_url else None,
                status_callback=status_callback,
                messaging_service_sid=self._service_for(to),
            )
        except TwilioRestException as exc:
            code = twilio_error_code(exc.code)
            final = code in FINAL_CODES
            raise MessagingError(
                "Twilio refused the message",
                retryable=not final,
                code=code,
                detail=f"HTTP {exc.status} code {exc.code}",
            ) from exc
        except (TwilioException, OSError) as exc:
            # Timeouts and connection errors surface as requests/OSError subclasses.
            raise MessagingError(
                "Twilio could not be reached", retryable=True, detail=type(exc).__name__
            ) from exc
        return SentMessage(sid=str(message.sid), status=str(message.status))

    def _service_for(self, to: str) -> str | None:
        # Registration is for SMS/MMS senders; a WhatsApp sender need not be in the service.
        return None if to.startswith(WHATSAPP_PREFIX) else self._messaging_service_sid

    def find_sent(
        self, *, to: str, from_: str, bodies: Collection[str], created_at: datetime | None
    ) -> str | None:
        """The SID of our message to `to` whose body is one of `bodies`, created since
        `created_at`, if any.

        Used after a run died between asking Twilio to send and recording the answer: the
        message may or may not exist, and only Twilio knows. The list filters are only to,
        from and date sent [SDK], and a queued message has no date sent yet, so the body and
        the creation time are matched here.
        """
        since = created_at - CLOCK_SKEW if created_at else None
        try:
            listed = self._twilio().messages.list(to=to, from_=from_, limit=RECOVERY_LOOKBACK)
        except (TwilioException, OSError) as exc:
            raise MessagingError(
                "Twilio could not be asked about an earlier send",
                retryable=True,
                detail=type(exc).__name__,
            ) from exc
        for message in listed:
            made = message.date_created
            if since and isinstance(made, datetime) and made < since:
                continue
            if (message.body or "") in bodies:
                return str(message.sid)
        return None
