"""`./deploy.sh studio`: create or update the Studio flow, and point the number at it.

Reads the account SID from TWILIO_ACCOUNT_SID, the auth token from TWILIO_AUTH_TOKEN and the
flow key from STUDIO_FLOW_KEY (the environment, never the command line). The flow key goes into
the flow's requests to `generate`, which takes it as proof the request came from our flow.
DEFAULT_LANGUAGE (as the functions have it; default `en`) is the language callers hear first
when neither `generate` nor their country says otherwise. Running it again changes nothing
unless the flow file, the function URL, the flow key, the default language or the number's
webhooks changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from shared.catalogue import REFERENCE_LANGUAGE
from shared.messaging import RedirectingHttpClient
from studio.build_flow import (
    FLOW_FILE,
    FLOW_KEY_PLACEHOLDER,
    URL_PLACEHOLDER,
    point_default_language,
)

__all__ = ["FLOW_FILE", "FLOW_KEY_PLACEHOLDER", "URL_PLACEHOLDER", "load_flow", "main"]

ROOT = Path(__file__).resolve().parent.parent
FLOW_NAME = "Picture Line"


def load_flow(
    generate_url: str,
    flow_key: str | None = None,
    path: Path = FLOW_FILE,
    default_language: str = REFERENCE_LANGUAGE,
) -> dict[str, Any]:
    """The Studio flow definition with `generate`'s URL and the flow key filled in, greeting
    callers of no known language in `default_language` (ValueError if the flow lacks it)."""
    text = path.read_text(encoding="utf-8")
    if URL_PLACEHOLDER not in text:
        raise ValueError(f"{path} has no {URL_PLACEHOLDER} placeholder")
    flow: dict[str, Any] = json.loads(text.replace(URL_PLACEHOLDER, generate_url))
    _fill_flow_key(flow, flow_key)
    point_default_language(flow, default_language)
    return flow


def _fill_flow_key(flow: dict[str, Any], flow_key: str | None) -> None:
    """Put the key into every request parameter that holds the placeholder; without a key,
    drop those parameters (then only Twilio's signature can let the flow in)."""
    for state in flow.get("states", []):
        params = state.get("properties", {}).get("parameters")
        if not isinstance(params, list):
            continue
        kept = []
        for param in params:
            if param.get("value") != FLOW_KEY_PLACEHOLDER:
                kept.append(param)
            elif flow_key:
                kept.append({**param, "value": flow_key})
        params[:] = kept


def twilio_client(account_sid: str, auth_token: str, api_base_url: str | None) -> Client:
    http = (
        RedirectingHttpClient(api_base_url, timeout=30)
        if api_base_url
        else TwilioHttpClient(timeout=30)
    )
    return Client(account_sid, auth_token, http_client=http)


def publish_flow(client: Client, definition: dict[str, Any], dry_run: bool) -> tuple[str, str]:
    """Create or update the flow; return (what happened, the flow's webhook URL)."""
    client.studio.v2.flow_validate.update(
        friendly_name=FLOW_NAME, status="published", definition=definition
    )
    existing = [flow for flow in client.studio.v2.flows.list() if flow.friendly_name == FLOW_NAME]
    if not existing:
        if dry_run:
            return "would create the flow", "<the new flow's webhook URL>"
        flow = client.studio.v2.flows.create(
            friendly_name=FLOW_NAME,
            status="published",
            definition=definition,
            commit_message="deploy.sh studio",
        )
        return f"created flow {flow.sid}", str(flow.webhook_url)
    # Listing leaves the definition out; fetch the flow to compare it.
    flow = client.studio.v2.flows(existing[0].sid).fetch()
    if flow.definition == definition and flow.status == "published":
        return f"flow {flow.sid} is up to date", str(flow.webhook_url)
    if dry_run:
        return f"would update flow {flow.sid}", str(flow.webhook_url)
    flow = client.studio.v2.flows(flow.sid).update(
        status="published", definition=definition, commit_message="deploy.sh studio"
    )
    return f"updated flow {flow.sid} to revision {flow.revision}", str(flow.webhook_url)


def wire_number(client: Client, number: str, webhook_url: str, dry_run: bool) -> str:
    """Point the number's incoming calls and messages at the flow."""
    numbers = client.incoming_phone_numbers.list(phone_number=number)
    if not numbers:
        raise SystemExit(f"{number} is not a number of this Twilio account")
    found = numbers[0]
    if found.voice_url == webhook_url and found.sms_url == webhook_url:
        return f"{number} already points at the flow"
    if dry_run:
        return f"would point {number}'s calls and messages at the flow"
    found.update(voice_url=webhook_url, voice_method="POST", sms_url=webhook_url, sms_method="POST")
    return f"pointed {number}'s calls and messages at the flow"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generate-url", required=True)
    parser.add_argument("--number", required=True, help="your Twilio number, E.164")
    parser.add_argument("--flow-file", type=Path, default=FLOW_FILE)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    try:
        account_sid, auth_token = os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"]
    except KeyError as missing:
        print(f"deploy studio: {missing.args[0]} is not set", file=sys.stderr)
        return 2
    default_language = os.environ.get("DEFAULT_LANGUAGE") or REFERENCE_LANGUAGE
    try:
        definition = load_flow(
            args.generate_url, os.environ.get("STUDIO_FLOW_KEY"), args.flow_file, default_language
        )
    except ValueError as exc:
        print(f"deploy studio: DEFAULT_LANGUAGE={default_language}: {exc}", file=sys.stderr)
        return 2
    client = twilio_client(account_sid, auth_token, os.environ.get("TWILIO_API_BASE_URL"))
    try:
        done, webhook_url = publish_flow(client, definition, args.dry_run)
        print(f"==> {done}")
        print(f"==> {wire_number(client, args.number, webhook_url, args.dry_run)}")
    except TwilioRestException as exc:
        print(f"deploy studio: Twilio refused: {exc.code} {exc.msg}", file=sys.stderr)
        details = exc.details if isinstance(exc.details, dict) else {}
        for error in details.get("errors", []):
            where, what = error.get("property_path", ""), error.get("message", "")
            print(f"  {where}: {what}", file=sys.stderr)
        return 1
    except TwilioException as exc:  # e.g. listing with a wrong token
        print(f"deploy studio: Twilio refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
