"""What the property tests (test_properties_*.py) generate, and the helpers they share.

The strategies generate all the inputs that once found bugs (see test_properties_regressions):
JSON nested past Python's recursion limit, counts in superscript digits, pictures too small
for the frame and PNGs whose chunk stream breaks, NUL and lone surrogates, phone numbers in
non-ASCII digits, prompts of only invisible characters. The HTTP helpers post to the local
stack as its callers do, each with a timeout, so that a hang fails instead of waiting.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import requests
from hypothesis import strategies as st
from PIL import Image

from devstack.stack import DEMO_FROM
from devstack.stack_client import StackClient, signed_post
from devstack.vendor_calls import post_as_qstash
from shared.framing import MIN_EDGE

#: functions-framework draws each request's execution id from the global `random`; when
#: QStash calls composite in the background while Hypothesis generates an example,
#: Hypothesis blames the strategy. Nothing here uses `random`.
IGNORE_RANDOM_IN_THE_BACKGROUND = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)
HTTP_TIMEOUT_S = 20  # every request a property sends: a hang fails instead of waiting
STORED_ADDRESS = re.compile(r"^(whatsapp:)?\+[1-9][0-9]{6,14}$")  # the requests table's check

# --- strategies: text ----------------------------------------------------------------------------

T = TypeVar("T")


def mostly(
    common: st.SearchStrategy[T], other: st.SearchStrategy[T], share: int = 3
) -> st.SearchStrategy[T]:
    """`common` `share` times in `share + 1`, else `other` (st.one_of does not weight)."""
    return st.sampled_from([True] * share + [False]).flatmap(lambda pick: common if pick else other)


#: Characters that break careless text handling: NUL and other C0/C1 controls, DEL, a
#: no-break space, a combining mark, zero-width and bidi marks (RTL override, isolates), line
#: and paragraph separators, a BOM, and emoji (one with a zero-width joiner).
AWKWARD_CHARACTERS = (
    "\x00\x01\x07\t\n\r\x0b\x0c\x1b\x1f\x7f\x85\xa0\u0301\u200b\u200d\u200e\u200f"
    "\u202e\u2066\u2069\u2028\u2029\ufeff\U0001f980\U0001f469\U0001f3a8"
)
#: Any character that UTF-8 can encode (so forms, URLs and headers can carry it).
any_character = st.one_of(st.characters(codec="utf-8"), st.sampled_from(AWKWARD_CHARACTERS))
#: Characters that leave a prompt nothing to draw besides whitespace, controls and format
#: characters (bidi and zero-width marks, joiners, emoji tags, a BOM): variation selectors, the
#: combining grapheme joiner, a Mongolian selector, Hangul fillers, and noncharacters.
#: Private-use and plain unassigned code points are not among them: intake keeps those (an
#: unassigned one may be an emoji newer than our Unicode database).
DRAWING_NOTHING = "\ufe0f\ufe00\U000e0100\U000e01ef\u034f\u180b\u115f\u3164\uffa0"
DRAWING_NOTHING += "\ufdd0\ufdef\ufffe\uffff\U0010ffff"
#: Characters with nothing to draw: whitespace, controls, format characters and the above.
invisible_character = st.one_of(
    st.sampled_from(
        [ch for ch in AWKWARD_CHARACTERS if ch.isspace() or unicodedata.category(ch)[0] == "C"]
        + list(DRAWING_NOTHING)
    ),
    st.characters(categories=["Cc", "Cf", "Zs", "Zl", "Zp"], codec="utf-8"),
)

texts = st.text(any_character, max_size=60)
#: Text with nothing to draw in it, though not blank to str.strip().
invisible_texts = st.text(invisible_character, min_size=1, max_size=12)
ten_thousand_character_texts = st.text(any_character, min_size=1, max_size=4).map(
    lambda piece: (piece * 10_000)[:10_000]
)
#: What a person might say or type: short awkward text, only invisible characters, or 10 000
#: characters of awkward text.
person_texts = st.one_of(texts, invisible_texts, ten_thousand_character_texts)
#: Prompts a person might give, within the limit and not blank (but awkward).
plausible_prompts = st.text(any_character, min_size=1, max_size=60).filter(
    lambda text: any(not ch.isspace() and unicodedata.category(ch)[0] != "C" for ch in text)
)

#: Text with at least one lone surrogate, which only JSON can carry ("\ud800" escapes).
lone_surrogates = st.characters(categories=["Cs"])
texts_with_lone_surrogates = st.builds(
    "{}{}{}".format,
    st.text(any_character, max_size=8),
    lone_surrogates,
    st.text(st.one_of(lone_surrogates, any_character), max_size=11),
)

#: Printable ASCII that `requests` will put in a header as it is.
header_texts = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)

STOP_START_HELP = ["STOP", "stop", " Stop\n", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]
STOP_START_HELP += ["OPTOUT", "revoke", "Stop.", "STOP!", "START", "yes", "UNSTOP", "HELP", "info"]
# No keywords, though Python upper-cases them to STOP and START: a long s (U+017F) and the
# "st" ligature (U+FB06).
STOP_START_HELP += ["\u017ftop", "\ufb06op", "\u017ftart"]

# --- strategies: JSON ----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.integers(min_value=-(2**200), max_value=-(2**63)),
    st.floats(),  # NaN and infinities too: Python's json reads them back
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


def nested_document(depth: int, brackets: tuple[str, str], closed: bool) -> bytes:
    opener, closer = brackets
    return (opener * depth + ("1" + closer * depth if closed else "")).encode()


#: Deeper than json.loads can read (it raises RecursionError past about 1000 levels), still
#: under generate's 64 KiB as objects.
MAX_NESTING = 5000

#: Arrays or objects nested up to MAX_NESTING deep, closed or cut off.
nested_json_documents = st.builds(
    nested_document,
    st.integers(1, MAX_NESTING),
    st.sampled_from([("[", "]"), ('{"a":', "}")]),
    st.booleans(),
)

# --- strategies: phone numbers -----------------------------------------------------------------

#: Placeholders the HTTP tests replace with a value no other example used, so that requests
#: let through never share a number (the per-number limit is 5 an hour) or a Twilio SID.
FRESH_NUMBER = "{fresh-number}"
FRESH_SID = "{fresh-sid}"

#: A CallSid or MessageSid as Twilio writes them; generate ignores any other source_ref.
TWILIO_SID = re.compile(r"[A-Za-z]{2}[0-9A-Za-z]{32}")


def not_an_address(value: str) -> bool:
    """Not what intake.parse_address takes (once trimmed): E.164 in ASCII digits, maybe
    after "whatsapp:"."""
    return STORED_ADDRESS.match(value.strip()) is None


#: Phone numbers that are not E.164: how people write them, too short, too long, a leading
#: zero, digits of other scripts, Studio placeholders, SIP and client addresses, random text.
not_e164_numbers = st.one_of(
    st.builds(
        "+1{}{}{}".format,
        st.from_regex(r"[0-9]{0,6}", fullmatch=True),
        st.characters(categories=["Nd"], exclude_characters="0123456789"),
        st.text(st.characters(categories=["Nd"]), min_size=6, max_size=8),
    ),
    st.from_regex(r"[0-9]{1,16}", fullmatch=True),
    st.from_regex(r"\+[0-9]{0,6}", fullmatch=True),
    st.from_regex(r"\+0[0-9]{6,14}", fullmatch=True),
    st.from_regex(r"\+[1-9][0-9]{15,20}", fullmatch=True),
    st.from_regex(r"\+1 ?\(?555\)? ?[0-9]{3}[ .-][0-9]{4}", fullmatch=True),
    st.from_regex(r"whatsapp: ?[0-9+]{0,6}", fullmatch=True),
    st.sampled_from(
        [
            "",
            "+",
            "whatsapp:",
            "{{contact.channel.address}}",
            "client:alice",
            "sip:alice@example.com",
            "tel:+15551234567",
            "+15551234567;ext=1",
            "whatsapp:whatsapp:+15551234567",
        ]
    ),
    texts,
).filter(not_an_address)

valid_numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


def addresses(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A usable address (plain, WhatsApp, padded with whitespace) or something that is not."""
    return st.one_of(
        valid,
        valid.map(lambda number: f"whatsapp:{number}"),
        valid.map(lambda number: f" \t{number}\n"),
        not_e164_numbers,
    )


#: The person who calls or writes (gets the picture), and the number they contacted.
caller_addresses = addresses(st.just(FRESH_NUMBER))
our_addresses = addresses(st.just(DEMO_FROM))


#: Whitespace Twilio would never add but a careless client might; parse_address trims it.
paddings = st.sampled_from(["", "", "", " ", "\t", "\n", " \r\n", "\xa0"])


@st.composite
def number_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """(caller, our number): most often as Twilio sends them (both plain or both WhatsApp,
    maybe padded with whitespace), else one WhatsApp and one plain (which every path
    refuses), else anything."""
    kind = draw(st.sampled_from(["plain"] * 3 + ["whatsapp"] * 2 + ["mixed"] + ["anything"] * 2))
    if kind == "anything":
        return draw(caller_addresses), draw(our_addresses)
    pad = [draw(paddings) for _ in range(4)]
    caller_prefix = ours_prefix = "whatsapp:" if kind == "whatsapp" else ""
    if kind == "mixed":
        caller_prefix, ours_prefix = draw(st.sampled_from([("whatsapp:", ""), ("", "whatsapp:")]))
    return (
        f"{pad[0]}{caller_prefix}{FRESH_NUMBER}{pad[1]}",
        f"{pad[2]}{ours_prefix}{DEMO_FROM}{pad[3]}",
    )


def not_a_sid(text: str) -> bool:
    return TWILIO_SID.fullmatch(text) is None


def sid_as_kept(value: str | None) -> str | None:
    """The source_ref generate records for a CallSid or MessageSid: only a real-looking SID."""
    return value if value is not None and TWILIO_SID.fullmatch(value) else None


#: CallSids and MessageSids: none, a fresh one, or text that is no SID (a NUL, padding, too
#: short, random text). generate ignores those and takes the request without deduplicating
#: it, so they need not be unique: examples repeating one must each be taken.
twilio_sids = st.one_of(
    st.just(""),
    st.just(FRESH_SID),
    st.sampled_from(["CA\x00", "SM", "SM" + "0" * 31, f" SM{'0' * 32}", f"SM{'0' * 32}\n"]),
    texts.filter(not_a_sid),
)

# --- strategies: QStash callbacks and provider answers -----------------------------------------

STATUS_CODES = [0, 1, 100, 199, 200, 201, 204, 299, 300, 400, 401, 403, 404, 408, 409, 429]
STATUS_CODES += [500, 502, 503, 504, 599, 999, -1, -200, -500]

#: `status` as QStash might (never) send it: any int, a huge one, or not a number at all.
callback_statuses = st.one_of(
    st.sampled_from(STATUS_CODES), st.integers(), json_scalars, json_values
)
#: retried / maxRetries / createdAt: counts, negative, huge, digit strings in any script
#: (superscripts, circled digits and other digits int() cannot read too), or not numbers.
callback_counts = st.one_of(
    st.integers(-3, 5),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**300),
    st.from_regex(r"-?[0-9]{1,30}", fullmatch=True),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=6),
    json_values,
)
#: What QStash's ids look like (msg_…, 1725323658779-0): the only sourceMessageId and dlqId
#: parse_callback keeps.
QSTASH_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}", re.ASCII)
#: sourceMessageId and dlqId: QStash-like ids, text (NUL too), lone surrogates, or not text.
callback_ids = st.one_of(
    st.from_regex(r"(msg_)?[A-Za-z0-9_.:-]{1,40}", fullmatch=True),
    texts,
    texts_with_lone_surrogates,
    json_values,
)


@st.composite
def provider_errors(draw: st.DrawFn) -> bytes:
    """An error body like OpenAI's, with random codes, types and messages (NUL and lone
    surrogates too: the text that gets stored is cleaned first)."""
    code_or_type = st.one_of(
        st.sampled_from(
            [
                "moderation_blocked",
                "content_policy_violation",
                "insufficient_quota",
                "billing_hard_limit_reached",
                "org_spend_limit_exceeded",
                "rate_limit_exceeded",
                "server_error",
                "invalid_request_error",
            ]
        ),
        json_values,
        texts_with_lone_surrogates,
    )
    error = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "code": code_or_type,
                "type": code_or_type,
                "message": st.one_of(json_values, texts_with_lone_surrogates),
                "param": json_values,
            },
        )
    )
    return json_bytes({"error": draw(st.one_of(st.just(error), json_values))})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: A successful provider answer's shape, around a random or real picture.
provider_successes = st.builds(
    lambda encoded, usage: json_bytes({"created": 1, "data": [{"b64_json": encoded}], **usage}),
    st.one_of(st.binary(max_size=200).map(b64), json_values),
    st.fixed_dictionaries({}, optional={"usage": json_values}),
)

#: What the provider may answer, as QStash passes it on (base64 in the callback's `body`).
provider_answers = st.one_of(
    st.binary(max_size=600),
    json_values.map(json_bytes),
    nested_json_documents,
    provider_errors(),
    provider_successes,
)


def truncated(encoded: str, keep: float) -> str:
    return encoded[: int(len(encoded) * keep)]


#: The callback's `body`: base64 of a provider answer, cut off (as at QStash's size limit),
#: not base64 at all, or not a string.
callback_bodies = st.one_of(
    provider_answers.map(b64),
    st.builds(truncated, provider_answers.map(b64), st.floats(0, 1)),
    texts,
    json_values,
)

#: Callback-shaped JSON objects whose fields have random types and values.
callback_payloads = st.fixed_dictionaries(
    {},
    optional={
        "status": callback_statuses,
        "body": callback_bodies,
        "retried": callback_counts,
        "maxRetries": callback_counts,
        "createdAt": callback_counts,
        "sourceMessageId": callback_ids,
        "dlqId": callback_ids,
        "header": json_values,
        "url": texts,
        "method": st.sampled_from(["POST", "GET", ""]),
        "topicName": texts,
    },
)

# --- strategies: pictures ------------------------------------------------------------------------

PICTURE_FORMATS = {"JPEG": ["RGB", "L"], "PNG": ["RGB", "RGBA", "L", "P"], "WEBP": ["RGB", "RGBA"]}
LARGEST_SIDE = 128  # of the generated pictures

#: (width, height) of a picture frame_image takes: MIN_EDGE px a side or more.
framable_sizes = st.tuples(st.integers(MIN_EDGE, LARGEST_SIDE), st.integers(MIN_EDGE, LARGEST_SIDE))
#: (width, height) with at least one side under MIN_EDGE px, down to 1 px.
too_small_sizes = st.one_of(
    st.tuples(st.integers(1, MIN_EDGE - 1), st.integers(1, LARGEST_SIDE)),
    st.tuples(st.integers(1, LARGEST_SIDE), st.integers(1, MIN_EDGE - 1)),
)
any_sizes = st.one_of(framable_sizes, too_small_sizes)


@st.composite
def pictures(draw: st.DrawFn, sizes: st.SearchStrategy[tuple[int, int]] = any_sizes) -> bytes:
    """A small real JPEG, PNG or WEBP, of a size drawn from `sizes`."""
    image_format = draw(st.sampled_from(sorted(PICTURE_FORMATS)))
    mode = draw(st.sampled_from(PICTURE_FORMATS[image_format]))
    size = draw(sizes)
    gradient = Image.linear_gradient("L").resize(size)
    image = Image.merge("RGB", (gradient, gradient.rotate(90), gradient.rotate(180)))
    image = image.convert(mode) if mode != "P" else image.quantize(draw(st.integers(2, 64)))
    out = io.BytesIO()
    image.save(out, image_format)
    return out.getvalue()


@st.composite
def damaged_pictures(draw: st.DrawFn) -> bytes:
    """A real picture (mostly one big enough to be decoded) cut off, with bytes overwritten
    (often in the header), or both."""
    data = bytearray(draw(mostly(pictures(framable_sizes), pictures(too_small_sizes))))
    damage = draw(st.sampled_from(["truncate", "overwrite", "both", "drop_middle"]))
    if damage in ("overwrite", "both"):
        anywhere = st.integers(0, len(data) - 1)
        in_header = st.integers(0, min(len(data), 96) - 1)
        for position in draw(st.lists(st.one_of(in_header, anywhere), min_size=1, max_size=8)):
            data[position] = draw(st.integers(0, 255))
    if damage in ("truncate", "both"):
        data = data[: draw(st.integers(0, len(data) - 1))]
    if damage == "drop_middle":
        start = draw(st.integers(0, len(data) - 1))
        data = data[:start] + data[start + draw(st.integers(1, 64)) :]
    return bytes(data)


def picture_answer(picture: bytes) -> bytes:
    """The provider's success JSON around `picture`."""
    usage = {"input_tokens": 9, "output_tokens": 272}
    return json_bytes({"created": 1, "data": [{"b64_json": b64(picture)}], "usage": usage})


#: Callbacks carrying a real picture (whole, too small, or damaged), with random other fields.
picture_callbacks = st.builds(
    lambda picture, fields: {**fields, "status": 200, "body": b64(picture_answer(picture))},
    mostly(
        pictures(framable_sizes), st.one_of(pictures(too_small_sizes), damaged_pictures()), share=1
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "retried": callback_counts,
            "maxRetries": callback_counts,
            "sourceMessageId": callback_ids,
        },
    ),
)

#: Anything QStash might sign: callback-shaped or not, JSON or not.
signed_bodies = mostly(
    mostly(picture_callbacks, callback_payloads, share=1).map(json_bytes),
    st.one_of(json_values.map(json_bytes), st.binary(max_size=400), nested_json_documents),
)

# --- on the local stack -------------------------------------------------------------------------

_serial = itertools.count(1)
_PLACEHOLDER = re.compile("|".join(map(re.escape, (FRESH_NUMBER, FRESH_SID))))


def fresh_number() -> str:
    """A number no other example or test uses (+15554… is the property tests' own range)."""
    return f"+15554{next(_serial):06d}"


def resolve(value: str) -> str:
    """Replace each placeholder in `value` with a value no other example used."""

    def fill(match: re.Match[str]) -> str:
        if match[0] == FRESH_NUMBER:
            return fresh_number()
        return f"SM{uuid.uuid4().hex}"

    return _PLACEHOLDER.sub(fill, value)


def resolve_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: resolve(v) if isinstance(v, str) else v for k, v in fields.items()}


def describe(response: requests.Response) -> str:
    return (
        f"HTTP {response.status_code} {response.headers.get('Content-Type')}: {response.text[:300]}"
    )


def post_signed_form(stack: StackClient, params: Mapping[str, str]) -> requests.Response:
    """POST a form to generate signed the way Twilio signs it."""
    return signed_post(stack, params, timeout=HTTP_TIMEOUT_S)


def composite_url(stack: StackClient, request_id: str | None) -> str:
    base = stack.env["COMPOSITE_URL"]
    return base if request_id is None else f"{base}?request={quote(request_id, safe='')}"


def post_signed_callback(url: str, raw: bytes, owner: str | None = None) -> requests.Response:
    """POST `raw` to composite as QStash does, signed for exactly `url`, with `owner` as its
    Upstash-Message-Id (none when None)."""
    return post_as_qstash(url, raw, message_id=owner, timeout=HTTP_TIMEOUT_S)
