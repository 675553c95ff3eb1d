"""Every sentence the person on the phone reads. Kept together so they stay consistent."""

from __future__ import annotations

from .photos import PhotoProblem
from .records import CreationOutcome, FailureReason, RequestKind
from .settings import Limits
from .styles import StyleBook

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
    """The MMS's words. They say that a reply changes the picture (conversation.py)."""
    return _referenced(
        f"Here is your picture of “{_preview(prompt)}”. Reply to change it, or AGAIN.", reference
    )


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


_ACCEPTED_FOLLOW_UP = {
    RequestKind.AGAIN: "Got it! Another take of “{prompt}” is on its way.",
    RequestKind.REFINE: "Got it! Changing your picture: “{prompt}”. It's on its way.",
    RequestKind.RESTYLE: "Got it! Your photo is on its way back: “{prompt}”.",
}


def accepted_follow_up(kind: RequestKind, prompt: str, reference: str) -> str:
    """A follow-up was taken; the picture comes by MMS in about a minute."""
    template = _ACCEPTED_FOLLOW_UP.get(kind)
    if template is None:
        return accepted_by_text(prompt, reference)
    return _referenced(template.format(prompt=_preview(prompt)), reference)


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


def help_text(keyword: str, styles: StyleBook) -> str:
    """HELP: everything a person can do, in one message."""
    how = f"Text {keyword} followed by" if keyword else "Text us"
    draw = f"{keyword} " if keyword else ""
    example_style = styles.names[0] if styles.names else "watercolor"
    return (
        f"{how} what you'd like to see, e.g. “{draw}a fox in the snow”. Then reply to change "
        "it (“make it night”), AGAIN for another take, or UNDO to go back. Add a style: "
        f"“{draw}{example_style}: a fox” (STYLES lists them), or send a photo to restyle it. "
        "Reply STOP to opt out."
    )


def styles_list(keyword: str, styles: StyleBook) -> str:
    if not styles.names:
        return "There are no styles to choose from right now."
    draw = f"{keyword} " if keyword else ""
    first = styles.names[0]
    return (
        f"Styles: {', '.join(styles.names)}. Text “{draw}{first}: a fox”, or reply "
        f"“{first}” to restyle your last picture."
    )


def nothing_to_follow(keyword: str) -> str:
    how = f"Text {keyword} and" if keyword else "Text"
    return f"You have no recent picture to change. {how} what you'd like to see to start one."


def gallery_link(link: str, new: bool) -> str:
    what = "Your new private link" if new else "Your pictures, at full size"
    return f"{what}: {link} Keep it to yourself; text NEWLINK for a new one."


def picture_by_link(prompt: str, link: str) -> str:
    """For a picture whose MMS never reached the phone."""
    return (
        f"Your picture of “{_preview(prompt)}” couldn't reach your phone as a picture "
        f"message. See it here: {link}"
    )


def no_gallery() -> str:
    return "Sorry, there is no gallery on this number."


def nothing_to_undo() -> str:
    return "There's nothing to undo: this is the first version of your picture."


def still_making() -> str:
    return "Your picture is still being made; reply once it arrives to change it."


def photo_received() -> str:
    return (
        "Got your photo! Reply with what to do with it, e.g. “as a watercolor” or "
        "“make me a superhero”."
    )


_PHOTO_REFUSALS = {
    PhotoProblem.FOREIGN_HOST: "Sorry, we couldn't open that picture. Please send it again.",
    PhotoProblem.UNREACHABLE: "Sorry, we couldn't open that picture. Please send it again.",
    PhotoProblem.NOT_AN_IMAGE: "Sorry, that isn't a picture we can use. Please send a photo.",
    PhotoProblem.TOO_LARGE: "Sorry, that picture is too large. Please send a smaller one.",
    PhotoProblem.UNREADABLE: "Sorry, we couldn't read that picture. Please send another.",
}


def photo_refused(problem: PhotoProblem) -> str:
    return _PHOTO_REFUSALS[problem]


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


def closed_for_now() -> str:
    return "Sorry, we're closed for now and aren't making pictures. Please try again later."


def no_whatsapp() -> str:
    return "Sorry, we don't send pictures on WhatsApp. Text or call our number instead."


def prompt_refused() -> str:
    return "Sorry, we can't make a picture of that. Try describing something else."
