"""Handing the image generation to QStash.

QStash calls the provider (it waits the 20-120 s the model takes, which no webhook can), then
POSTs the provider's answer to `composite`. We publish with plain `requests` and a short timeout
because `generate` must answer Twilio within a second or two; the request id doubles as the
deduplication id, so a publish retried after a lost reply cannot start a second generation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import requests

from .callbacks import REQUEST_HEADER
from .deadline import Deadline, time_left
from .endpoints import generation_callback_url
from .errors import PublishError
from .generation import edit_body, generation_body, safety_identifier
from .secrets import Secret
from .settings import Settings

# One try's timeouts; with a deadline (see deadline.py), what is left of it when that is less.
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3.0
ONE_TRY_S = CONNECT_TIMEOUT_S + READ_TIMEOUT_S
MIN_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class GenerationJob:
    request_id: str
    destination: str  # the provider's generations URL
    body: Mapping[str, object]
    callback_url: str  # composite URL with ?request=<id>
    retries: int
    timeout_s: int
    callback_retries: int
    # Another id for a second generation of the same request (the model fallback).
    attempt_label: str | None = None

    @property
    def deduplication_id(self) -> str:
        return f"{self.request_id}-{self.attempt_label}" if self.attempt_label else self.request_id


# How long the provider may fetch an edit's input picture: every attempt QStash makes must
# still find it (GENERATION_RETRIES retries, each up to GENERATION_TIMEOUT_SECONDS, with
# backoff), yet it is a signed URL to someone's photo, so not for longer than that.
SOURCE_URL_SLACK_S = 600


def source_url_lifetime_s(settings: Settings) -> int:
    return (settings.generation_retries + 1) * settings.generation_timeout_s + SOURCE_URL_SLACK_S


def generation_job(
    settings: Settings,
    request_id: str,
    prompt: str,
    recipient: str,
    *,
    source_url: str | None = None,
    model: str | None = None,
    attempt_label: str | None = None,
) -> GenerationJob:
    """The job for one picture, as the settings say (`model` overrides IMAGE_MODEL). With
    `source_url` (a signed URL of the picture to change) it is an edit, with `prompt` as the
    instruction. The picture travels as a URL rather than in the body, so the publish stays
    small and only the answer counts against QStash's message size."""
    salt = settings.secret("SAFETY_IDENTIFIER_SALT").reveal()
    safety_id = safety_identifier(salt, recipient)
    if source_url is None:
        endpoint = "generations"
        body: Mapping[str, object] = generation_body(settings.image, prompt, safety_id, model=model)
    else:
        endpoint = "edits"
        body = edit_body(settings.image, prompt, safety_id, source_url, model=model)
    return GenerationJob(
        request_id=request_id,
        destination=f"{settings.openai_base_url}/images/{endpoint}",
        body=body,
        callback_url=generation_callback_url(settings.composite_url, request_id),
        retries=settings.generation_retries,
        timeout_s=settings.generation_timeout_s,
        callback_retries=settings.callback_retries,
        attempt_label=attempt_label,
    )


def publish_headers(job: GenerationJob, qstash_token: str, provider_key: str) -> dict[str, str]:
    """The QStash publish headers for one generation job (a pure function, for tests)."""
    return {
        "Authorization": f"Bearer {qstash_token}",
        "Content-Type": "application/json",
        "Upstash-Method": "POST",
        "Upstash-Forward-Authorization": f"Bearer {provider_key}",
        "Upstash-Callback": job.callback_url,
        # Same URL: the body's dlqId tells the failure callback apart.
        "Upstash-Failure-Callback": job.callback_url,
        "Upstash-Deduplication-Id": job.deduplication_id,
        # Comes back inside the signed callback body (sourceHeader): see callbacks.py.
        f"Upstash-Forward-{REQUEST_HEADER}": job.request_id,
        "Upstash-Retries": str(job.retries),
        "Upstash-Timeout": f"{job.timeout_s}s",
        "Upstash-Callback-Retries": str(job.callback_retries),
        "Upstash-Failure-Callback-Retries": str(job.callback_retries),
        # Keep the provider key out of QStash's console, logs and DLQ views.
        "Upstash-Redact-Fields": "header[Authorization]",
        "Upstash-Label": "picture-line",
    }


class QStashPublisher:
    def __init__(self, base_url: str, token: Secret, session: requests.Session) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._session = session

    def publish(
        self, job: GenerationJob, provider_key: Secret, deadline: Deadline | None = None
    ) -> str:
        """Publish the job; return QStash's message id or raise `PublishError`. With a
        `deadline`, each try gets only what is left of it, and the retry only a whole try."""
        headers = publish_headers(job, self._token.reveal(), provider_key.reveal())
        url = f"{self._base_url}/v2/publish/{job.destination}"
        body = json.dumps(job.body, separators=(",", ":")).encode()
        try:
            try:
                response = self._post(url, body, headers, deadline)
            except requests.ReadTimeout:
                if time_left(deadline, ONE_TRY_S) < ONE_TRY_S:
                    raise
                # QStash may have taken the job before its answer was lost. The request id
                # is the deduplication id, so asking again is safe: QStash enqueues no second
                # copy and answers with the first one's message id.
                response = self._post(url, body, headers, deadline)
        except requests.RequestException as exc:
            raise PublishError(
                "QStash could not be reached", retryable=True, detail=type(exc).__name__
            ) from exc
        if response.status_code >= 300:
            retryable = response.status_code == 429 or response.status_code >= 500
            raise PublishError(
                "QStash refused the job",
                retryable=retryable,
                detail=f"HTTP {response.status_code}: {response.text[:200]}",
            )
        try:
            return str(response.json()["messageId"])
        except (ValueError, KeyError, TypeError) as exc:
            raise PublishError("QStash answered without a message id", retryable=True) from exc

    def _post(
        self, url: str, body: bytes, headers: dict[str, str], deadline: Deadline | None
    ) -> requests.Response:
        # requests refuses a zero timeout; a spent deadline still gets one short try.
        connect = max(MIN_TIMEOUT_S, time_left(deadline, CONNECT_TIMEOUT_S))
        read = max(MIN_TIMEOUT_S, time_left(deadline, READ_TIMEOUT_S))
        return self._session.post(url, data=body, headers=headers, timeout=(connect, read))

    def cancel(self, message_id: str) -> bool:
        """Stop QStash from retrying a message that can no longer succeed; best effort."""
        try:
            response = self._session.delete(
                f"{self._base_url}/v2/messages/{message_id}",
                headers={"Authorization": f"Bearer {self._token.reveal()}"},
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
        except requests.RequestException:
            return False
        return response.status_code < 300
