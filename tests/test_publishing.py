from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import flask
import pytest
import requests

from devstack.serving import RunningServer, serve_in_thread
from shared.deadline import Deadline
from shared.endpoints import generation_callback_url
from shared.errors import PublishError
from shared.publishing import (
    READ_TIMEOUT_S,
    GenerationJob,
    QStashPublisher,
    publish_headers,
)
from shared.secrets import Secret, SecretSource

JOB = GenerationJob(
    request_id="5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11",
    destination="https://api.openai.com/v1/images/generations",
    body={"model": "gpt-image-2.6-flare"},
    callback_url=generation_callback_url(
        "https://composite.example.com", "5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11"
    ),
    retries=2,
    timeout_s=300,
    callback_retries=5,
)


def test_publish_headers_carry_the_callbacks_dedup_and_timeouts() -> None:
    headers = publish_headers(JOB, "qstash-token", "sk-key")
    assert headers["Authorization"] == "Bearer qstash-token"
    assert headers["Upstash-Forward-Authorization"] == "Bearer sk-key"
    assert (
        headers["Upstash-Callback"]
        == "https://composite.example.com?request=5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11"
    )
    assert headers["Upstash-Failure-Callback"] == headers["Upstash-Callback"]
    assert headers["Upstash-Deduplication-Id"] == JOB.request_id
    assert headers["Upstash-Retries"] == "2"
    assert headers["Upstash-Timeout"] == "300s"
    assert headers["Upstash-Callback-Retries"] == "5"
    assert headers["Upstash-Redact-Fields"] == "header[Authorization]"


def test_the_request_id_is_forwarded_so_it_comes_back_signed() -> None:
    headers = publish_headers(JOB, "qstash-token", "sk-key")
    assert headers["Upstash-Forward-Picture-Line-Request"] == JOB.request_id
    fallback = dataclasses.replace(JOB, attempt_label="fallback")
    assert publish_headers(fallback, "t", "k")["Upstash-Deduplication-Id"] == (
        f"{JOB.request_id}-fallback"
    )


@pytest.fixture
def silent_qstash() -> Iterator[tuple[RunningServer, list[float]]]:
    """A QStash that takes the job but whose answer never arrives in time."""
    hits: list[float] = []
    app = flask.Flask(__name__)

    @app.post("/v2/publish/<path:_destination>")
    def publish(_destination: str) -> flask.Response:
        hits.append(time.monotonic())
        time.sleep(READ_TIMEOUT_S + 0.5)
        return flask.jsonify(messageId="msg_late")

    server = serve_in_thread(app, 0)
    yield server, hits
    server.stop()


@pytest.mark.parametrize(("budget", "tries"), [(60.0, 2), (READ_TIMEOUT_S + 1.0, 1)])
def test_a_lost_answer_is_asked_again_only_if_the_caller_can_wait(
    silent_qstash: tuple[RunningServer, list[float]], budget: float, tries: int
) -> None:
    server, hits = silent_qstash
    secret = Secret("QSTASH_TOKEN", SecretSource({"QSTASH_TOKEN": "t", "OPENAI_API_KEY": "k"}))
    publisher = QStashPublisher(server.url, secret, requests.Session())
    key = Secret("OPENAI_API_KEY", SecretSource({"OPENAI_API_KEY": "k"}))
    with pytest.raises(PublishError):
        publisher.publish(JOB, key, Deadline.after(budget))
    assert len(hits) == tries
