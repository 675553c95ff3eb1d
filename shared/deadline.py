"""How long a caller waits for `generate`'s answer, and what is left of it.

Twilio Studio's HTTP widget takes its `failed` branch unless it gets a 2xx within 10 s, and the
incoming-message webhook waits about 15 s [DOC; real-account note §5]. A cold start spends some
of that before our code runs, so the Studio path aims well inside it. Calls that may be slow
(moderation, the publish and its one retry) are given only what is left, or skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

# Studio: 10 s, less a cold start's import and secret reads (measured 1-2 s) and a margin.
STUDIO_BUDGET_S = 7.0
# The incoming-message webhook: 15 s, with the same allowance.
WEBHOOK_BUDGET_S = 12.0


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        return max(0.0, self.at - time.monotonic())


def time_left(deadline: Deadline | None, wanted: float) -> float:
    """`wanted` seconds, or what is left before `deadline` if that is less."""
    return wanted if deadline is None else min(wanted, deadline.left())
