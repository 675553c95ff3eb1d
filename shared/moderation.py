"""Optional prompt check with OpenAI's moderation endpoint, before any picture is paid for.

Off by default (MODERATION=on turns it on). It adds one call before `generate` answers, so it
fails open: if the check itself fails, the prompt goes ahead and the image model's own safety
system still applies. A flagged prompt is refused kindly and costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from . import logs
from .deadline import Deadline, time_left
from .secrets import Secret

MODEL = "omni-moderation-latest"
# The check answers in well under a second; it fails open, so short timeouts cost nothing.
TIMEOUT_S = (1.0, 1.5)
# A whole check, plus a short publish that must still follow it inside Studio's budget.
CHECK_S = sum(TIMEOUT_S) + 2.0


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()


def check_prompt(
    prompt: str,
    base_url: str,
    api_key: Secret,
    session: requests.Session,
    deadline: Deadline | None = None,
) -> Verdict:
    """Ask the moderation endpoint about `prompt`; not flagged if it cannot answer, or if
    the caller cannot wait for it (a whole check must fit what is left of `deadline`)."""
    if time_left(deadline, CHECK_S) < CHECK_S:
        logs.warning("no time for the moderation check; letting the prompt through")
        return Verdict(flagged=False)
    try:
        response = session.post(
            f"{base_url}/moderations",
            json={"model": MODEL, "input": prompt},
            headers={"Authorization": f"Bearer {api_key.reveal()}"},
            timeout=TIMEOUT_S,
        )
        response.raise_for_status()
        return read_verdict(response.json())
    except (requests.RequestException, ValueError, RecursionError) as exc:
        logs.warning(
            "moderation check failed; letting the prompt through", error=type(exc).__name__
        )
        return Verdict(flagged=False)


def read_verdict(payload: Any) -> Verdict:
    """The verdict in a moderation answer, or ValueError for any other shape (so that a
    changed or broken answer fails open instead of failing the request)."""
    results = payload.get("results") if isinstance(payload, dict) else None
    result = results[0] if isinstance(results, list) and results else None
    if not isinstance(result, dict) or not isinstance(result.get("flagged"), bool):
        raise ValueError("not a moderation answer")
    categories = result.get("categories")
    hits = categories.items() if isinstance(categories, dict) else ()
    return Verdict(
        flagged=result["flagged"],
        categories=tuple(sorted(str(name) for name, hit in hits if hit is True)),
    )
