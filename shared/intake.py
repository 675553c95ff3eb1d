"""Reading a picture request from whoever sent it. Pure functions: input in, value or
`BadRequest` out, with a message that tells the sender what to fix."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .catalogue import (
    CATALOGUES,
    REFERENCE_LANGUAGE,
    fold,
    language_named,
    phrasebook,
)
from .errors import BadRequest, EmptyPrompt, HiddenNumber, PromptTooLong
from .recipients import normalise
from .records import WHATSAPP_PREFIX, Channel, RequestKind

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# What Twilio sends as a CallSid or MessageSid; anything else is not kept.
_SID = re.compile(r"[A-Za-z]{2}[0-9A-Za-z]{32}")

# What Twilio puts in `From` when a caller withholds their number: the carrier's word, or that
# word spelled on a phone keypad. Twilio used to translate "the alpha string" (ANONYMOUS,
# RESTRICTED, ...) "into digits" [DOC twilio.com/changelog, 2022-11-16]; since 2023-05-17 an
# inbound call whose caller ID is withheld shows "anonymous" in From [DOC changelog "Changes to
# withheld caller ID behavior"]. The five digit forms are [3P: sipstack.com "Why am I receiving
# calls from +266696687"; public Twilio apps that refuse them]; each spells its word on a keypad
# (a test checks) and is too short for its country code's numbering plan, so no real number is
# refused [INFERRED]. Whether Studio's {{contact.channel.address}} takes the word or the digits
# is [UNCONFIRMED]; both are here.
WITHHELD_CALLER_IDS = {
    "ANONYMOUS": "+266696687",
    "RESTRICTED": "+7378742833",
    "BLOCKED": "+2562533",
    "UNKNOWN": "+8656696",
    "UNAVAILABLE": "+86282452253",
}
_WITHHELD = frozenset({*WITHHELD_CALLER_IDS, *WITHHELD_CALLER_IDS.values()})


def is_hidden_number(address: str) -> bool:
    """Whether `address` is one of Twilio's stand-ins for a withheld caller ID (any case)."""
    number = address.strip().removeprefix(WHATSAPP_PREFIX)
    return number.isascii() and number.upper() in _WITHHELD


def parse_address(value: Any, field: str) -> str:
    """An E.164 number (+15551234567) or a WhatsApp address (whatsapp:+15551234567).

    A withheld caller ID is `HiddenNumber`: it looks like a number (+266696687) but reaches
    nobody, so a picture sent there is paid for and lost, and every hidden caller would share
    one number's limits.
    """
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"'{field}' is required: a phone number like +15551234567")
    address = value.strip()
    number = address.removeprefix(WHATSAPP_PREFIX)
    if is_hidden_number(number):
        raise HiddenNumber(f"'{field}' is a withheld caller ID, not a number we can send to")
    if not _E164.match(number):
        raise BadRequest(
            f"'{field}' must be a phone number in E.164 form like +15551234567"
            " (or whatsapp:+15551234567)"
        )
    return address


def twilio_sid(value: Any) -> str | None:
    """A CallSid or MessageSid as Twilio writes them, or None for anything else."""
    return value if isinstance(value, str) and _SID.fullmatch(value) else None


# Bidi embeddings, overrides and isolates (LRE..RLO, LRI..PDI). An unclosed one reorders the
# rest of its line wherever the prompt is shown: in our reply it could flip the "Ref ..." after
# the prompt, and in a log or the table it can make the text read as something else (the
# "Trojan Source" trick). Plain text needs none of them; the implicit marks (LRM, RLM, ALM) that
# right-to-left writers type are kept.
_BIDI_CONTROLS = frozenset(chr(cp) for cp in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))

# Code points that draw nothing besides the format characters (Cf: ZWJ, ZWNJ, bidi marks, emoji
# tags, the BOM): Default_Ignorable_Code_Point in Unicode's DerivedCoreProperties.txt, less what
# is Cf already. Among them variation selectors, the combining grapheme joiner, Hangul fillers.
_OTHER_IGNORABLES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),
)


def _is_noncharacter(code_point: int) -> bool:
    """The 66 code points Unicode will never assign (U+FDD0..FDEF, U+xFFFE, U+xFFFF); XML
    does not allow U+FFFE and U+FFFF."""
    return 0xFDD0 <= code_point <= 0xFDEF or code_point & 0xFFFE == 0xFFFE


def _kept(ch: str) -> str:
    """What a prompt keeps of `ch`: a space for a control character (NUL, ESC, DEL, NEL...: they
    separate words, like a tab), nothing for what is unsafe to store, show or put in TwiML
    (surrogates, noncharacters, bidi controls), else `ch` itself.

    Everything else stays: ZWJ and ZWNJ (emoji sequences, Persian and Indic words), variation
    selectors, emoji tags (flags), private-use characters, and code points our Unicode database
    does not know yet (newer emoji). C0 controls, surrogates and U+FFFE/U+FFFF are also all that
    XML 1.0 forbids, so the prompt is safe in our TwiML replies.
    """
    category = unicodedata.category(ch)
    if category == "Cc":
        return " "
    if category == "Cs" or ch in _BIDI_CONTROLS or _is_noncharacter(ord(ch)):
        return ""
    return ch


def _is_visible(ch: str) -> bool:
    """Whether `ch` draws something: not whitespace, a control or format character, or another
    code point Unicode says renderers show as nothing."""
    if ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs"):
        return False
    return not any(low <= ord(ch) <= high for low, high in _OTHER_IGNORABLES)


def clean_prompt(value: Any, max_chars: int) -> str:
    """Collapse the prompt's whitespace and drop what is unsafe (see `_kept`); it must keep a
    visible character, and at most max_chars characters."""
    if not isinstance(value, str):
        raise BadRequest("'prompt' is required: describe the picture in words")
    text = " ".join("".join(map(_kept, value)).split())
    if not any(map(_is_visible, text)):
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
    caller_verdict: str | None = None  # a call's SHAKEN/STIR verdict (StirVerstat), if any
    # A follow-up (conversation.py): what it is, the picture it follows, what an edit starts from.
    kind: RequestKind = RequestKind.NEW
    parent_id: str | None = None
    source_path: str | None = None
    resend_path: str | None = None  # UNDO: the framed picture to send again
    language: str = REFERENCE_LANGUAGE  # what every word about it is written in

    @property
    def is_edit(self) -> bool:
        return self.source_path is not None


def check_pair(recipient: str, sender: str) -> None:
    """Both WhatsApp addresses, or both phone numbers: Twilio cannot bridge the two."""
    if recipient.startswith(WHATSAPP_PREFIX) != sender.startswith(WHATSAPP_PREFIX):
        raise BadRequest("'to' and 'from' must both be WhatsApp addresses or both be numbers")


def parse_picture_request(
    payload: Any,
    max_prompt_chars: int,
    default_sender: str | None = None,
    default_region: str | None = None,
) -> PictureRequest:
    """The operator's JSON `{"to", "prompt", "from"?}`: `to` gets the picture, sent from
    `from` (default: TWILIO_FROM_NUMBER). `to` may be spelled as people write numbers
    ("(212) 555-0123" in `default_region`, "+1 212 555 0123"); it is kept in E.164."""
    if not isinstance(payload, dict):
        raise BadRequest("expected a JSON object with 'to' and 'prompt'")
    to = payload.get("to")
    spelled = isinstance(to, str) and to.isascii() and not is_hidden_number(to)
    if spelled and not _E164.match(str(to).strip().removeprefix(WHATSAPP_PREFIX)):
        # Only an ASCII spelling that is not E.164 already: phonenumbers rewrites some E.164
        # forms, and reads other scripts' digits, which an address never has.
        to = normalise(str(to), default_region) or to
    recipient = parse_address(to, "to")
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


def requested_language(payload: Any) -> tuple[str, ...]:
    """The operator's optional `"language"` ("es"): the language of the caption and notices.
    Absent, the person's own (or the number's) applies."""
    value = payload.get("language") if isinstance(payload, dict) else None
    if value is None:
        return ()
    if not isinstance(value, str) or value.strip().lower() not in CATALOGUES:
        raise BadRequest(f"'language' must be one of {', '.join(CATALOGUES)}")
    return (value.strip().lower(),)


def parse_studio_request(form: Mapping[str, str], max_prompt_chars: int) -> PictureRequest:
    """A Studio flow's form POST (see studio/flow.json): `prompt`, `to` (the caller or
    sender), `from` (our number), `channel` (voice or message), `source_ref` (the CallSid
    or MessageSid) and, for a call, `stir_verstat`. Twilio (or our flow) sent it, so `to` is
    the number that called or wrote; whether that caller ID is genuine is `caller_verdict`."""
    recipient = parse_address(form.get("to"), "to")
    sender = parse_address(form.get("from"), "from")
    check_pair(recipient, sender)
    prompt = clean_prompt(form.get("prompt", ""), max_prompt_chars)
    if recipient.startswith(WHATSAPP_PREFIX):
        channel = Channel.WHATSAPP
    else:
        channel = Channel.VOICE if form.get("channel") == "voice" else Channel.SMS
    source_ref = twilio_sid(form.get("source_ref"))
    verdict = read_verstat(form.get("stir_verstat")) if channel is Channel.VOICE else None
    return PictureRequest(recipient, sender, prompt, channel, source_ref, verdict)


# A call's SHAKEN/STIR verdict, as Twilio adds it to a call that carries SHAKEN/STIR data:
# TN-Validation-Passed-A|B|C, TN-Validation-Failed-A|B|C, No-TN-Validation [DOC voice webhooks
# "StirVerstat"]. A and B mean the originating carrier vouches that the caller may use that
# number (A: and knows the customer); C, failures and no verdict prove nothing, so a spoofed
# caller ID could make us send to (and spend on) someone else. Whether Studio exposes it as
# {{trigger.call.StirVerstat}} is [UNCONFIRMED]: absent, it renders as an empty string.
ATTESTED_VERDICTS = frozenset({"TN-Validation-Passed-A", "TN-Validation-Passed-B"})
_VERSTAT = re.compile(r"[A-Za-z][A-Za-z-]{0,63}")


def read_verstat(value: Any) -> str | None:
    """A verdict as Twilio writes them, or None (absent, empty, or not one's shape)."""
    return value if isinstance(value, str) and _VERSTAT.fullmatch(value) else None


def caller_attested(verdict: str | None) -> bool:
    return verdict in ATTESTED_VERDICTS


class Command(StrEnum):
    PROMPT = "prompt"
    HELP = "help"
    STOP = "stop"
    START = "start"
    EMPTY_PROMPT = "empty_prompt"
    TOO_LONG = "too_long"
    AGAIN = "again"  # another take of the last picture
    UNDO = "undo"  # the picture before the last change
    STYLES = "styles"  # list the style presets
    PICTURES = "pictures"  # the link to their gallery
    NEW_LINK = "new_link"  # a new gallery link; the old one stops working
    LANGUAGE = "language"  # LANGUAGE <code>: the language of every reply from now on


# Whole-message commands in every language (shared/languages/*.toml), matched like Twilio's
# keywords: case, punctuation and accents aside ("¡Otra!" is OTRA).
_COMMANDS = {
    "again": Command.AGAIN,
    "undo": Command.UNDO,
    "styles": Command.STYLES,
    "pictures": Command.PICTURES,
    "new_link": Command.NEW_LINK,
    "help": Command.HELP,
}


def _command_words() -> dict[str, tuple[Command, tuple[str, ...]]]:
    """Each folded word: its command, and the languages that use it (catalogue order)."""
    found: dict[str, tuple[Command, tuple[str, ...]]] = {}
    for book in CATALOGUES.values():
        for name, command in _COMMANDS.items():
            for word in book.words.commands[name]:
                languages = found.get(word, (command, ()))[1]
                found[word] = (command, (*languages, book.code))
    return found


COMMAND_WORDS = _command_words()


def follow_up_command(body: str) -> Command | None:
    """AGAIN, UNDO, STYLES, PICTURES or NEWLINK when the whole message is one of their words
    in any language ("Again!", "¡Otra!")."""
    command = written_command(body)
    return command[0] if command and command[0] is not Command.HELP else None


def written_command(body: str) -> tuple[Command, tuple[str, ...]] | None:
    """The command the whole message is a word of, and the languages that word is in."""
    return COMMAND_WORDS.get(fold(body))


# Twilio's default keywords; this is the project's one copy of them. Opt-out: STOP, UNSUBSCRIBE,
# END, QUIT, STOPALL, REVOKE, OPTOUT, CANCEL [DOC twilio.com/docs/messaging/tutorials/
# advanced-opt-out; REVOKE and OPTOUT follow the FCC's 2024 consent-revocation rule, 3P]. Opt-in:
# START, YES, UNSTOP. Help: HELP, INFO [DOC twilio.com/docs/api/errors/23002, support 223134027].
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})
# One ASCII word with nothing but spaces, punctuation, symbols or emoji around it ("Stop.").
_WORD_ALONE = re.compile(r"[\W_]*([A-Za-z]+)[\W_]*")


def keyword_command(body: str) -> Command | None:
    """The command Twilio's default keywords give `body`, or None when it is no keyword.

    Twilio matches the whole message, case-insensitively: "stop" is a keyword, "stop please" is
    not [DOC support 223134027: "Only single-word messages will trigger the block"]. Its words
    are ASCII, and so must be the letters: "start" with a long s (U+017F) or "stop" with the
    "st" ligature (U+FB06) upper-case to START and STOP in Python, but Twilio documents only
    the ASCII words [INFERRED].
    Surrounding whitespace is ignored, as a phone's autocomplete adds a space [INFERRED].

    Whether Twilio also takes "Stop." or "STOP!" is [UNCONFIRMED], so when unsure an opt-out
    wins: a STOP word with any non-letters around it is STOP (we record it and send nothing; a
    START undoes it). START and HELP words must stand alone, since lifting an opt-out that
    Twilio did not lift would only make our sends fail.
    """
    word = body.strip()
    if word.isascii() and word.upper() in START_WORDS:
        return Command.START
    if word.isascii() and word.upper() in HELP_WORDS:
        return Command.HELP
    alone = _WORD_ALONE.fullmatch(body)
    if alone is not None and alone[1].upper() in STOP_WORDS:
        return Command.STOP
    return None


@dataclass(frozen=True)
class IncomingMedia:
    """The first attachment of an incoming message, as Twilio names it (unverified text)."""

    url: str
    content_type: str


def webhook_media(form: Mapping[str, str]) -> IncomingMedia | None:
    """`MediaUrl0` of Twilio's incoming-message webhook, when `NumMedia` says there is one
    [DOC messaging webhook: NumMedia, MediaUrl{N}, MediaContentType{N}]."""
    if form.get("NumMedia", "0").strip() in ("", "0"):
        return None
    url = form.get("MediaUrl0", "")
    return IncomingMedia(url, form.get("MediaContentType0", "")) if url else None


def studio_media(form: Mapping[str, str]) -> IncomingMedia | None:
    """The flow passes `{{trigger.message.MediaUrl0}}` as `media_url` (empty without one)."""
    url = (form.get("media_url") or "").strip()
    return IncomingMedia(url, (form.get("media_type") or "").strip()) if url else None


@dataclass(frozen=True)
class IncomingCommand:
    command: Command
    prompt: str | None = None
    length: int = 0
    # Words that are no command (no keyword before them): a change to the last picture, if
    # there is one (conversation.py). Set on HELP for such words, and on a keyword-less PROMPT.
    follow_up: str | None = None
    # The languages the message's own words are in (its keyword or command word), most
    # likely first; empty when they do not say. For LANGUAGE, the one chosen (empty: unknown).
    languages: tuple[str, ...] = ()


def interpret_message(
    body: str,
    keyword: str,
    max_prompt_chars: int,
    opt_out_type: str | None = None,
    default_language: str = REFERENCE_LANGUAGE,
) -> IncomingCommand:
    """What an incoming text asks for. With a keyword (e.g. DRAW) only "DRAW <prompt>" is a
    prompt, or the keyword of another language ("DIBUJA <prompt>"); other words get the usage
    text, unless they follow up on a picture (`follow_up`, see conversation.py). STOP/START/HELP
    words are never prompts; AGAIN, UNDO, STYLES... words are commands in every language.
    `keyword` (SMS_KEYWORD) is a keyword of `default_language`."""
    if opt_out_type in ("STOP", "START", "HELP"):
        return IncomingCommand(Command(opt_out_type.lower()))
    if (twilio_keyword := keyword_command(body)) is not None:
        return IncomingCommand(twilio_keyword)
    if (written := written_command(body)) is not None:
        return IncomingCommand(written[0], languages=written[1])
    if (chosen := language_choice(body)) is not None:
        return chosen
    text = body.strip()
    said = keyword_language(text, keyword, default_language)
    languages = (said[0],) if said else ()
    if keyword:
        if said is None:
            return IncomingCommand(Command.HELP, follow_up=_words(text, max_prompt_chars))
        text = text[said[1] :]
    try:
        prompt = clean_prompt(text, max_prompt_chars)
    except EmptyPrompt:
        return IncomingCommand(Command.EMPTY_PROMPT, languages=languages)
    except PromptTooLong as exc:
        return IncomingCommand(Command.TOO_LONG, length=exc.length, languages=languages)
    follow_up = None if keyword else prompt
    return IncomingCommand(Command.PROMPT, prompt=prompt, follow_up=follow_up, languages=languages)


# Each catalogue's keyword, to its language.
_KEYWORDS = {book.words.keyword: book.code for book in CATALOGUES.values()}


def keyword_language(text: str, keyword: str, default_language: str) -> tuple[str, int] | None:
    """The language of the keyword `text` starts with, and where the prompt after it starts:
    SMS_KEYWORD is `default_language`'s, each catalogue's keyword its own."""
    keywords = _KEYWORDS
    if keyword and keyword.upper() not in keywords:
        keywords = {**keywords, keyword.upper(): default_language}
    for word, language in keywords.items():
        match = re.match(rf"{re.escape(word)}(?:[\s:,.-]+|$)", text, re.IGNORECASE)
        if match is not None:
            return language, match.end()
    return None


def language_choice(body: str) -> IncomingCommand | None:
    """`LANGUAGE es`, `IDIOMA español`, or a language's name alone ("Deutsch"): Command.LANGUAGE
    with the language chosen, or with none when the words name no language we speak."""
    words = fold(body)
    if " " not in words and (named := language_named(words)) is not None:
        return IncomingCommand(Command.LANGUAGE, languages=(named,))
    first, _, rest = words.partition(" ")
    for book in CATALOGUES.values():
        if first in book.words.commands["language"]:
            named = language_named(rest) if rest else None
            return IncomingCommand(Command.LANGUAGE, languages=(named,) if named else ())
    return None


def spoken_command(words: str, language: str = REFERENCE_LANGUAGE) -> IncomingCommand:
    """What a caller who has a picture said, in the call's language: "again", "undo", "new
    <picture>" (or "otra", "nueva imagen de ..."), or a change."""
    if (command := follow_up_command(words)) in (Command.AGAIN, Command.UNDO):
        return IncomingCommand(command, languages=(language,))
    spoken = words.strip()
    for phrase in phrasebook(language).words.spoken_new:
        match = re.match(rf"{re.escape(phrase)}\b[\s,:.]*", spoken, re.IGNORECASE)
        if match is not None:
            rest = spoken[match.end() :].strip()
            if rest:
                return IncomingCommand(Command.PROMPT, prompt=rest, languages=(language,))
    return IncomingCommand(Command.HELP, follow_up=words, languages=(language,))


def _words(text: str, max_prompt_chars: int) -> str | None:
    try:
        return clean_prompt(text, max_prompt_chars)
    except (EmptyPrompt, PromptTooLong):
        return None
