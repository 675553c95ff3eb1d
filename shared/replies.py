"""Every sentence the person on the phone reads. Kept together so they stay consistent."""

from __future__ import annotations

from .records import FailureReason

_PROMPT_PREVIEW = 60


def _preview(prompt: str) -> str:
    prompt = " ".join(prompt.split())
    if len(prompt) <= _PROMPT_PREVIEW:
        return prompt
    return prompt[: _PROMPT_PREVIEW - 1].rstrip() + "…"


def picture_caption(prompt: str, reference: str) -> str:
    return f"Here is your picture of “{_preview(prompt)}”. Ref {reference}"


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
    FailureReason.EXPIRED: (
        "Sorry, your picture of “{prompt}” took too long and was cancelled. Please try again."
    ),
}


def failure_notice(reason: FailureReason, prompt: str, reference: str) -> str:
    template = _FAILURES.get(reason, _FAILURES[FailureReason.PROVIDER_ERROR])
    return template.format(prompt=_preview(prompt)) + f" Ref {reference}"
