"""Image models retire (gpt-image-1.5 on 2026-12-01). When the provider says the configured
model is gone, a request is asked again once with IMAGE_MODEL_FALLBACK; without one it fails
with a reason that says the model is gone, and the person is told. Nothing is lost either way."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import requests

from devstack.stack_client import StackClient, post_callback, queued_row
from devstack.vendor_calls import callback_payload
from shared.settings import DEFAULT_IMAGE_MODEL

pytestmark = pytest.mark.stack
FALLBACK = "gpt-image-2.6-sunburst"


def openai_dev(stack: StackClient, path: str) -> str:
    return stack.env["OPENAI_BASE_URL"].removesuffix("/v1") + f"/__dev/{path}"


@pytest.fixture
def retire(stack: StackClient) -> Iterator[Callable[[str], None]]:
    """Shut a model down at the stand-in (as OpenAI does on its shutdown date)."""
    retired: list[str] = []

    def shut_down(model: str) -> None:
        response = requests.post(
            openai_dev(stack, "models"),
            json={"id": model, "shutdown_date": "2026-12-01"},
            timeout=5,
        )
        assert response.status_code < 300, response.text
        retired.append(model)

    yield shut_down
    for model in retired:
        requests.post(
            openai_dev(stack, "models"), json={"id": model, "shutdown_date": None}, timeout=5
        )


def test_the_default_model_is_a_current_one_and_delivers(stack: StackClient, caller: str) -> None:
    row = stack.wait_finished(stack.submit("a kingfisher diving", to=caller).json()["request_id"])
    assert (row["status"], row["model"]) == ("delivered", DEFAULT_IMAGE_MODEL)
    [asked] = stack.generations("a kingfisher diving")
    assert asked["json"]["model"] == DEFAULT_IMAGE_MODEL
    # What the picture cost comes from the answer's tokens, not a flat guess.
    assert row["cost_usd"] is not None and row["cost_usd"] > 0
    assert row["cost_usd"] != row["estimated_cost_usd"]


def test_a_retired_model_falls_back_once_and_the_picture_arrives(
    stack: StackClient,
    caller: str,
    retire: Callable[[str], None],
    function_setting: Callable[[str, str], None],
) -> None:
    function_setting("IMAGE_MODEL_FALLBACK", FALLBACK)
    retire(DEFAULT_IMAGE_MODEL)
    row = stack.wait_finished(stack.submit("a lynx in the snow", to=caller).json()["request_id"])
    assert (row["status"], row["model"]) == ("delivered", FALLBACK)
    asked = [entry["json"]["model"] for entry in stack.generations("a lynx in the snow")]
    assert asked == [DEFAULT_IMAGE_MODEL, FALLBACK]
    assert [entry["status"] for entry in stack.generations("a lynx in the snow")] == [404, 200]
    [mms] = stack.messages_to(caller)
    assert mms["media"] and "a lynx in the snow" in mms["body"]


def test_without_a_fallback_a_retired_model_fails_saying_so_and_the_person_is_told(
    stack: StackClient, caller: str, retire: Callable[[str], None]
) -> None:
    retire(DEFAULT_IMAGE_MODEL)
    row = stack.wait_finished(stack.submit("a moth at a lamp", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"], row["notified"]) == (
        "failed",
        "model_unavailable",
        True,
    )
    assert f"no longer serves {DEFAULT_IMAGE_MODEL}" in row["failure_detail"]
    assert "model_not_found" in row["failure_detail"]
    [notice] = stack.messages_to(caller)
    assert "being updated" in notice["body"]
    # One try: a gone model is not retried.
    assert len(stack.generations("a moth at a lamp")) == 1


def test_when_the_fallback_is_gone_too_the_request_fails_once(
    stack: StackClient,
    caller: str,
    retire: Callable[[str], None],
    function_setting: Callable[[str, str], None],
) -> None:
    function_setting("IMAGE_MODEL_FALLBACK", FALLBACK)
    retire(DEFAULT_IMAGE_MODEL)
    retire(FALLBACK)
    row = stack.wait_finished(stack.submit("a wren on a wire", to=caller).json()["request_id"])
    assert (row["status"], row["failure_reason"], row["model"]) == (
        "failed",
        "model_unavailable",
        FALLBACK,
    )
    assert len(stack.messages_to(caller)) == 1
    assert len(stack.generations("a wren on a wire")) == 2


def test_a_late_callback_about_a_model_the_request_has_left_changes_nothing(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    import base64
    import json

    function_setting("IMAGE_MODEL_FALLBACK", FALLBACK)
    request_id = queued_row(stack, caller)  # asked of DEFAULT_IMAGE_MODEL
    left_behind = {"model": "gpt-image-2.5-flare", "prompt": "a lighthouse at dusk"}
    gone = b'{"error": {"type": "invalid_request_error", "code": "model_not_found"}}'
    payload = callback_payload(
        404, gone, sourceBody=base64.b64encode(json.dumps(left_behind).encode()).decode()
    )
    assert post_callback(stack, request_id, payload).json()["outcome"] == "superseded"
    row = stack.row(request_id)
    assert (row["status"], row["model"]) == ("queued", DEFAULT_IMAGE_MODEL)
    assert stack.messages_to(caller) == []
