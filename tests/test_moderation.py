"""The moderation pre-check fails open: whatever the endpoint answers, the request is never
failed by the check itself (the image model's own safety system still applies)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flask
import pytest
import requests

from devstack.serving import RunningServer, serve_in_thread
from shared.deadline import Deadline
from shared.moderation import Verdict, check_prompt, read_verdict
from shared.secrets import Secret, SecretSource

ANSWERS: list[Any] = []


@pytest.fixture(scope="module")
def endpoint() -> Iterator[RunningServer]:
    app = flask.Flask(__name__)

    @app.post("/v1/moderations")
    def moderations() -> flask.Response:
        return flask.jsonify(ANSWERS[-1])

    server = serve_in_thread(app, 0)
    yield server
    server.stop()


def _check(server: RunningServer) -> Verdict:
    key = Secret("OPENAI_API_KEY", SecretSource({"OPENAI_API_KEY": "k"}))
    return check_prompt("a fox", f"{server.url}/v1", key, requests.Session())


@pytest.mark.parametrize(
    "answer",
    [
        {"results": [{"flagged": True, "categories": None}]},
        {"results": [{"flagged": True, "categories": ["violence"]}]},
        {"results": [{"flagged": True, "categories": "violence"}]},
    ],
)
def test_odd_categories_keep_the_verdict_and_never_raise(
    endpoint: RunningServer, answer: Any
) -> None:
    ANSWERS.append(answer)
    assert _check(endpoint) == Verdict(flagged=True, categories=())


@pytest.mark.parametrize(
    "answer",
    [
        {},
        [],
        "flagged",
        {"results": []},
        {"results": None},
        {"results": [None]},
        {"results": [{"flagged": "yes"}]},
        {"results": [{"categories": {"violence": True}}]},
    ],
)
def test_an_answer_of_another_shape_lets_the_prompt_through(
    endpoint: RunningServer, answer: Any
) -> None:
    ANSWERS.append(answer)
    assert _check(endpoint) == Verdict(flagged=False)


def test_read_verdict_names_only_the_categories_that_hit() -> None:
    verdict = read_verdict(
        {"results": [{"flagged": True, "categories": {"violence": True, "hate": False, "x": 1}}]}
    )
    assert verdict == Verdict(flagged=True, categories=("violence",))


def test_with_no_time_left_the_check_is_skipped_and_the_prompt_goes_ahead(
    endpoint: RunningServer,
) -> None:
    """Studio waits 10 s for generate: a check that cannot finish in time is not started."""
    ANSWERS.append({"results": [{"flagged": True, "categories": {"violence": True}}]})
    key = Secret("OPENAI_API_KEY", SecretSource({"OPENAI_API_KEY": "k"}))
    spent = Deadline.after(1.0)
    assert check_prompt("a fox", f"{endpoint.url}/v1", key, requests.Session(), spent) == Verdict(
        flagged=False
    )
    plenty = Deadline.after(60.0)
    assert check_prompt("a fox", f"{endpoint.url}/v1", key, requests.Session(), plenty).flagged
