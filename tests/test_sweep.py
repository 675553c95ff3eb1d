"""The sweep finishes stuck requests (failed-and-told, or delivered if Twilio already has the
picture) and deletes old ones with their pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from devstack.qstash import DEV_CURRENT_SIGNING_KEY, make_signature
from devstack.stack_client import StackClient, age, post_callback, queued_row, run_sweep
from devstack.vendor_calls import callback_payload, provider_success
from shared.callbacks import SWEEP_BODY
from shared.services import get_services
from shared.sweep import sweep

pytestmark = pytest.mark.stack
ROOT_DIR = Path(__file__).resolve().parent.parent


def test_a_request_stuck_past_its_deadline_ends_failed_and_told(
    stack: StackClient, caller: str
) -> None:
    request_id = queued_row(stack, caller, "a lost letter")
    age(stack, request_id, 90)
    report = run_sweep(stack)
    assert report["expired"] >= 1
    row = stack.row(request_id)
    assert (row["status"], row["failure_reason"], row["notified"]) == ("failed", "expired", True)
    [notice] = stack.messages_to(caller)
    assert "took too long" in notice["body"]


@pytest.mark.parametrize("language", ["en", "es"])
def test_a_stuck_request_whose_picture_was_sent_ends_delivered(
    stack: StackClient, caller: str, language: str
) -> None:
    """The caption at Twilio is found by its words, in the request's language."""
    request_id = queued_row(stack, caller, "a paper plane")
    stack.sql("update public.requests set language = %s where id = %s", language, request_id)
    sent = stack.half_sent(request_id, caller)
    age(stack, request_id, 90)
    run_sweep(stack)
    row = stack.row(request_id)
    assert (row["status"], row["message_sid"]) == ("delivered", sent)
    assert len(stack.messages_to(caller)) == 1


def test_the_sweep_leaves_young_requests_and_those_a_callback_holds(
    stack: StackClient, caller: str
) -> None:
    young = queued_row(stack, caller)
    held = queued_row(stack, caller)
    stack.sql("select public.claim_request(%s::uuid, 'msg_working', 600)", held)
    age(stack, held, 90)
    report = run_sweep(stack)
    assert report["skipped"] >= 1
    assert stack.row(young)["status"] == "queued"
    assert stack.row(held)["status"] == "composing"
    assert stack.messages_to(caller) == []


def test_old_requests_and_their_pictures_are_deleted(stack: StackClient, caller: str) -> None:
    request_id = queued_row(stack, caller)
    assert (
        post_callback(stack, request_id, callback_payload(200, provider_success())).json()[
            "outcome"
        ]
        == "delivered"
    )
    row = stack.row(request_id)
    picture = f"{stack.env['SUPABASE_URL']}/storage/v1/object/public/pictures/{row['image_path']}"
    assert requests.get(picture, timeout=5).status_code == 200
    age(stack, request_id, 31 * 24 * 60)
    assert run_sweep(stack)["purged"] >= 1
    assert stack.sql("select id from public.requests where id = %s", request_id) == []
    assert requests.get(picture, timeout=5).status_code in (400, 404)


def test_retention_can_be_switched_off(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("RETENTION_DAYS", "off")
    request_id = queued_row(stack, caller)
    stack.sql(
        "update public.requests set status = 'failed', failure_reason = 'refused', failed_at = now(),"
        " created_at = now() - interval '400 days' where id = %s",
        request_id,
    )
    assert run_sweep(stack)["purged"] == 0
    assert stack.row(request_id)["status"] == "failed"


def test_an_unsigned_sweep_request_is_refused(stack: StackClient) -> None:
    body = json.dumps(SWEEP_BODY)
    assert requests.post(stack.env["COMPOSITE_URL"], data=body, timeout=10).status_code == 401


def test_a_signed_callback_replayed_at_the_old_sweep_url_starts_no_sweep(
    stack: StackClient, caller: str
) -> None:
    """`?sweep=1` may not be covered by the signature [UNCONFIRMED]; only the body counts."""
    request_id = queued_row(stack, caller, "a lost letter")
    age(stack, request_id, 90)
    url = f"{stack.env['COMPOSITE_URL']}?sweep=1"
    response = requests.post(
        url,
        data=b"",
        headers={"Upstash-Signature": make_signature(DEV_CURRENT_SIGNING_KEY, url, b"")},
        timeout=60,
    )
    assert response.status_code == 489
    assert stack.row(request_id)["status"] == "queued"


def test_the_sweep_runs_from_the_command_line(local_stack: StackClient) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT_DIR)}
    result = subprocess.run(
        [sys.executable, "-m", "shared.sweep"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT_DIR,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {
        "expired",
        "delivered",
        "skipped",
        "errors",
        "purged",
        "photos_forgotten",
    }


def test_the_sweep_in_process(local_stack: StackClient) -> None:
    report = sweep(get_services())
    assert report.errors == 0
