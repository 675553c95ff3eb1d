"""Requests from Twilio: `X-Twilio-Signature` checks and TwiML replies.

Twilio signs the full URL it called plus the sorted form parameters with the account's auth
token. We rebuild that URL from the configured public URL (Cloud Functions end TLS in front of
the function, so `request.url` says http://) and let the SDK's validator do the rest.

An account that signs webhooks with a SharedKey (Webhook Rules, public beta) announces the
algorithm in `X-Twilio-Webhooks-Signature-Settings` (`key=…,algorithm=HMAC_SHA256`); twilio
9.12+ reads it [SDK request_validator.py]. The secret is then the SharedKey's, not the auth
token: we take the algorithm from the header and check with TWILIO_AUTH_TOKEN, so an account
using a SharedKey stores that secret there [UNCONFIRMED whether Studio requests are covered].
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    RequestValidator,
    get_signature_algorithm,
)
from twilio.twiml.messaging_response import MessagingResponse

from .errors import SignatureError

SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
# The Studio flow's parameter that carries the deployment's flow key (see deploy/studio.py).
FLOW_KEY_FIELD = "flow_key"


def verify_twilio_signature(
    url: str,
    params: Mapping[str, object],
    signature: str | None,
    auth_token: str,
    signature_settings: str | None = None,
) -> None:
    """Raise `SignatureError` unless `signature` is Twilio's for `url` and `params`.

    `params` should be the request's form MultiDict, so repeated keys (MediaUrl…) count.
    `signature_settings` is the X-Twilio-Webhooks-Signature-Settings header, if any.
    """
    if not signature:
        raise SignatureError("missing X-Twilio-Signature header")
    algorithm = get_signature_algorithm(signature_settings)
    if algorithm.upper() not in (HMAC_SHA1, HMAC_SHA256):
        # Refused here: the SDK would log the caller's unverified algorithm text.
        raise SignatureError("unsupported signature algorithm")
    if not RequestValidator(auth_token).validate(url, params, signature, algorithm):
        # The configured URL, not the query: that is the caller's text, and unverified.
        expected = url.split("?", 1)[0]
        raise SignatureError("X-Twilio-Signature did not verify", detail=f"expected {expected}")


# What a status callback may report [DOC messaging/api/message-resource#message-status-values].
MESSAGE_STATUSES = frozenset(
    {"queued", "sending", "sent", "delivered", "undelivered", "failed", "read", "accepted"}
)
# The message never reached the phone [DOC message-status-values].
NOT_DELIVERED = frozenset({"undelivered", "failed"})
_MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-f]{32}")
_ERROR_CODE = re.compile(r"[0-9]{1,6}")  # Twilio's codes have five digits [DOC errors]


@dataclass(frozen=True)
class StatusReport:
    message_sid: str
    status: str
    error_code: int | None


def read_status_callback(form: Mapping[str, str]) -> StatusReport | None:
    """A status callback's news, or None when it holds nothing we can record (an unknown
    status, a malformed SID). A signed callback is Twilio's, but its fields are still text."""
    sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
    if not _MESSAGE_SID.fullmatch(sid) or status not in MESSAGE_STATUSES:
        return None
    code = form.get("ErrorCode", "")
    return StatusReport(sid, status, int(code) if _ERROR_CODE.fullmatch(code) else None)


def twiml_message(text: str | None) -> str:
    """A TwiML reply: one message, or none (an empty <Response/>)."""
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)
