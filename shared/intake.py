"""Reading a picture request from whoever sent it. Pure functions: input in, value or
`BadRequest` out, with a message that tells the sender what to fix."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .errors import BadRequest, EmptyPrompt, PromptTooLong
from .records import WHATSAPP_PREFIX, Channel

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# What Twilio sends as a CallSid or MessageSid; anything else is not kept.
_SID = re.compile(r"[A-Za-z]{2}[0-9A-Za-z]{32}")


def parse_address(value: Any, field: str) -> str:
    """An E.164 number (+15551234567) or a WhatsApp address (whatsapp:+15551234567)."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{field}' is required: a phone number like +15551234567")
    address = value.strip()
    number = address.removeprefix(WHATSAPP_PREFIX)
    if not _E164.match(number):
        raise BadRequest(
            f"'{field}' must be a phone number in E.164 form like +15551234567"
            " (or whatsapp:+15551234567)"
        )
    return address


def twilio_sid(value: Any) -> str | None:
    """A CallSid or MessageSid as Twilio writes them, or None for anything else."""
    return value if isinstance(value, str) and _SID.fullmatch(value) else None


def clean_prompt(value: Any, max_chars: int) -> str:
    """Trim the prompt and drop control characters; it must keep 1..max_chars characters."""
    if not isinstance(value, str):
        raise BadRequest("'prompt' is required: describe the picture in words")
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in value)
    text = " ".join(text.split())
    if not text:
        raise EmptyPrompt("'prompt' is empty: describe the picture in words")
    if len(text) > max_chars:
        raise PromptTooLong(
            f"'prompt' is too long: {len(text)} characters, at most {max_chars}", length=len(text)
        )
    return text


@dataclass(frozen=True)
class PictureRequest:
    """Who gets the picture, from which of our numbers, and what to draw."""

    recipient: str
    sender: str
    prompt: str
    channel: Channel = Channel.API
    source_ref: str | None = None  # Twilio's CallSid or MessageSid


def check_pair(recipient: str, sender: str) -> None:
    """Both WhatsApp addresses, or both phone numbers: Twilio cannot bridge the two."""
    if recipient.startswith(WHATSAPP_PREFIX) != sender.startswith(WHATSAPP_PREFIX):
        raise BadRequest("'to' and 'from' must both be WhatsApp addresses or both be numbers")


def parse_picture_request(
    payload: Any, max_prompt_chars: int, default_sender: str | None = None
) -> PictureRequest:
    """The operator's JSON `{"to", "prompt", "from"?}`: `to` gets the picture, sent from
    `from` (default: TWILIO_FROM_NUMBER)."""
    if not isinstance(payload, dict):
        raise BadRequest("expected a JSON object with 'to' and 'prompt'")
    recipient = parse_address(payload.get("to"), "to")
    sender_value = payload.get("from")
    if sender_value is None and default_sender:
        sender_value = default_sender
        if recipient.startswith(WHATSAPP_PREFIX):
            sender_value = f"{WHATSAPP_PREFIX}{default_sender}"
    if sender_value is None:
        raise BadRequest("'from' is required (or set TWILIO_FROM_NUMBER)")
    sender = parse_address(sender_value, "from")
    check_pair(recipient, sender)
    prompt = clean_prompt(payload.get("prompt"), max_prompt_chars)
    channel = Channel.WHATSAPP if recipient.startswith(WHATSAPP_PREFIX) else Channel.API
    return PictureRequest(recipient=recipient, sender=sender, prompt=prompt, channel=channel)


def parse_studio_request(form: Mapping[str, str], max_prompt_chars: int) -> PictureRequest:
    """A Studio flow's form POST (see studio/flow.json): `prompt`, `to` (the caller or
    sender), `from` (our number), `channel` (voice or message) and `source_ref` (the CallSid
    or MessageSid). Twilio signed it, so `to` is the person who called or wrote."""
    recipient = parse_address(form.get("to"), "to")
    sender = parse_address(form.get("from"), "from")
    check_pair(recipient, sender)
    prompt = clean_prompt(form.get("prompt", ""), max_prompt_chars)
    if recipient.startswith(WHATSAPP_PREFIX):
        channel = Channel.WHATSAPP
    else:
        channel = Channel.VOICE if form.get("channel") == "voice" else Channel.SMS
    source_ref = twilio_sid(form.get("source_ref"))
    return PictureRequest(recipient, sender, prompt, channel, source_ref)


class Command(StrEnum):
    PROMPT = "prompt"
    HELP = "help"
    STOP = "stop"
    START = "start"
    EMPTY_PROMPT = "empty_prompt"
    TOO_LONG = "too_long"


# Twilio's default keywords, matched against the whole message, case-insensitively.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


@dataclass(frozen=True)
class IncomingCommand:
    command: Command
    prompt: str | None = None
    length: int = 0


def interpret_message(
    body: str, keyword: str, max_prompt_chars: int, opt_out_type: str | None = None
) -> IncomingCommand:
    """What an incoming text asks for. With a keyword (e.g. DRAW) only "DRAW <prompt>" is a
    prompt; anything else gets the usage text. STOP/START/HELP words are never prompts."""
    if opt_out_type in ("STOP", "START", "HELP"):
        return IncomingCommand(Command(opt_out_type.lower()))
    word = " ".join(body.split()).upper()
    if word in STOP_WORDS:
        return IncomingCommand(Command.STOP)
    if word in START_WORDS:
        return IncomingCommand(Command.START)
    if word in HELP_WORDS:
        return IncomingCommand(Command.HELP)
    text = body.strip()
    if keyword:
        match = re.match(rf"^{re.escape(keyword)}(?:[\s:,.-]+|$)", text, re.IGNORECASE)
        if match is None:
            return IncomingCommand(Command.HELP)
        text = text[match.end() :]
    try:
        prompt = clean_prompt(text, max_prompt_chars)
    except EmptyPrompt:
        return IncomingCommand(Command.EMPTY_PROMPT)
    except PromptTooLong as exc:
        return IncomingCommand(Command.TOO_LONG, length=exc.length)
    return IncomingCommand(Command.PROMPT, prompt=prompt)
