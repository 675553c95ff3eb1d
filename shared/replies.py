"""Every sentence the person on the phone reads. Kept together so they stay consistent."""

from __future__ import annotations

from .records import CreationOutcome, FailureReason
from .settings import Limits

_PROMPT_PREVIEW = 60


def _preview(prompt: str) -> str:
    prompt = " ".join(prompt.split())
    if len(prompt) <= _PROMPT_PREVIEW:
        return prompt
    return prompt[: _PROMPT_PREVIEW - 1].rstrip() + "…"


# Every message about a request ends with its reference (records.reference_for), so the person
# can quote it. Crash recovery (delivery.py) finds our own message at Twilio by its whole body:
# the caption, or one of the failure notices, each built only here.
REFERENCE_MARKER = "Ref"


def _referenced(text: str, reference: str) -> str:
    return f"{text} {REFERENCE_MARKER} {reference}"


def picture_caption(prompt: str, reference: str) -> str:
    return _referenced(f"Here is your picture of “{_preview(prompt)}”.", reference)


_FAILURES = {
    FailureReason.REFUSED: (
        "Sorry, we can't make a picture of “{prompt}”: the image service turned it down. "
        "Try describing something else."
    ),
    FailureReason.PROVIDER_BUSY: (
        "Sorry, the image service is too busy right now and your picture of “{prompt}” "
        "couldn't be made. Please try again in a few minutes."
    ),
    FailureReason.PROVIDER_ERROR: (
        "Sorry, something went wrong making your picture of “{prompt}”. Please try again later."
    ),
    FailureReason.BAD_RESPONSE: (
        "Sorry, something went wrong making your picture of “{prompt}”. Please try again later."
    ),
    FailureReason.MODEL_UNAVAILABLE: (
        "Sorry, the image service we use is being updated and couldn't make your picture of "
        "“{prompt}”. Please try again later."
    ),
    FailureReason.TOO_LARGE: (
        "Sorry, your picture of “{prompt}” came out too large for us to deliver. "
        "Please try again later."
    ),
    FailureReason.EXPIRED: (
        "Sorry, your picture of “{prompt}” took too long and was cancelled. Please try again."
    ),
}


def failure_notice(reason: FailureReason, prompt: str, reference: str) -> str:
    template = _FAILURES.get(reason, _FAILURES[FailureReason.PROVIDER_ERROR])
    return _referenced(template.format(prompt=_preview(prompt)), reference)


def failure_notices(prompt: str, reference: str) -> frozenset[str]:
    """Every failure notice a request can have been sent. Crash recovery takes only these (or
    the caption) as "already sent": the acknowledgement carries the same Ref, and Twilio keeps
    it as a message too."""
    return frozenset(failure_notice(reason, prompt, reference) for reason in FailureReason)


# --- Replies to people who call or text us ------------------------------------------------


def accepted_by_text(prompt: str, reference: str) -> str:
    return _referenced(
        f"Got it! Your picture of “{_preview(prompt)}” is on its way and should arrive in "
        "about a minute.",
        reference,
    )


def accepted_by_voice() -> str:
    return "Your picture is on its way by text message. It should arrive in about a minute."


def usage(keyword: str) -> str:
    how = f"Text {keyword} followed by" if keyword else "Text us"
    example = (
        f"{keyword} a crab holding a light saber" if keyword else "a crab holding a light saber"
    )
    return (
        f"{how} what you'd like to see, e.g. “{example}”, and we'll send you a picture. "
        "Reply STOP to opt out."
    )


def empty_prompt(keyword: str) -> str:
    example = f"{keyword} a fox in the snow" if keyword else "a fox in the snow"
    return f"Tell us what to draw, e.g. “{example}”."


def prompt_too_long(length: int, limit: int) -> str:
    return f"That's {length} characters; please describe your picture in {limit} or fewer."


def text_us_instead(keyword: str) -> str:
    """For a caller whose number their carrier does not vouch for (SHAKEN/STIR): we cannot
    tell it is theirs, and the picture would go to whoever owns it."""
    how = f"text {keyword} and what you'd like to see" if keyword else "text what you'd like to see"
    return (
        "Sorry, we can't confirm this call comes from the number it shows, so we can't send a "
        f"picture to it. Please {how} to this number instead."
    )


def opted_out_by_voice() -> str:
    return (
        "You have opted out of text messages from this number, so we can't send you a picture. "
        "Text START to this number, then call again."
    )


def hidden_number() -> str:
    """For a caller who withheld their number: Twilio hands us a stand-in that reaches nobody.
    Written to be said on the call; a text always carries the sender's number."""
    return (
        "We can't send a picture to a hidden number. "
        "Call again without hiding your number, or text us."
    )


def cannot_take_request() -> str:
    return "Sorry, we couldn't take your request right now. Please try again in a few minutes."


def earlier_request_failed() -> str:
    return "Sorry, we couldn't make that picture. Please try again."


def not_available() -> str:
    return "Sorry, this picture service isn't available to your number."


def limit_reached(limit: CreationOutcome | None, limits: Limits) -> str:
    """Why we will not make another picture right now, and when to try again."""
    if limit is CreationOutcome.PER_NUMBER_HOUR:
        return (
            f"You've had {limits.per_number_hour} pictures in the last hour, the most we make "
            "for one number. Please try again in a little while."
        )
    if limit is CreationOutcome.PER_NUMBER_DAY:
        return (
            f"You've had {limits.per_number_day} pictures today, the most we make for one "
            "number. Please try again tomorrow."
        )
    return "We've made all the pictures we can for today. Please try again tomorrow."


def no_whatsapp() -> str:
    return "Sorry, we don't send pictures on WhatsApp. Text or call our number instead."


def prompt_refused() -> str:
    return "Sorry, we can't make a picture of that. Try describing something else."
