from __future__ import annotations

from shared.publishing import GenerationJob, callback_url, publish_headers

JOB = GenerationJob(
    request_id="5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11",
    destination="https://api.openai.com/v1/images/generations",
    body={"model": "gpt-image-2.6-flare"},
    callback_url=callback_url(
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
