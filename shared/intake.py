"""Reading a picture request from whoever sent it. Pure functions: input in, value or
`BadRequest` out, with a message that tells the sender what to fix."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .records import Channel

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def parse_address(value: Any, field: str) -> str:
    """An E.164 number (+15551234567) or a WhatsApp address (whatsapp:+15551234567)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{field}' is required: a phone number like +15551234567")
    address = value.strip()
    number = address.removeprefix("whatsapp:")
    if not _E164.match(number):
        raise BadRequest(
            f"'{field}' must be a phone number in E.164 form like +15551234567"
            " (or whatsapp:+15551234567)"
        )
    return address


def clean_prompt(value: Any, max_chars: int) -> str:
    """Trim the prompt and drop control characters; it must keep 1..max_chars characters."""
    if not isinstance(value, str):
        raise BadRequest("'prompt' is required: describe the picture in words")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in value)
    text = " ".join(text.split())
    if not text:
        raise BadRequest("'prompt' is empty: describe the picture in words")
    if len(text) > max_chars:
        raise BadRequest(f"'prompt' is too long: {len(text)} characters, at most {max_chars}")
    return text


@dataclass(frozen=True)
class PictureRequest:
    """Who gets the picture, from which of our numbers, and what to draw."""

    recipient: str
    sender: str
    prompt: str
    channel: Channel = Channel.API


def parse_picture_request(payload: Any, max_prompt_chars: int) -> PictureRequest:
    """The JSON body `{"to", "from", "prompt"}`: `to` gets the picture, sent from `from`."""
    if not isinstance(payload, dict):
        raise BadRequest("expected a JSON object with 'to', 'from' and 'prompt'")
    recipient = parse_address(payload.get("to"), "to")
    sender = parse_address(payload.get("from"), "from")
    if recipient.startswith("whatsapp:") != sender.startswith("whatsapp:"):
        raise BadRequest("'to' and 'from' must both be WhatsApp addresses or both be numbers")
    prompt = clean_prompt(payload.get("prompt"), max_prompt_chars)
    channel = Channel.WHATSAPP if recipient.startswith("whatsapp:") else Channel.API
    return PictureRequest(recipient=recipient, sender=sender, prompt=prompt, channel=channel)
