"""Requests from Twilio: `X-Twilio-Signature` checks and TwiML replies.

Twilio signs the full URL it called plus the sorted form parameters with the account's auth
token. We rebuild that URL from the configured public URL (Cloud Functions end TLS in front of
the function, so `request.url` says http://) and let the SDK's validator do the rest.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from .errors import SignatureError


def verify_twilio_signature(
    url: str, params: Mapping[str, object], signature: str | None, auth_token: str
) -> None:
    """Raise `SignatureError` unless `signature` is Twilio's for `url` and `params`.

    `params` should be the request's form MultiDict, so repeated keys (MediaUrl…) count.
    """
    if not signature:
        raise SignatureError("missing X-Twilio-Signature header")
    if not RequestValidator(auth_token).validate(url, params, signature):
        raise SignatureError("X-Twilio-Signature did not verify", detail=f"expected {url}")


def twiml_message(text: str | None) -> str:
    """A TwiML reply: one message, or none (an empty <Response/>)."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)
