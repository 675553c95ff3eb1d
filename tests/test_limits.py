"""What the service may spend: per-number and global limits, the allowlist and the daily
budget, enforced in the database so that concurrent requests cannot slip past them."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import requests
from psycopg.types.json import Jsonb

from devstack.stack_client import StackClient, signed_post
from devstack.vendor_calls import incoming_text, reply_text
from shared.errors import ConfigError
from shared.settings import Limits, load_settings
from tests.minimal_settings import MINIMAL

pytestmark = pytest.mark.stack


def create(stack: StackClient, recipient: str, limits: dict[str, Any], cost: float = 0.03) -> str:
    rows = stack.sql(
        "select public.create_request(%s, '+15005550006', 'a fox', 'api', 'gpt-image-2.6-flare',"
        " '1024x1024', 'low', null, %s::numeric, %s) as r",
        recipient,
        cost,
        Jsonb(limits),
    )
    return str(rows[0]["r"]["outcome"])


def test_limits_settings_and_off_switches() -> None:
    limits = load_settings(
        {
            **MINIMAL,
            "LIMIT_PER_NUMBER_HOUR": "off",
            "DAILY_BUDGET_USD": "12.5",
            "ALLOWLIST": "+15551230001, +15551230002",
        }
    ).limits
    assert limits == Limits(
        per_number_hour=None,
        per_number_day=20,
        global_day=500,
        budget_usd=12.5,
        allowlist=("+15551230001", "+15551230002"),
    )
    assert "per_number_hour" not in limits.as_json()
    with pytest.raises(ConfigError, match="ALLOWLIST"):
        load_settings({**MINIMAL, "ALLOWLIST": "5551230001"})
    with pytest.raises(ConfigError, match="LIMIT_GLOBAL_DAY"):
        load_settings({**MINIMAL, "LIMIT_GLOBAL_DAY": "lots"})


def test_per_number_limits_count_whatsapp_and_sms_together(
    local_stack: StackClient, caller: str
) -> None:
    limits = {"per_number_hour": 2}
    assert create(local_stack, caller, limits) == "created"
    assert create(local_stack, f"whatsapp:{caller}", limits) == "created"
    assert create(local_stack, caller, limits) == "per_number_hour"
    assert create(local_stack, caller, {"per_number_day": 2}) == "per_number_day"
    assert create(local_stack, caller, {}) == "created"


SPENT_TODAY = (
    "select coalesce(sum(coalesce(cost_usd, estimated_cost_usd)), 0) as s from public.requests"
    " where created_at > now() - interval '24 hours'"
    " and failure_reason is distinct from 'publish_failed'"
    " and failure_reason is distinct from 'refused'"
)


def spent_today(stack: StackClient) -> float:
    return float(stack.sql(SPENT_TODAY)[0]["s"])


def test_the_allowlist_and_the_budget(local_stack: StackClient, caller: str) -> None:
    assert create(local_stack, caller, {"allowlist": ["+15550000000"]}) == "not_allowed"
    assert create(local_stack, caller, {"allowlist": [caller]}) == "created"
    spent = spent_today(local_stack)
    assert create(local_stack, caller, {"budget_usd": spent + 0.05}, cost=0.03) == "created"
    assert create(local_stack, caller, {"budget_usd": spent + 0.05}, cost=0.03) == "budget"


def test_the_budget_counts_what_a_picture_really_cost_once_known(
    local_stack: StackClient, caller: str
) -> None:
    spent = spent_today(local_stack)
    assert create(local_stack, caller, {}, cost=5.0) == "created"  # a dear estimate
    assert create(local_stack, caller, {"budget_usd": spent + 1.0}, cost=0.03) == "budget"
    # The answer's tokens said it cost a cent: the estimate no longer counts.
    local_stack.sql(
        "update public.requests set cost_usd = 0.01 where recipient = %s and estimated_cost_usd = 5",
        caller,
    )
    assert create(local_stack, caller, {"budget_usd": spent + 1.0}, cost=0.03) == "created"


def test_concurrent_requests_cannot_slip_past_a_cap(local_stack: StackClient, caller: str) -> None:
    outcomes: Counter[str] = Counter()
    barrier = threading.Barrier(16)

    def ask() -> None:
        with psycopg.connect(local_stack.env["DATABASE_URL"], autocommit=True) as conn:
            barrier.wait()
            row = conn.execute(
                "select public.create_request(%s, '+15005550006', 'a fox', 'api', 'm', 's', 'q',"
                " null, 0, %s)",
                (caller, Jsonb({"per_number_hour": 5})),
            ).fetchone()
            assert row is not None
            outcomes[row[0]["outcome"]] += 1

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == Counter({"created": 5, "per_number_hour": 11})


def test_a_limited_texter_is_told_kindly_and_nothing_is_spent(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("LIMIT_PER_NUMBER_HOUR", "1")
    assert "on its way" in reply_text(signed_post(stack, incoming_text(caller, "DRAW a fox")))
    # The first picture's callbacks are QStash messages too: let them all arrive before counting.
    stack.stack.wait_idle(10)
    published = len(stack.qstash_messages())
    second = reply_text(signed_post(stack, incoming_text(caller, "DRAW another fox")))
    assert "1 picture in the last hour" in second
    assert len(stack.qstash_messages()) == published
    assert len(stack.sql("select id from public.requests where recipient = %s", caller)) == 1


def test_a_limited_caller_hears_why(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("LIMIT_GLOBAL_DAY", "0")
    form = {
        "prompt": "a fox",
        "to": caller,
        "from": "+15005550006",
        "channel": "voice",
        "source_ref": "CA" + caller[-10:].rjust(32, "0"),
        "stir_verstat": "TN-Validation-Passed-A",
    }
    answer = signed_post(stack, form).json()
    assert answer["accepted"] is False
    assert "all the pictures we can for today" in answer["message"]


def test_an_operator_gets_429_and_403(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("DAILY_BUDGET_USD", "0")
    over = stack.submit("a fox", to=caller)
    assert over.status_code == 429 and "budget" in over.json()["error"]
    function_setting("DAILY_BUDGET_USD", "off")
    function_setting("ALLOWLIST", "+15550000000")
    refused = requests.post(
        stack.env["GENERATE_URL"],
        json={"to": caller, "prompt": "a fox"},
        headers={"X-Operator-Key": stack.env["OPERATOR_KEY"]},
        timeout=10,
    )
    assert refused.status_code == 403
