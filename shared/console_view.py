"""What the operator console shows, from `console_stats` (computed in SQL): the hourly chart
as SVG bars, durations in words, each request's journey. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from . import image_models

CHART_WIDTH = 960
CHART_HEIGHT = 140
_JOURNEY = (
    ("created_at", "asked"),
    ("generated_at", "picture made"),
    ("send_started_at", "sending"),
    ("delivered_at", "delivered"),
    ("failed_at", "failed"),
)


def chart(hours: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Bars for requests per hour, scaled to the busiest hour (an empty day: no bars)."""
    peak = max((int(hour.get("count") or 0) for hour in hours), default=0)
    slot = CHART_WIDTH / max(len(hours), 1)
    bars = []
    for index, hour in enumerate(hours):
        count = int(hour.get("count") or 0)
        height = round((CHART_HEIGHT - 4) * count / peak) if peak else 0
        bars.append(
            {
                "x": round(index * slot + 2, 1),
                "y": CHART_HEIGHT - height,
                "w": round(slot - 4, 1),
                "h": height,
                "count": count,
                "label": str(hour.get("hour", ""))[11:16] or "?",
            }
        )
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "bars": bars}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "no deliveries yet"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def journey(row: Mapping[str, Any]) -> list[str]:
    """The steps a request went through, with the time each took from the request."""
    start = _time(row.get("created_at"))
    steps = []
    for field, name in _JOURNEY:
        when = _time(row.get(field))
        if when is None:
            continue
        offset = f" +{(when - start).total_seconds():.1f} s" if start and when != start else ""
        steps.append(f"{name}{offset}")
    return steps


def model_status(model: str) -> dict[str, str]:
    """The model in use, and what OpenAI has said about its end."""
    if model in image_models.RETIRED_MODELS:
        instead = image_models.RETIRED_MODELS[model]
        return {"name": model, "shutdown": f"shut down: change IMAGE_MODEL to {instead}"}
    return {"name": model, "shutdown": "no shutdown date announced"}


def counts(values: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    """A {name: count} object as rows, largest first."""
    rows = [(str(name), int(count)) for name, count in (values or {}).items()]
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def _time(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, datetime) else None
