"""Requests made the way the vendors make them: QStash's signed callbacks to `composite`, and
Twilio's signed form posts (incoming messages, Studio's call and text requests) to `generate`.

The builders are pure: a callback's JSON, a provider's success body, a Twilio form, the headers
that sign a request. The `post_as_*` functions send what they build, to a URL given, so tests
and benchmarks point them at the local stack or anywhere else. Nothing here knows the stack;
`devstack.stack_client` binds these to a running one.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import requests
from twilio.request_validator import RequestValidator

from .picture_drawing import draw_picture
from .qstash import DEV_CURRENT_SIGNING_KEY, make_signature
from .stack import DEMO_FROM

__all__ = [
    "DEFAULT_PROMPT",
    "callback_payload",
    "incoming_text",
    "new_sid",
    "post_as_qstash",
    "post_as_twilio",
    "provider_success",
    "qstash_headers",
    "reply_text",
    "studio_call",
    "twilio_form_headers",
]

#: The prompt of a request recorded without `generate`, and of the picture answered for it.
DEFAULT_PROMPT = "a lighthouse at dusk"
#: A Twilio account SID of zeros: `generate` checks the signature, not the account.
ANY_ACCOUNT_SID = "AC" + "0" * 32

_sids = itertools.count(1)


def new_sid(prefix: str) -> str:
    """A Twilio SID (`prefix` and 32 hex digits) that no other call here has made."""
    return f"{prefix}{next(_sids):032x}"


# --- QStash: the provider's answer, passed on to composite ---------------------------------------


def provider_success(prompt: str = DEFAULT_PROMPT, *, created: int = 1) -> bytes:
    """The image provider's success answer: a 1024x1024 JPEG drawn for `prompt`, base64."""
    out = io.BytesIO()
    draw_picture(prompt, 1024, 1024).save(out, "JPEG", quality=80)
    response = {
        "created": created,
        "data": [{"b64_json": base64.b64encode(out.getvalue()).decode()}],
        "usage": {"input_tokens": 9, "output_tokens": 272},
    }
    return json.dumps(response).encode()


def callback_payload(status: int | None, body: bytes, **fields: Any) -> dict[str, Any]:
    """The JSON QStash posts to a callback URL: the provider's `status` (left out when None)
    and `body` (base64, left out when empty), with `fields` added or replacing the defaults."""
    payload: dict[str, Any] = {"sourceMessageId": "msg_source", "maxRetries": 2, **fields}
    if status is not None:
        payload["status"] = status
    if body:
        payload["body"] = base64.b64encode(body).decode()
    return payload


def qstash_headers(
    url: str,
    raw: bytes,
    *,
    message_id: str | None = None,
    key: str = DEV_CURRENT_SIGNING_KEY,
    signed_url: str | None = None,
    signature: str | None = None,
) -> dict[str, str]:
    """The headers of QStash's POST of `raw` to `url`.

    Args:
        url: Where the request goes.
        raw: The exact body bytes, which the signature covers.
        message_id: The `Upstash-Message-Id`; none is sent when None.
        key: The signing key.
        signed_url: The URL to sign for instead of `url` (a forgery).
        signature: This `Upstash-Signature` instead of a real one; "" sends none.
    """
    headers = {"Content-Type": "application/json"}
    if message_id is not None:
        headers["Upstash-Message-Id"] = message_id
    if signature is None:
        signature = make_signature(key, signed_url or url, raw)
    if signature:
        headers["Upstash-Signature"] = signature
    return headers


def post_as_qstash(
    url: str,
    raw: bytes,
    *,
    message_id: str | None = None,
    key: str = DEV_CURRENT_SIGNING_KEY,
    signed_url: str | None = None,
    signature: str | None = None,
    timeout: float = 30,
) -> requests.Response:
    """POST `raw` to `url` as QStash does, with `qstash_headers` (same arguments)."""
    headers = qstash_headers(
        url, raw, message_id=message_id, key=key, signed_url=signed_url, signature=signature
    )
    return requests.post(url, data=raw, headers=headers, timeout=timeout)


# --- Twilio: incoming messages and Studio's requests ---------------------------------------------


def incoming_text(sender: str, body: str, ours: str = DEMO_FROM, **extra: str) -> dict[str, str]:
    """Twilio's incoming-message webhook form for a text from `sender` to `ours`, with a new
    MessageSid each time; `extra` adds or replaces fields."""
    return {
        "MessageSid": new_sid("SM"),
        "AccountSid": ANY_ACCOUNT_SID,
        "From": sender,
        "To": ours,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
        **extra,
    }


def studio_call(caller: str, prompt: str, **extra: str) -> dict[str, str]:
    """The Studio flow's form for a call from `caller` who said `prompt`, with a new CallSid
    each time and a caller ID the carrier vouches for; `extra` adds or replaces fields."""
    return {
        "prompt": prompt,
        "to": caller,
        "from": DEMO_FROM,
        "channel": "voice",
        "source_ref": new_sid("CA"),
        "stir_verstat": "TN-Validation-Passed-A",  # the carrier vouches for the caller ID
        **extra,
    }


def twilio_form_headers(
    signed_url: str, params: Mapping[str, str], *, auth_token: str
) -> dict[str, str]:
    """The headers of Twilio's form POST of `params`, signed for `signed_url`."""
    signature = RequestValidator(auth_token).compute_signature(signed_url, dict(params))
    return {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "X-Twilio-Signature": signature,
        "User-Agent": "TwilioProxy/1.1",
    }


def post_as_twilio(
    url: str,
    params: Mapping[str, str],
    *,
    auth_token: str,
    signed_url: str | None = None,
    timeout: float = 10,
) -> requests.Response:
    """POST the form `params` to `url` as Twilio does, signed for `signed_url` (default `url`)."""
    headers = twilio_form_headers(signed_url or url, params, auth_token=auth_token)
    return requests.post(url, data=urlencode(params), headers=headers, timeout=timeout)


def reply_text(response: requests.Response) -> str:
    """The TwiML `generate` answered a message webhook with; it must be a 200 in text/xml."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/xml")
    return response.text


# What a person might ask for in each language, as they would type or say it (the model is
# given it as is). A language not listed asks in English: any words will do.
PROMPTS_BY_LANGUAGE = {
    "en": "a fox in the snow",
    "es": "un zorro en la nieve",
    "fr": "un renard dans la neige",
    "de": "ein Fuchs im Schnee",
    "pt": "uma raposa na neve",
    "it": "una volpe nella neve",
}


def prompt_in(language: str) -> str:
    return PROMPTS_BY_LANGUAGE.get(language, PROMPTS_BY_LANGUAGE["en"])
