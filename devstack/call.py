"""`make call` and `make text`: play a phone call or a text message through the real Studio
flow (studio/flow.json) into the local stack, print the conversation, then the picture.

The Studio runner executes the flow as Twilio Studio would: it follows the transitions,
renders Liquid, and signs its HTTP requests to `generate` with the account's auth token.
`--language es` makes the caller choose Spanish in the call's language menu: they press * at
the greeting, listen until Spanish's line, and press its key.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from deploy.studio import load_flow
from shared.catalogue import CATALOGUES, REFERENCE_LANGUAGE

from .stack import DEMO_FROM, DEMO_TO, ROOT, Ports, Stack
from .studio_runner import (
    Caller,
    Execution,
    TwilioAccount,
    format_transcript,
    run_call,
    run_message,
)

TIMEOUT_S = 60.0


def account_for(env: dict[str, str]) -> TwilioAccount:
    return TwilioAccount(
        account_sid=env["TWILIO_ACCOUNT_SID"],
        auth_token=env["TWILIO_AUTH_TOKEN"],
        api_base_url=env["TWILIO_API_BASE_URL"],
    )


def studio_flow(env: dict[str, str]) -> dict[str, Any]:
    """studio/flow.json as `./deploy.sh studio` would publish it for this stack."""
    default_language = env.get("DEFAULT_LANGUAGE") or REFERENCE_LANGUAGE
    return load_flow(
        env["GENERATE_URL"], env.get("STUDIO_FLOW_KEY"), default_language=default_language
    )


def choosing(language: str) -> list[str | None]:
    """What a caller does to choose `language` in the call's menu: press * at the greeting,
    listen to the menu (one line per language, in the catalogues' order) until the line of
    `language`, and press its key."""
    position = list(CATALOGUES).index(language)
    return ["dtmf:*", *[None] * position, f"dtmf:{CATALOGUES[language].menu_key}"]


def play_call(
    env: dict[str, str],
    said: list[str | None],
    caller: str = DEMO_TO,
    stir_verstat: str | None = "TN-Validation-Passed-A",
    from_country: str | None = None,
) -> Execution:
    """A call from `caller` (in `from_country`, if given) who says (or keys in) `said`."""
    return run_call(
        studio_flow(env),
        from_=caller,
        to=DEMO_FROM,
        caller=Caller(said),
        account=account_for(env),
        stir_verstat=stir_verstat,
        from_country=from_country,
    )


def send_text(env: dict[str, str], body: str, sender: str = DEMO_TO) -> Execution:
    return run_message(
        studio_flow(env), from_=sender, to=DEMO_FROM, body=body, account=account_for(env)
    )


def wait_for_picture(stack: Stack, number: str, after: int = 0) -> dict[str, Any] | None:
    """The first delivered MMS with media to `number` beyond the first `after` ones, if one
    arrives within the timeout."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        pictures = [
            message
            for message in stack.outbox()
            if message.get("to") == number
            and message.get("media")
            and message.get("status") == "delivered"
        ]
        if len(pictures) > after:
            return pictures[after]
        time.sleep(0.2)
    return None


def forget_earlier_calls(env: dict[str, str]) -> None:
    """Start each `make call` afresh: the pictures of earlier runs are gone from the outbox
    and Storage, so their rows must not be offered for a change, and the language an earlier
    call chose is not remembered."""
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("delete from public.requests where recipient = %s", (DEMO_TO,))
        conn.execute("delete from public.pending_photos where address = %s", (DEMO_TO,))
        conn.execute("delete from public.person_languages where address = %s", (DEMO_TO,))


def show(execution: Execution, stack: Stack, after: int = 0) -> int:
    """Print the conversation and the picture it brought; 0 when one arrived."""
    print(format_transcript(execution))
    if execution.status != "ended":
        print(f"\nthe flow stopped: {execution.error}", file=sys.stderr)
        return 1
    message = wait_for_picture(stack, DEMO_TO, after)
    if message is None:
        print(f"\nno picture arrived within {TIMEOUT_S:.0f} s", file=sys.stderr)
        return 1
    print(f"\nMMS {message['sid']}: {message['body']}")
    print(f"Delivered picture: {message['media'][0]['path']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("words", nargs="?", default="a crab holding a light saber")
    parser.add_argument("--text", action="store_true", help="send WORDS as a text message")
    parser.add_argument(
        "--follow-up",
        default="",
        help="then call (or text) again and say this: a change, or 'again'",
    )
    parser.add_argument(
        "--language",
        choices=list(CATALOGUES),
        help="the caller chooses this language in the call's menu (* then its key)",
    )
    parser.add_argument("--dir", type=Path, default=ROOT / ".devstack" / "call")
    args = parser.parse_args()

    for leftover in ("outbox", "storage"):
        shutil.rmtree(args.dir / leftover, ignore_errors=True)
    stack = Stack(workdir=args.dir, ports=Ports.free(), function_logs=args.dir / "logs")
    try:
        env = stack.start()
        forget_earlier_calls(env)
        said = [args.words] + ([args.follow_up] if args.follow_up else [])
        for turn, words in enumerate(said):
            if turn:
                print("\n" + "-" * 72 + "\nA little later, the same number again:\n")
            if args.text:
                print(f"{DEMO_TO} texts {DEMO_FROM}: {words}\n")
                execution = send_text(env, words)
            else:
                print(f"{DEMO_TO} calls {DEMO_FROM}\n")
                # The second call is greeted in the language the first one chose.
                keys = choosing(args.language) if args.language and not turn else []
                execution = play_call(env, [*keys, words])
            if (failed := show(execution, stack, after=turn)) != 0:
                return failed
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
