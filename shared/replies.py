"""Every sentence the person on the phone reads, in their language. The words live in the
catalogues (shared/languages/<code>.toml, read by catalogue.py); these functions choose the
message and fill it in. Each takes the language last (default: the reference language)."""

from __future__ import annotations

from collections.abc import Collection

from .catalogue import CATALOGUES, REFERENCE_LANGUAGE, phrasebook
from .photos import PhotoProblem
from .recipients import RecipientProblem, country_list
from .records import CreationOutcome, FailureReason, RequestKind
from .settings import Limits, Settings
from .styles import StyleBook

_PROMPT_PREVIEW = 60
EN = REFERENCE_LANGUAGE


def _preview(prompt: str) -> str:
    prompt = " ".join(prompt.split())
    if len(prompt) <= _PROMPT_PREVIEW:
        return prompt
    return prompt[: _PROMPT_PREVIEW - 1].rstrip() + "…"


# Every message about a request ends with its reference (records.reference_for), so the person
# can quote it; the marker is the same in every language. Crash recovery (delivery.py) finds
# our own message at Twilio by its whole body: the caption, or one of the failure notices, each
# built only here, in the request's language.
REFERENCE_MARKER = "Ref"


def _referenced(text: str, reference: str) -> str:
    return f"{text} {REFERENCE_MARKER} {reference}"


def _open(key: str, keyword: str) -> str:
    """A message's form for a number with a keyword, or its `_open` form without one."""
    return key if keyword else f"{key}_open"


def keyword_in(language: str, settings: Settings) -> str:
    """The keyword to show in `language`: SMS_KEYWORD in the number's own language, else that
    language's keyword (DIBUJA); empty when the number takes every text as a prompt."""
    if not settings.sms_keyword:
        return ""
    if language == settings.default_language:
        return settings.sms_keyword
    return phrasebook(language).words.keyword


def languages_list() -> str:
    """The codes a person can choose, as `LANGUAGE <code>` takes them."""
    return ", ".join(CATALOGUES)


def picture_caption(prompt: str, reference: str, language: str = EN) -> str:
    """The MMS's words. They say that a reply changes the picture (conversation.py)."""
    return _referenced(phrasebook(language).text("caption", prompt=_preview(prompt)), reference)


_FAILURES = {
    FailureReason.REFUSED: "failure_refused",
    FailureReason.PROVIDER_BUSY: "failure_busy",
    FailureReason.PROVIDER_ERROR: "failure_error",
    FailureReason.BAD_RESPONSE: "failure_error",
    FailureReason.MODEL_UNAVAILABLE: "failure_model_unavailable",
    FailureReason.TOO_LARGE: "failure_too_large",
    FailureReason.EXPIRED: "failure_expired",
}


def failure_notice(reason: FailureReason, prompt: str, reference: str, language: str = EN) -> str:
    key = _FAILURES.get(reason, "failure_error")
    return _referenced(phrasebook(language).text(key, prompt=_preview(prompt)), reference)


def failure_notices(prompt: str, reference: str, language: str = EN) -> frozenset[str]:
    """Every failure notice a request can have been sent. Crash recovery takes only these (or
    the caption) as "already sent": the acknowledgement carries the same Ref, and Twilio keeps
    it as a message too."""
    return frozenset(
        failure_notice(reason, prompt, reference, language) for reason in FailureReason
    )


# --- Replies to people who call or text us ------------------------------------------------


_ACCEPTED_FOLLOW_UP = {
    RequestKind.AGAIN: "accepted_again",
    RequestKind.REFINE: "accepted_refine",
    RequestKind.RESTYLE: "accepted_restyle",
}


def accepted_follow_up(kind: RequestKind, prompt: str, reference: str, language: str = EN) -> str:
    """A follow-up was taken; the picture comes by MMS in about a minute."""
    key = _ACCEPTED_FOLLOW_UP.get(kind, "accepted_by_text")
    return _referenced(phrasebook(language).text(key, prompt=_preview(prompt)), reference)


def accepted_by_text(prompt: str, reference: str, language: str = EN) -> str:
    return accepted_follow_up(RequestKind.NEW, prompt, reference, language)


def accepted_by_voice(language: str = EN) -> str:
    return phrasebook(language).text("accepted_by_voice")


def usage(keyword: str, language: str = EN) -> str:
    return phrasebook(language).text(_open("usage", keyword), keyword=keyword)


def _example_style(styles: StyleBook, language: str) -> str:
    return phrasebook(language).style_name(styles.names[0] if styles.names else "watercolor")


def help_text(keyword: str, styles: StyleBook, language: str = EN) -> str:
    """HELP: everything a person can do, in one message."""
    return phrasebook(language).text(
        _open("help", keyword),
        keyword=keyword,
        style=_example_style(styles, language),
        languages=languages_list(),
    )


def styles_list(keyword: str, styles: StyleBook, language: str = EN) -> str:
    book = phrasebook(language)
    if not styles.names:
        return book.text("no_styles")
    names = [book.style_name(name) for name in styles.names]
    return book.text(
        _open("styles_list", keyword), keyword=keyword, styles=", ".join(names), style=names[0]
    )


def nothing_to_follow(keyword: str, language: str = EN) -> str:
    return phrasebook(language).text(_open("nothing_to_follow", keyword), keyword=keyword)


def language_set(language: str) -> str:
    """The confirmation of `LANGUAGE <code>`, in the language chosen."""
    return phrasebook(language).text("language_set")


def language_unknown(language: str = EN) -> str:
    return phrasebook(language).text("language_unknown", languages=languages_list())


def gallery_link(link: str, new: bool, language: str = EN) -> str:
    return phrasebook(language).text("gallery_new_link" if new else "gallery_link", link=link)


def picture_by_link(prompt: str, link: str, language: str = EN) -> str:
    """For a picture whose MMS never reached the phone."""
    return phrasebook(language).text("picture_by_link", prompt=_preview(prompt), link=link)


def no_gallery(language: str = EN) -> str:
    return phrasebook(language).text("no_gallery")


def nothing_to_undo(language: str = EN) -> str:
    return phrasebook(language).text("nothing_to_undo")


def still_making(language: str = EN) -> str:
    return phrasebook(language).text("still_making")


def photo_received(language: str = EN) -> str:
    return phrasebook(language).text("photo_received")


_PHOTO_REFUSALS = {
    PhotoProblem.FOREIGN_HOST: "photo_unreachable",
    PhotoProblem.UNREACHABLE: "photo_unreachable",
    PhotoProblem.NOT_AN_IMAGE: "photo_not_an_image",
    PhotoProblem.TOO_LARGE: "photo_too_large",
    PhotoProblem.UNREADABLE: "photo_unreadable",
}


def photo_refused(problem: PhotoProblem, language: str = EN) -> str:
    return phrasebook(language).text(_PHOTO_REFUSALS[problem])


def empty_prompt(keyword: str, language: str = EN) -> str:
    return phrasebook(language).text(_open("empty_prompt", keyword), keyword=keyword)


def prompt_too_long(length: int, limit: int, language: str = EN) -> str:
    book = phrasebook(language)
    return book.count("prompt_too_long", limit, length=book.number(length))


def text_us_instead(keyword: str, language: str = EN) -> str:
    """For a caller whose number their carrier does not vouch for (SHAKEN/STIR): we cannot
    tell it is theirs, and the picture would go to whoever owns it."""
    return phrasebook(language).text(_open("text_us_instead", keyword), keyword=keyword)


def opted_out_by_voice(language: str = EN) -> str:
    return phrasebook(language).text("opted_out_by_voice")


def hidden_number(language: str = EN) -> str:
    """For a caller who withheld their number: Twilio hands us a stand-in that reaches nobody.
    Written to be said on the call; a text always carries the sender's number."""
    return phrasebook(language).text("hidden_number")


def cannot_take_request(language: str = EN) -> str:
    return phrasebook(language).text("cannot_take_request")


def earlier_request_failed(language: str = EN) -> str:
    return phrasebook(language).text("earlier_request_failed")


def not_available(language: str = EN) -> str:
    return phrasebook(language).text("not_available")


def limit_reached(limit: CreationOutcome | None, limits: Limits, language: str = EN) -> str:
    """Why we will not make another picture right now, and when to try again."""
    book = phrasebook(language)
    if limit is CreationOutcome.PER_NUMBER_HOUR:
        return book.count("limit_per_hour", limits.per_number_hour or 0)
    if limit is CreationOutcome.PER_NUMBER_DAY:
        return book.count("limit_per_day", limits.per_number_day or 0)
    return book.text("limit_everyone")


_RECIPIENT_PROBLEMS = {
    RecipientProblem.NOT_A_NUMBER: "recipient_not_a_number",
    RecipientProblem.NOT_VALID: "recipient_not_valid",
    RecipientProblem.PREMIUM_OR_SHARED: "recipient_premium",
    RecipientProblem.COUNTRY_NOT_ALLOWED: "recipient_country_not_allowed",
}


def unreachable(problem: RecipientProblem, allowed: Collection[str], language: str = EN) -> str:
    """Why we cannot send a picture to the number, naming the countries we can send to."""
    book = phrasebook(language)
    key = _RECIPIENT_PROBLEMS.get(problem, "recipient_not_mobile")
    if not allowed and key in ("recipient_country_not_allowed", "recipient_not_mobile"):
        return book.text("recipient_no_country")
    return book.text(key, countries=countries_in(allowed, language))


def countries_in(allowed: Collection[str], language: str) -> str:
    """The countries as the language lists them: "the US and Canada", "Estados Unidos y
    Canadá" (Babel's CLDR names and list patterns; English keeps the names people say)."""
    if language == EN:
        return country_list(allowed)
    from babel.core import Locale
    from babel.lists import format_list

    names = Locale.parse(language).territories
    listed = [names.get(code, code) for code in dict.fromkeys(allowed)]
    return str(format_list(listed, locale=language))


def closed_for_now(language: str = EN) -> str:
    return phrasebook(language).text("closed_for_now")


def no_whatsapp(language: str = EN) -> str:
    return phrasebook(language).text("no_whatsapp")


def prompt_refused(language: str = EN) -> str:
    return phrasebook(language).text("prompt_refused")
