"""studio/flow.json, run the way Studio runs it (devstack.studio_runner) into the local stack."""

from __future__ import annotations

import json

import pytest

from deploy.studio import FLOW_FILE, FLOW_KEY_PLACEHOLDER, URL_PLACEHOLDER, load_flow
from devstack.call import play_call, send_text
from devstack.flow_checker import check_flow
from devstack.stack_client import StackClient
from devstack.studio_runner import format_transcript
from shared.catalogue import CATALOGUES
from shared.twilio_webhooks import FLOW_KEY_FIELD

pytestmark = pytest.mark.stack


def said(execution: object) -> str:
    return format_transcript(execution)  # type: ignore[arg-type]


def test_the_flow_file_is_a_valid_studio_flow() -> None:
    flow = json.loads(FLOW_FILE.read_text(encoding="utf-8"))
    assert check_flow(flow) == []
    assert flow["initial_state"] == "Trigger"


def test_only_the_function_url_needs_filling_in() -> None:
    text = FLOW_FILE.read_text(encoding="utf-8")
    # The call's lookup, each language's request and change, and the text request.
    assert text.count(URL_PLACEHOLDER) == 2 + 2 * len(CATALOGUES)
    flow = load_flow("https://generate-abc-uc.a.run.app")
    requests_ = [s for s in flow["states"] if s["type"] == "make-http-request"]
    assert {s["properties"]["url"] for s in requests_} == {"https://generate-abc-uc.a.run.app"}
    for state in requests_:
        assert state["properties"]["add_twilio_auth"] is False
        assert state["properties"]["content_type"].startswith("application/x-www-form-urlencoded")
        assert "body" not in state["properties"]


def test_the_flow_key_goes_into_every_request_or_none() -> None:
    flow = load_flow("https://generate-abc-uc.a.run.app", "a-flow-key")
    requests_ = [s for s in flow["states"] if s["type"] == "make-http-request"]
    assert check_flow(flow) == []
    for state in requests_:
        keys = {p["key"]: p["value"] for p in state["properties"]["parameters"]}
        assert keys[FLOW_KEY_FIELD] == "a-flow-key"
    assert FLOW_KEY_PLACEHOLDER not in json.dumps(flow)
    # Without a key, only Twilio's signature can let the flow in: the parameter is dropped.
    keyless = load_flow("https://generate-abc-uc.a.run.app")
    assert FLOW_KEY_PLACEHOLDER not in json.dumps(keyless)
    assert FLOW_KEY_FIELD not in json.dumps(keyless)


def test_a_call_ends_with_a_picture(local_stack: StackClient, caller: str) -> None:
    execution = play_call(local_stack.env, ['a crab holding a "light saber" & a shield'], caller)
    transcript = said(execution)
    assert execution.status == "ended", transcript
    assert 'I heard: a crab holding a "light saber" & a shield.' in transcript
    assert "on its way by text message" in transcript
    request_id = execution.widgets["request_by_call_en"]["parsed"]["request_id"]
    row = local_stack.wait_finished(request_id)
    assert (row["status"], row["channel"], row["prompt"]) == (
        "delivered",
        "voice",
        'a crab holding a "light saber" & a shield',
    )
    assert row["source_ref"] == execution.widgets["ask_for_picture_en"]["CallSid"]
    messages = local_stack.messages_to(caller)
    assert len(messages) == 1 and messages[0]["media"]


def test_a_silent_caller_is_asked_once_more(local_stack: StackClient, caller: str) -> None:
    execution = play_call(local_stack.env, [None, "a lighthouse"], caller)
    transcript = said(execution)
    assert "didn't catch that" in transcript
    assert "I heard: a lighthouse." in transcript
    local_stack.wait_finished(execution.widgets["request_by_call_en"]["parsed"]["request_id"])
    assert len(local_stack.messages_to(caller)) == 1


def test_a_caller_who_never_speaks_is_said_goodbye_to(
    local_stack: StackClient, caller: str
) -> None:
    execution = play_call(local_stack.env, [None, None], caller)
    assert "didn't hear a description" in said(execution)
    assert "request_by_call_en" not in execution.path
    assert local_stack.sql("select id from public.requests where recipient = %s", caller) == []


def test_an_outage_is_apologised_for_on_the_call(stack: StackClient, caller: str) -> None:
    stack.fault("supabase", service="rest", kind="503", times=1, path_contains="create_request")
    execution = play_call(stack.env, ["a fox"], caller)
    assert execution.path[-1] == "say_sorry_en"
    assert "something went wrong" in said(execution)


def test_a_text_gets_a_reply_and_a_picture(local_stack: StackClient, caller: str) -> None:
    execution = send_text(local_stack.env, "DRAW a paper boat", caller)
    assert execution.status == "ended", said(execution)
    messages = local_stack.messages_to(caller)
    assert any("on its way" in m["body"] for m in messages)
    request_id = execution.widgets["request_by_text"]["parsed"]["request_id"]
    assert local_stack.wait_finished(request_id)["status"] == "delivered"
    assert len([m for m in local_stack.messages_to(caller) if m.get("media")]) == 1


def test_help_by_text_gets_usage_and_stop_gets_nothing(
    local_stack: StackClient, caller: str
) -> None:
    send_text(local_stack.env, "HELP", caller)
    local_stack.stack.wait_idle(10)
    assert ["Text DRAW" in m["body"] for m in local_stack.messages_to(caller)] == [True]
    execution = send_text(local_stack.env, "STOP", caller)
    assert execution.path[-1] == "has_reply"  # nothing to send
    assert local_stack.sql("select source from public.opt_outs where address = %s", caller) == [
        {"source": "keyword"}
    ]
    local_stack.stack.wait_idle(10)
    assert len(local_stack.messages_to(caller)) == 1


def test_an_outage_is_apologised_for_by_text(stack: StackClient, caller: str) -> None:
    stack.fault("supabase", service="rest", kind="503", times=1, path_contains="create_request")
    execution = send_text(stack.env, "DRAW a fox", caller)
    stack.stack.wait_idle(10)
    bodies = [m["body"] for m in stack.messages_to(caller)]
    assert any("couldn't take your request" in body for body in bodies), (bodies, execution.path)
