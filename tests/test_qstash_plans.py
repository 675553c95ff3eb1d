"""What QStash does that nobody could confirm offline, and what its plans limit: the functions
must work whether the JWT `sub` carries the callback's query or not, and an answer cut at the
plan's message size must fail the request with a reason that names the limit."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from devstack.qstash import DEV_CURRENT_SIGNING_KEY, DEV_TOKEN, make_signature
from devstack.stack_client import StackClient, age, queued_row
from devstack.vendor_calls import callback_payload, provider_success
from shared.callbacks import REQUEST_HEADER, SWEEP_BODY

pytestmark = pytest.mark.stack
SUB_FORMS = [pytest.param(True, id="sub-with-query"), pytest.param(False, id="sub-without-query")]


@pytest.fixture
def qstash(stack: StackClient) -> Iterator[StackClient]:
    """The stack, with the QStash stand-in's plan and signing put back afterwards."""
    yield stack
    stack.qstash_config(sub_includes_query=True, plan="free", max_message_size=None)


@pytest.mark.parametrize("sub_includes_query", SUB_FORMS)
def test_a_picture_is_delivered_whichever_url_qstash_signs(
    qstash: StackClient, caller: str, sub_includes_query: bool
) -> None:
    qstash.qstash_config(sub_includes_query=sub_includes_query)
    row = qstash.wait_finished(qstash.submit("a heron at dawn", to=caller).json()["request_id"])
    assert row["status"] == "delivered"
    assert len(qstash.messages_to(caller)) == 1


def _signed_post(
    stack: StackClient, url_query: str, payload: dict[str, object], signed: str
) -> requests.Response:
    """POST `payload` to composite?`url_query`, signed by QStash's key for the URL `signed`."""
    raw = json.dumps(payload).encode()
    return requests.post(
        f"{stack.env['COMPOSITE_URL']}?{url_query}",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "Upstash-Message-Id": "msg_replayed",
            "Upstash-Signature": make_signature(DEV_CURRENT_SIGNING_KEY, signed, raw),
        },
        timeout=30,
    )


def test_a_callback_moved_to_another_request_is_refused(stack: StackClient, caller: str) -> None:
    """If `sub` leaves the query out, the URL's request id is unsigned: the signed
    sourceHeader must agree with it."""
    genuine, other = queued_row(stack, caller, "a real fox"), queued_row(stack, caller, "a decoy")
    payload = callback_payload(
        200, provider_success("a real fox"), sourceHeader={REQUEST_HEADER: [genuine]}
    )
    bare = stack.env["COMPOSITE_URL"]
    moved = _signed_post(stack, f"request={other}", payload, signed=bare)
    assert moved.status_code == 401
    assert stack.row(other)["status"] == "queued"
    right = _signed_post(stack, f"request={genuine}", payload, signed=bare)
    assert right.json()["outcome"] == "delivered"


def test_a_callback_whose_request_id_is_not_signed_at_all_is_refused(
    stack: StackClient, caller: str
) -> None:
    request_id = queued_row(stack, caller)
    payload = callback_payload(200, provider_success())
    response = _signed_post(
        stack, f"request={request_id}", payload, signed=stack.env["COMPOSITE_URL"]
    )
    assert response.status_code == 401
    assert stack.row(request_id)["status"] == "queued"


@pytest.mark.parametrize("sub_includes_query", SUB_FORMS)
def test_the_sweep_schedule_runs_the_sweep_whichever_url_qstash_signs(
    qstash: StackClient, caller: str, sub_includes_query: bool
) -> None:
    """The schedule as `deploy.sh schedule` creates it: the signed body says "sweep"."""
    qstash.qstash_config(sub_includes_query=sub_includes_query)
    stuck = queued_row(qstash, caller, "a lost letter")
    age(qstash, stuck, 90)
    base = qstash.env["QSTASH_URL"]
    created = requests.post(
        f"{base}/v2/schedules/{qstash.env['COMPOSITE_URL']}",
        data=json.dumps(SWEEP_BODY),
        headers={
            "Authorization": f"Bearer {DEV_TOKEN}",
            "Content-Type": "application/json",
            "Upstash-Cron": "*/10 * * * *",
            "Upstash-Schedule-Id": "picture-line-sweep",
        },
        timeout=10,
    )
    assert created.status_code < 300, created.text
    trigger = requests.post(f"{base}/__dev/schedules/picture-line-sweep/trigger", timeout=10)
    assert trigger.status_code < 300, trigger.text
    row = qstash.wait_finished(stuck)
    assert (row["status"], row["failure_reason"], row["notified"]) == ("failed", "expired", True)


def test_an_answer_cut_at_the_plan_limit_fails_naming_the_limit_and_the_person_is_told(
    qstash: StackClient, caller: str
) -> None:
    # The plan's real limit is smaller than the answer (e.g. a larger size than planned for).
    qstash.qstash_config(max_message_size=150_000)
    row = qstash.wait_finished(qstash.submit("a detailed city", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "too_large",
        True,
    )
    assert "Max Message Size" in row["failure_detail"]
    assert "QSTASH_MAX_MESSAGE_BYTES" in row["failure_detail"]
    [notice] = qstash.messages_to(caller)
    assert "too large" in notice["body"]


def test_a_short_broken_answer_is_still_a_bad_response(stack: StackClient, caller: str) -> None:
    request_id = queued_row(stack, caller)
    payload = callback_payload(200, b'{"data": [{"b64_json": "bm90IGEgcGljdHVyZQ=="}]}')
    url = f"{stack.env['COMPOSITE_URL']}?request={request_id}"
    assert _signed_post(stack, f"request={request_id}", payload, signed=url).json()["outcome"] == (
        "failed"
    )
    assert stack.row(request_id)["failure_reason"] == "bad_response"
