"""`make demo`: one prompt through the whole pipeline on the local stack, end to end.

Starts PostgreSQL, the stand-ins and both functions (as real functions-framework processes),
sends a prompt to `generate` the way an operator would, waits for the MMS to reach the Twilio
stand-in, then prints the request's journey and the path of the delivered, framed JPEG. Then
the person replies with a change ("make it night"), as a text through Twilio's webhook, and
the demo waits for the refined picture: an edit of the first one's original.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from supabase import create_client

from .stack import ROOT, Ports, Stack

DEFAULT_PROMPT = "a crab holding a light saber"
DEFAULT_FOLLOW_UP = "make it night"
TIMEOUT_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    parser.add_argument(
        "--follow-up", default=DEFAULT_FOLLOW_UP, help="the reply that changes the picture"
    )
    parser.add_argument("--dir", type=Path, default=ROOT / ".devstack" / "demo")
    args = parser.parse_args()

    shutil.rmtree(args.dir / "outbox", ignore_errors=True)
    shutil.rmtree(args.dir / "storage", ignore_errors=True)
    started = time.monotonic()
    print("Starting the local stack (PostgreSQL, QStash, OpenAI, Supabase, Twilio, Secret Manager")
    print("stand-ins, and both functions)…", flush=True)
    stack = Stack(workdir=args.dir, ports=Ports.free(), function_logs=args.dir / "logs")
    try:
        env = stack.start()
        print(f"  up in {time.monotonic() - started:.1f} s; function logs in {args.dir / 'logs'}")
        if (failed := run_demo(stack, env, args.prompt)) != 0:
            return failed
        return run_follow_up(stack, env, args.follow_up) if args.follow_up else 0
    finally:
        stack.stop()


def run_demo(stack: Stack, env: dict[str, str], prompt: str) -> int:
    print(f"\nA caller at {env['DEMO_TO']} asks {env['DEMO_FROM']} for: “{prompt}”")
    sent_at = time.monotonic()
    response = stack.request_picture(prompt)
    answered_ms = (time.monotonic() - sent_at) * 1000
    print(f"generate answered {response.status_code} in {answered_ms:.0f} ms: {response.text}")
    if response.status_code != 202:
        print("demo failed: generate did not accept the request", file=sys.stderr)
        return 1
    request_id = response.json()["request_id"]

    row = wait_for_outcome(env, request_id)
    if row is None:
        print(
            f"demo failed: no MMS within {TIMEOUT_S:.0f} s; see the function logs", file=sys.stderr
        )
        return 1
    stack.wait_idle(15)
    message = next((m for m in stack.outbox() if m.get("sid") == row.get("message_sid")), None)
    print_journey(row, stack.qstash_messages(), message)
    if row["status"] != "delivered" or message is None:
        print(f"demo failed: the request ended {row['status']}: {row.get('failure_detail')}")
        return 1
    media = [m["path"] for m in message.get("media", []) if m.get("path")]
    if not media:
        print("demo failed: the MMS reached Twilio without a picture", file=sys.stderr)
        return 1
    print(f"\nDelivered picture: {media[0]}")
    return 0


def run_follow_up(stack: Stack, env: dict[str, str], words: str) -> int:
    """The person replies to their picture; the reply becomes an edit of it."""
    print(f"\n{env['DEMO_TO']} replies: “{words}”")
    answer = requests.post(
        f"{env['TWILIO_API_BASE_URL']}/__dev/incoming",
        json={
            "from": env["DEMO_TO"],
            "to": env["DEMO_FROM"],
            "body": words,
            "url": env["GENERATE_URL"],
        },
        timeout=30,
    ).json()
    said = " ".join(str(reply.get("body")) for reply in answer.get("replies", []))
    print(f"generate answered {answer.get('webhook_status')}; the reply texted back: {said}")
    client = create_client(env["SUPABASE_URL"], env["SUPABASE_SECRET_KEY"])
    newest: Any = (
        client.table("requests")
        .select("id,kind,parent_id")
        .eq("recipient", env["DEMO_TO"])
        .order("created_at", desc=True)
        .limit(1)
        .execute()
        .data
    )
    if not newest or newest[0]["kind"] != "refine":
        print("demo failed: the reply did not become a refinement", file=sys.stderr)
        return 1
    row = wait_for_outcome(env, newest[0]["id"])
    stack.wait_idle(15)
    message = next(
        (m for m in stack.outbox() if row and m.get("sid") == row.get("message_sid")), None
    )
    media = [m["path"] for m in (message or {}).get("media", []) if m.get("path")]
    if row is None or row["status"] != "delivered" or not media:
        print("demo failed: the refined picture was not delivered", file=sys.stderr)
        return 1
    print(f"refined request {row['id']} (an edit of {row['parent_id']}) delivered")
    print(f"\nRefined picture: {media[0]}")
    return print_gallery_link(env)


def print_gallery_link(env: dict[str, str]) -> int:
    """The person texts PICTURES and gets the private link to their gallery; then where the
    operator's console is."""
    answer = requests.post(
        f"{env['TWILIO_API_BASE_URL']}/__dev/incoming",
        json={
            "from": env["DEMO_TO"],
            "to": env["DEMO_FROM"],
            "body": "PICTURES",
            "url": env["GENERATE_URL"],
        },
        timeout=30,
    ).json()
    said = " ".join(str(reply.get("body")) for reply in answer.get("replies", []))
    link = next((word for word in said.split() if word.startswith(env["GALLERY_URL"])), None)
    if link is None:
        print(f"demo failed: PICTURES got no gallery link: {said}", file=sys.stderr)
        return 1
    print(f"\nGallery link, texted for PICTURES (it works while a stack runs): {link}")
    print(f"Operator console (sign in with OPERATOR_KEY): {env['GALLERY_URL']}/admin")
    return 0


def wait_for_outcome(env: dict[str, str], request_id: str) -> dict[str, Any] | None:
    client = create_client(env["SUPABASE_URL"], env["SUPABASE_SECRET_KEY"])
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        rows: list[dict[str, Any]] = (
            client.table("requests").select("*").eq("id", request_id).execute().data  # type: ignore[assignment]
        )
        if rows and rows[0]["status"] in ("delivered", "failed"):
            return rows[0]
        time.sleep(0.2)
    return None


def _at(value: Any) -> float | None:
    """Seconds since the epoch from an ISO string or unix milliseconds."""
    if isinstance(value, int | float):
        return value / 1000
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return None


def print_journey(
    row: dict[str, Any], qstash: list[dict[str, Any]], message: dict[str, Any] | None
) -> None:
    origin = _at(row["created_at"]) or 0.0
    steps: list[tuple[float | None, str]] = [(origin, f"generate recorded request {row['id']}")]
    source = next((m for m in qstash if m.get("id") == row.get("qstash_message_id")), None)
    if source is not None:
        for attempt in source.get("attempts", []):
            status = attempt.get("status") or "no answer"
            steps.append((_at(attempt.get("at")), f"QStash → OpenAI stand-in: HTTP {status}"))
        for callback in (m for m in qstash if m.get("sourceMessageId") == source.get("id")):
            for attempt in callback.get("attempts", []):
                what = f"QStash → composite ({callback.get('kind')}): HTTP {attempt.get('status')}"
                steps.append((_at(attempt.get("at")), what))
    timings = row.get("timings") or {}
    if row.get("generated_at"):
        what = (
            f"framed in {timings.get('frame_ms', '?')} ms, stored in Supabase Storage in "
            f"{timings.get('upload_ms', '?')} ms ({row.get('image_bytes')} bytes)"
        )
        steps.append((_at(row["generated_at"]), what))
    if row.get("delivered_at"):
        what = (
            f"Twilio accepted MMS {row['message_sid']} in {timings.get('send_ms', '?')} ms; "
            "request delivered"
        )
        steps.append((_at(row["delivered_at"]), what))
    if row.get("failed_at"):
        steps.append((_at(row["failed_at"]), f"request failed: {row.get('failure_reason')}"))
    if message is not None:
        what = f"Twilio fetched the media; the MMS is {message.get('status')}"
        steps.append((None, what))
    steps.sort(key=lambda step: step[0] if step[0] is not None else float("inf"))
    print("\nJourney:")
    for when, what in steps:
        offset = f"+{when - origin:6.2f} s" if when is not None else "         "
        print(f"  {offset}  {what}")


if __name__ == "__main__":
    sys.exit(main())
