"""Optional prompt check with OpenAI's moderation endpoint, before any picture is paid for.

Off by default (MODERATION=on turns it on). It adds one call before `generate` answers, so it
fails open: if the check itself fails, the prompt goes ahead and the image model's own safety
system still applies. A flagged prompt is refused kindly and costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from . import logs
from .secrets import Secret

MODEL = "omni-moderation-latest"
TIMEOUT_S = (2.0, 3.0)


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    categories: tuple[str, ...] = ()


def check_prompt(prompt: str, base_url: str, api_key: Secret, session: requests.Session) -> Verdict:
    """Ask the moderation endpoint about `prompt`; not flagged if it cannot answer."""
    try:
        response = session.post(
            f"{base_url}/moderations",
            json={"model": MODEL, "input": prompt},
            headers={"Authorization": f"Bearer {api_key.reveal()}"},
            timeout=TIMEOUT_S,
        )
        response.raise_for_status()
        result = response.json()["results"][0]
        flagged = bool(result["flagged"])
        categories = tuple(sorted(k for k, v in result.get("categories", {}).items() if v))
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as exc:
        logs.warning(
            "moderation check failed; letting the prompt through", error=type(exc).__name__
        )
        return Verdict(flagged=False)
    return Verdict(flagged=flagged, categories=categories)
