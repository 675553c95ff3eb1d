"""The console's sign-in cookie and CSRF token, and what its dashboard draws: pure functions."""

from __future__ import annotations

import pytest

from shared import console_view
from shared.console_sessions import (
    cookie_is_secure,
    csrf_ok,
    csrf_token,
    key_matches,
    new_session_cookie,
    read_session,
)

KEY = "operator-key-123"
HOUR = 3600


def test_a_session_cookie_reads_back_until_it_expires() -> None:
    cookie = new_session_cookie(KEY, now=1_000_000)
    session = read_session(cookie, KEY, HOUR, now=1_000_000 + 10)
    assert session is not None and session.issued == 1_000_000
    assert read_session(cookie, KEY, HOUR, now=1_000_000 + HOUR + 1) is None
    assert read_session(cookie, KEY, HOUR, now=1_000_000 - 5) is None  # from the future


@pytest.mark.parametrize(
    "cookie",
    [None, "", "a.b", "1.2.3.4", "x.nonce.mac", "1000000.nonce." + "0" * 64],
)
def test_a_malformed_or_forged_cookie_is_no_session(cookie: str | None) -> None:
    assert read_session(cookie, KEY, HOUR, now=1_000_000) is None


def test_a_new_operator_key_signs_everyone_out() -> None:
    cookie = new_session_cookie(KEY, now=1_000_000)
    assert read_session(cookie, "a-new-key", HOUR, now=1_000_000) is None


def test_a_tampered_issue_time_fails_the_mac() -> None:
    issued, nonce, mac = new_session_cookie(KEY, now=1_000_000).split(".")
    assert read_session(f"{int(issued) + 1}.{nonce}.{mac}", KEY, HOUR, now=1_000_001) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    first = read_session(new_session_cookie(KEY, now=1), KEY, HOUR, now=2)
    second = read_session(new_session_cookie(KEY, now=1), KEY, HOUR, now=2)
    assert first is not None and second is not None
    assert csrf_ok(csrf_token(KEY, first), KEY, first)
    assert not csrf_ok(csrf_token(KEY, second), KEY, first)
    assert not csrf_ok(None, KEY, first) and not csrf_ok("", KEY, first)
    assert not csrf_ok("\ud800", KEY, first)  # a lone surrogate is simply wrong


def test_the_operator_key_is_compared_whole() -> None:
    assert key_matches(KEY, KEY)
    assert not key_matches(KEY[:-1], KEY) and not key_matches(None, KEY)
    assert not key_matches("", KEY) and not key_matches(KEY, "")


@pytest.mark.parametrize(
    ("url", "secure"),
    [
        ("http://127.0.0.1:8083", False),
        ("http://localhost:8083", False),
        ("https://gallery-abc-uc.a.run.app", True),
        ("http://example.com", True),
    ],
)
def test_the_cookie_is_secure_off_this_machine(url: str, secure: bool) -> None:
    assert cookie_is_secure(url) is secure


def test_the_chart_scales_to_the_busiest_hour() -> None:
    hours = [{"hour": "2026-12-01T10:00:00+00:00", "count": n} for n in (0, 5, 10)]
    bars = console_view.chart(hours)["bars"]
    assert [bar["h"] for bar in bars] == [0, 68, 136]
    assert bars[2]["y"] == console_view.CHART_HEIGHT - 136 and bars[1]["label"] == "10:00"
    assert all(bar["h"] == 0 for bar in console_view.chart([{"count": 0}] * 3)["bars"])
    assert console_view.chart([])["bars"] == []


@pytest.mark.parametrize(
    ("seconds", "words"), [(None, "no deliveries yet"), (12.4, "12 s"), (150, "2.5 min")]
)
def test_durations_in_words(seconds: float | None, words: str) -> None:
    assert console_view.duration(seconds) == words


def test_a_journey_lists_the_steps_taken_with_their_times() -> None:
    row = {
        "created_at": "2026-12-01T10:00:00+00:00",
        "generated_at": "2026-12-01T10:00:20+00:00",
        "send_started_at": None,
        "delivered_at": "2026-12-01T10:00:21.5+00:00",
        "failed_at": "not a time",
    }
    assert console_view.journey(row) == ["asked", "picture made +20.0 s", "delivered +21.5 s"]


def test_a_retired_model_says_what_to_change() -> None:
    assert "change IMAGE_MODEL" in console_view.model_status("gpt-image-1.5")["shutdown"]
    assert console_view.model_status("gpt-image-2.6-flare")["shutdown"].startswith("no ")


def test_counts_come_largest_first() -> None:
    assert console_view.counts({"failed": 2, "delivered": 5, "queued": 2}) == [
        ("delivered", 5),
        ("failed", 2),
        ("queued", 2),
    ]
    assert console_view.counts(None) == []
