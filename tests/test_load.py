"""Bounded load on the local stack: concurrent prompts while QStash duplicates every delivery
and callback, and a concurrent burst against a per-number cap, all through the real HTTP path.
`python -m bench.load` is the unbounded version that prints figures."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devstack.stack_client import StackClient

pytestmark = pytest.mark.stack

PROMPTS = 12
DUPLICATES = 3
FINISH_TIMEOUT_S = 20.0

# +15557000000 onwards: a range no other test uses, so outbox lookups see only this file's.
_numbers = itertools.count(0)


def fresh_number() -> str:
    return f"+1555700{next(_numbers):04d}"


def submit_together(stack: StackClient, numbers: list[str], prompt: str) -> list[requests.Response]:
    """One request per entry of `numbers`, all released at once by a barrier."""
    barrier = threading.Barrier(len(numbers))

    def one(index: int) -> requests.Response:
        barrier.wait(timeout=10)
        return stack.submit(f"{prompt} #{index}", to=numbers[index])

    with ThreadPoolExecutor(max_workers=len(numbers)) as pool:
        return list(pool.map(one, range(len(numbers))))


def wait_all_finished(stack: StackClient, ids: list[str]) -> list[dict[str, Any]]:
    """The rows once every one is delivered or failed, and QStash and Twilio are idle."""
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    while True:
        rows = stack.sql("select * from public.requests where id = any(%s::uuid[])", ids)
        if len(rows) == len(ids) and all(r["status"] in ("delivered", "failed") for r in rows):
            break
        if time.monotonic() >= deadline:
            stuck = Counter(r["status"] for r in rows)
            raise AssertionError(f"not finished within {FINISH_TIMEOUT_S:.0f} s: {stuck}")
        time.sleep(0.05)
    assert stack.stack.wait_idle(10), "QStash or Twilio still busy"
    return stack.sql("select * from public.requests where id = any(%s::uuid[])", ids)


def callback_statuses(stack: StackClient, ids: set[str]) -> Counter[int | str]:
    """Statuses of QStash's callback attempts to composite for these requests. QStash records
    only the first copy's reply; the copies' replies are in `composite_statuses`."""
    statuses: Counter[int | str] = Counter()
    for message in stack.qstash_messages():
        request_id = parse_qs(urlsplit(message["url"]).query).get("request", [""])[0]
        if message["kind"] in ("callback", "failure_callback") and request_id in ids:
            statuses.update(a["status"] or a["error"] for a in message["attempts"])
    return statuses


def composite_statuses(log_output: str) -> Counter[int]:
    """Every status composite answered, duplicate copies included, from its JSON log lines
    (the in-process functions write them to the captured stdout)."""
    statuses: Counter[int] = Counter()
    for line in log_output.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("function") == "composite" and entry.get("message") == "request handled":
            statuses[entry["status"]] += 1
    return statuses


def test_concurrent_prompts_with_duplicated_callbacks_send_one_mms_each(
    stack: StackClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # The `stack` fixture's teardown (clear_faults) puts duplicate_deliveries back to 1.
    stack.qstash_config(duplicate_deliveries=DUPLICATES)
    numbers = [fresh_number() for _ in range(PROMPTS)]

    responses = submit_together(stack, numbers, "a lighthouse in a storm")
    assert [r.status_code for r in responses] == [202] * PROMPTS
    ids = [r.json()["request_id"] for r in responses]
    rows = wait_all_finished(stack, ids)

    assert Counter(r["status"] for r in rows) == Counter({"delivered": PROMPTS})
    for number in numbers:
        messages = stack.messages_to(number)
        assert [bool(m["media"]) for m in messages] == [True], f"{number}: {messages}"
    # 503 is by design: a copy arriving while another copy of the same callback holds the
    # claim answers "busy", and QStash retries. 204 answers Twilio's delivery receipts.
    # A 500 would be a bug.
    recorded = callback_statuses(stack, set(ids))
    assert set(recorded) <= {200, 204, 503}, recorded
    assert recorded[200] >= PROMPTS
    answered = composite_statuses(capsys.readouterr().out)
    assert set(answered) <= {200, 204, 503}, answered
    assert answered.total() >= PROMPTS * DUPLICATES


def test_a_concurrent_burst_for_one_number_gets_exactly_the_hourly_cap(
    stack: StackClient, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("LIMIT_PER_NUMBER_HOUR", "3")
    number = fresh_number()

    responses = submit_together(stack, [number] * 10, "a capped fox")

    assert Counter(r.status_code for r in responses) == Counter({202: 3, 429: 7})
    limited = [r.json()["error"] for r in responses if r.status_code == 429]
    assert all("per_number_hour" in error for error in limited), limited
    rows = stack.sql("select id, status from public.requests where recipient = %s", number)
    assert len(rows) == 3
    finished = wait_all_finished(stack, [str(r["id"]) for r in rows])
    assert [r["status"] for r in finished] == ["delivered"] * 3
    assert len(stack.messages_to(number)) == 3
