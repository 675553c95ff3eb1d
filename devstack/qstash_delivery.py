"""What the QStash stand-in does with a stored message: deliver it, retry it, call back.

:class:`Dispatcher` holds every message :mod:`devstack.qstash_publish` accepted. A scheduler
thread hands due ones to a small pool of worker threads, which deliver them:

* with the ``Upstash-*`` headers and an HS256 ``Upstash-Signature`` JWT
  (:func:`make_signature`, whose ``sub`` is :func:`signature_subject`);
* retrying a non-2xx reply (except ``489`` + ``Upstash-NonRetryable-Error``) with the same
  backoff rules as the real service: the reply's ``Retry-After`` family first, then
  ``Upstash-Retry-Delay``, then ``e^(2.5 n)`` seconds, capped at a day; every delay is
  multiplied by ``QStashConfig.retry_delay_scale`` so tests run in milliseconds;
* publishing a callback message after every attempt if ``Upstash-Callback`` was given; after
  the final failure the message gets a DLQ id and the failure callback fires. A provider answer
  larger than the plan's max message size reaches the callback cut to that many bytes;
* one at a time per queue (``/v2/enqueue``), in order.

There is no HTTP API here: only outgoing requests. Messages settle as delivered, failed or
cancelled and stay listed (``/__dev/messages``) until the emulator is reset.
"""

from __future__ import annotations

import base64
import collections
import email.utils
import functools
import hashlib
import heapq
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
import urllib3

from devstack.qstash_message import (
    TERMINAL_STATES,
    Attempt,
    CallbackSpec,
    Kind,
    Message,
    b64,
    evaluate_retry_delay,
    header_map,
    loggable,
    now_ms,
    parse_duration,
    random_id,
)

if TYPE_CHECKING:  # devstack.qstash imports this module; here its config is only a type
    from devstack.qstash import QStashConfig

__all__ = ["Dispatcher", "make_signature", "signature_subject"]

log = logging.getLogger("devstack.qstash")  # one logger for the whole stand-in

MAX_BACKOFF_S = 86_400.0  # every retry delay is capped at one day
JWT_LIFETIME_S = 300
_WAITING_STATES: frozenset[str] = frozenset({"pending", "retry"})


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------


def make_signature(signing_key: str, url: str, body: bytes, *, now: float | None = None) -> str:
    """Build the `Upstash-Signature` JWT for a request to `url` carrying `body`.

    Claims follow the real service: `sub` is `url` exactly as given (the emulator passes the
    URL with or without its query, see `signature_subject`), `body` is the padded base64url
    SHA-256 of the raw bytes, `jti` is a string (PyJWT >= 2.10 insists) and there is no `aud`
    (PyJWT rejects a non-empty one when no audience is expected).
    """
    issued_at = int(time.time() if now is None else now)
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii")
    claims = {
        "iss": "Upstash",
        "sub": url,
        "exp": issued_at + JWT_LIFETIME_S,
        "nbf": 0,  # the service switched to 0 to avoid clock-skew rejections
        "iat": issued_at,
        "jti": random_id("jwt_"),
        "body": digest,
    }
    return jwt.encode(claims, signing_key, algorithm="HS256")


def signature_subject(url: str, include_query: bool) -> str:
    """The JWT `sub` for a request to `url`: the URL string as is, or cut before its `?`.

    Byte for byte otherwise (no re-encoding, no normalisation), since receivers compare `sub`
    with a configured string exactly ([SDK] qstash-py `Receiver`: `decoded["sub"] != url`).
    """
    return url if include_query else url.partition("?")[0]


# --------------------------------------------------------------------------------------------
# When to retry
# --------------------------------------------------------------------------------------------

# Reply headers that tell QStash when to retry, in the order they are consulted.
_RETRY_AFTER_HEADERS = (
    "Retry-After",
    "X-Ratelimit-Reset",
    "X-Ratelimit-Reset-Requests",
    "X-Ratelimit-Reset-Tokens",
)


def _parse_retry_after(value: str, now: float) -> float | None:
    """Seconds until retry from seconds, an HTTP date or a Go duration; None if unusable."""
    value = value.strip()
    seconds: float | None
    try:
        seconds = parse_duration(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = max(0.0, when.timestamp() - now)
    # Values above a day fall back to the normal rules, as the real service does.
    return seconds if seconds <= MAX_BACKOFF_S else None


def _delay_from_response(headers: Mapping[str, list[str]], now: float) -> float | None:
    for name in _RETRY_AFTER_HEADERS:
        for value in headers.get(name, []):
            seconds = _parse_retry_after(value, now)
            if seconds is not None:
                return seconds
    return None


# --------------------------------------------------------------------------------------------
# One attempt over HTTP
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What one delivery attempt produced; `status` is None when no reply came back."""

    status: int | None = None
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def non_retryable(self) -> bool:
        flag = self.headers.get("Upstash-Nonretryable-Error", [""])[0]
        return self.status == 489 and flag.strip().lower() == "true"


@dataclass(frozen=True)
class _DeliveryRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    timeout_s: float


def _response_headers(
    response: urllib3.BaseHTTPResponse, decoded_gzip: bool
) -> dict[str, list[str]]:
    """The reply's headers in Go's shape; drop the encoding headers Go drops after gunzip."""
    pairs = [(name, value) for name in response.headers for value in response.headers.getlist(name)]
    grouped = header_map(pairs)
    if decoded_gzip:
        grouped.pop("Content-Encoding", None)
        grouped.pop("Content-Length", None)
    return grouped


def _send(delivery: _DeliveryRequest, max_body: int) -> _Outcome:
    """Perform one HTTP request; never raises. The body is truncated to `max_body` bytes."""
    deadline = time.monotonic() + delivery.timeout_s
    timeout = urllib3.Timeout(connect=delivery.timeout_s, read=delivery.timeout_s)
    # A pool per attempt: no stale keep-alive socket can turn a healthy destination into a
    # spurious failure after it restarts between tests.
    pool = urllib3.PoolManager(retries=False, timeout=timeout)
    try:
        response = pool.request(
            delivery.method,
            delivery.url,
            body=delivery.body,
            headers=delivery.headers,
            redirect=False,  # a 3xx is just a non-2xx reply; following it is unconfirmed
            preload_content=False,
        )
        try:
            kept = bytearray()
            # Read the whole reply (the real service waits for it) but keep only the limit.
            for chunk in response.stream(64 * 1024, decode_content=True):
                if len(kept) < max_body:
                    kept += chunk[: max_body - len(kept)]
                if time.monotonic() > deadline:
                    return _Outcome(error="timeout")
            decoded = response.headers.get("Content-Encoding", "").lower() == "gzip"
            return _Outcome(
                status=response.status,
                headers=_response_headers(response, decoded),
                body=bytes(kept),
            )
        finally:
            response.release_conn()
    except urllib3.exceptions.NewConnectionError:
        # Checked first: urllib3 derives it from ConnectTimeoutError for historical reasons.
        return _Outcome(error="connection failed")
    except urllib3.exceptions.TimeoutError:
        return _Outcome(error="timeout")
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        # ValueError: http.client refuses e.g. a header value containing a newline.
        return _Outcome(error=f"request failed: {type(exc).__name__}")
    finally:
        pool.clear()


def _send_copy(delivery: _DeliveryRequest, max_body: int) -> None:
    """Send a duplicate of an attempt and ignore its reply (at-least-once simulation)."""
    _send(delivery, max_body)


# --------------------------------------------------------------------------------------------
# Callback bodies
# --------------------------------------------------------------------------------------------


def _go_json(value: object) -> bytes:
    """Serialise like Go's encoding/json: compact, UTF-8, HTML-sensitive characters escaped."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # These characters can only occur inside JSON strings, so a textual replace is safe.
    for raw, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode("utf-8")


def _callback_payload(source: Message, retried: int, outcome: _Outcome) -> dict[str, Any]:
    """The callback body of one attempt; zero or empty values are omitted, as Go's omitempty.

    An attempt with no reply (timeout, refused connection) has no status, header or body.
    """
    payload: dict[str, Any] = {}
    if outcome.status is not None:
        payload["status"] = outcome.status
        if outcome.headers:
            payload["header"] = outcome.headers
        if outcome.body:
            payload["body"] = b64(outcome.body)
    if retried:
        payload["retried"] = retried
    payload["sourceMessageId"] = source.id
    payload["url"] = source.url
    payload["method"] = source.method
    if source.headers:
        payload["sourceHeader"] = header_map(source.headers)
    if source.body:
        payload["sourceBody"] = b64(source.body)
    if source.max_retries:
        payload["maxRetries"] = source.max_retries
    if source.not_before_ms:
        payload["notBefore"] = source.not_before_ms
    if source.created_at_ms:
        payload["createdAt"] = source.created_at_ms
    if source.schedule_id:
        payload["scheduleId"] = source.schedule_id
    if source.caller_ip:
        payload["callerIP"] = source.caller_ip
    return payload


# --------------------------------------------------------------------------------------------
# The dispatcher
# --------------------------------------------------------------------------------------------


class Dispatcher:
    """Stored messages, the scheduler thread and the delivery workers.

    `lock` is the emulator's one lock (a Condition): it guards this state and the publisher's,
    so that a publish can check for a duplicate and store its message in one step. Methods named
    `*_locked` expect the caller to hold it; the others take it. HTTP calls are made without
    holding it. Threads are daemons so a forgotten `close()` cannot hang interpreter exit, but
    `close()` joins them.
    """

    def __init__(self, config: QStashConfig, lock: threading.Condition) -> None:
        self._config = config
        self._cond = lock
        self._messages: dict[str, Message] = {}
        self._heap: list[tuple[float, int, str, int]] = []  # (due, seq, message id, token)
        self._seq = 0
        self._queues: dict[str, collections.deque[Message]] = {}
        self._queue_active: dict[str, Message] = {}
        self._generation = 0
        self._busy = 0  # jobs queued or running in the worker pool
        self._last_dlq: tuple[int, int] = (0, 0)
        self._closed = False
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._worker_loop, name=f"qstash-worker-{i}", daemon=True)
            for i in range(max(1, config.delivery_workers))
        ]
        self._threads.append(
            threading.Thread(target=self._scheduler_loop, name="qstash-scheduler", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the scheduler and workers; idempotent. In-flight HTTP calls are not aborted."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        for _ in range(len(self._threads) - 1):
            self._jobs.put(None)
        # One shared deadline: a worker stuck in a slow HTTP call must not stall close() for
        # long; it is a daemon and exits when its request times out.
        deadline = time.monotonic() + 5
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is scheduled or in flight; False if `timeout` seconds pass first."""
        with self._cond:
            if self._closed:
                return self._is_idle()
            return self._cond.wait_for(self._is_idle, timeout=timeout)

    def reset_locked(self) -> None:
        """Forget every message; late results of in-flight attempts are dropped."""
        self._generation += 1
        self._messages.clear()
        self._heap.clear()
        self._queues.clear()
        self._queue_active.clear()

    def _is_idle(self) -> bool:
        if self._busy:
            return False
        return all(m.state in TERMINAL_STATES for m in self._messages.values())

    # -- the stored messages -----------------------------------------------------------------

    def accept_locked(self, message: Message, queue_name: str | None) -> None:
        """Store a new message and schedule it: at its not-before time, or in its queue."""
        message.generation = self._generation
        self._messages[message.id] = message
        if queue_name is not None:
            self._enqueue_locked(message, queue_name)
        else:
            self._schedule_locked(message, max(0, message.not_before_ms - now_ms()) / 1000)

    def unsettled_locked(self, message_id: str) -> Message | None:
        """The message if it is not settled yet; settled ones are gone, as in the service."""
        message = self._messages.get(message_id)
        if message is None or message.state in TERMINAL_STATES:
            return None
        return message

    def stored_locked(self) -> list[Message]:
        """Every message, settled or not, oldest first."""
        return list(self._messages.values())

    def cancel(self, message_id: str) -> bool:
        """Cancel a message that is not settled yet: no further attempts and no callbacks."""
        with self._cond:
            message = self._messages.get(message_id)
            if message is None or message.state in TERMINAL_STATES:
                return False
            message.state = "cancelled"
            self._on_settled_locked(message)
            self._cond.notify_all()
            return True

    def cancel_many(self, message_ids: list[str] | None) -> int:
        """Cancel the given messages, or every unsettled one when `message_ids` is None."""
        with self._cond:
            ids = list(self._messages) if message_ids is None else message_ids
        return sum(self.cancel(message_id) for message_id in ids)

    # -- scheduling --------------------------------------------------------------------------

    def _schedule_locked(self, message: Message, delay_s: float) -> None:
        message.schedule_token += 1
        self._seq += 1
        due = time.monotonic() + max(0.0, delay_s)
        heapq.heappush(self._heap, (due, self._seq, message.id, message.schedule_token))
        self._cond.notify_all()

    def _enqueue_locked(self, message: Message, queue_name: str) -> None:
        """Append to a FIFO queue with parallelism 1; it starts when its predecessor settles."""
        message.queue = queue_name
        self._queues.setdefault(queue_name, collections.deque()).append(message)
        self._advance_queue_locked(queue_name)

    def _advance_queue_locked(self, queue_name: str) -> None:
        active = self._queue_active.get(queue_name)
        if active is not None and active.state not in TERMINAL_STATES:
            return
        waiting = self._queues.get(queue_name)
        while waiting:
            candidate = waiting.popleft()
            if candidate.state == "pending":
                self._queue_active[queue_name] = candidate
                self._schedule_locked(candidate, 0.0)
                return
        self._queue_active.pop(queue_name, None)
        self._queues.pop(queue_name, None)

    def _scheduler_loop(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, message_id, token = heapq.heappop(self._heap)
                    message = self._messages.get(message_id)
                    if (
                        message is None
                        or message.schedule_token != token
                        or message.state not in _WAITING_STATES
                    ):
                        continue  # cancelled, reset or rescheduled since
                    message.state = "in_flight"
                    self._submit_locked(functools.partial(self._run_attempt, message))
                wait = self._heap[0][0] - now if self._heap else None
                self._cond.wait(timeout=wait)

    def _submit_locked(self, job: Callable[[], None]) -> None:
        self._busy += 1
        self._jobs.put(job)

    def _worker_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                log.exception("qstash: delivery job crashed")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    # -- delivery ----------------------------------------------------------------------------

    def _run_attempt(self, message: Message) -> None:
        with self._cond:
            stale = message.generation != self._generation or message.state != "in_flight"
            if stale or self._closed:
                return
            retried = message.retried
            copies = max(1, self._config.duplicate_deliveries)
            max_body = self._config.message_size_limit
        try:
            delivery = self._build_delivery(message, retried)
        except Exception:
            # Never leave a message stuck in_flight (wait_idle would hang); count it as failed.
            log.exception("qstash: could not build the delivery of %s", message.id)
            outcome = _Outcome(error="internal error")
        else:
            # Extra copies simulate at-least-once duplicates; only the first reply counts.
            with self._cond:
                for _ in range(copies - 1):
                    self._submit_locked(functools.partial(_send_copy, delivery, max_body))
            outcome = _send(delivery, max_body)
        log.info(
            "qstash: %s attempt %d to %s -> %s",
            message.id,
            retried,
            loggable(message.url),
            outcome.status if outcome.status is not None else outcome.error,
        )
        with self._cond:
            self._apply_outcome_locked(message, retried, outcome)
            self._cond.notify_all()

    def _build_delivery(self, message: Message, retried: int) -> _DeliveryRequest:
        headers: dict[str, str] = {}
        for name, value in message.headers:
            # http.client cannot send a repeated name from a dict; join like a proxy would.
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        subject = signature_subject(message.url, self._config.sub_includes_query)
        if message.schedule_id is not None:
            # [DOC receiving] the header is sent only on messages a schedule triggered
            headers["Upstash-Schedule-Id"] = message.schedule_id
        headers.update(
            {
                "User-Agent": "Upstash-QStash",
                "Accept-Encoding": "gzip",  # what Go's transport sends (and transparently undoes)
                "Upstash-Message-Id": message.id,
                "Upstash-Retried": str(retried),
                "Upstash-Caller-Ip": message.caller_ip,
                "Upstash-Region": self._config.region,
                "Upstash-Signature": make_signature(
                    self._config.current_signing_key, subject, message.body
                ),
            }
        )
        return _DeliveryRequest(
            method=message.method,
            url=message.url,
            headers=headers,
            body=message.body,
            timeout_s=message.timeout_s,
        )

    def _apply_outcome_locked(self, message: Message, retried: int, outcome: _Outcome) -> None:
        if self._messages.get(message.id) is not message or message.state != "in_flight":
            return  # reset or cancelled while the request was in flight: drop it silently
        message.attempts.append(Attempt(retried, outcome.status, now_ms(), outcome.error))
        if outcome.success:
            message.state = "delivered"
        elif outcome.non_retryable or retried >= message.max_retries:
            message.state = "failed"
            message.dlq_id = self._next_dlq_id()
        else:
            message.state = "retry"
            message.retried = retried + 1
            self._schedule_locked(message, self._retry_delay_s(message, retried, outcome))
        if message.callback is not None:
            payload = _callback_payload(message, retried, outcome)
            self._publish_callback_locked(message, message.callback, "callback", payload)
        if message.state == "failed" and message.failure_callback is not None:
            payload = _callback_payload(message, retried, outcome)
            payload["dlqId"] = message.dlq_id
            self._publish_callback_locked(
                message, message.failure_callback, "failure_callback", payload
            )
        if message.state in TERMINAL_STATES:
            self._on_settled_locked(message)

    def _retry_delay_s(self, message: Message, retried: int, outcome: _Outcome) -> float:
        """Reply headers first, then Upstash-Retry-Delay, then e^(2.5 n); scaled for tests."""
        delay = _delay_from_response(outcome.headers, time.time())
        if delay is None and message.retry_delay is not None:
            try:
                delay = min(
                    MAX_BACKOFF_S, evaluate_retry_delay(message.retry_delay, retried) / 1000
                )
            except ValueError:
                delay = None  # validated at publish, but `retried` can still overflow it
        if delay is None:
            delay = min(MAX_BACKOFF_S, math.exp(2.5 * (retried + 1)))
        return max(0.0, delay) * self._config.retry_delay_scale

    def _next_dlq_id(self) -> str:
        """DLQ ids look like Redis stream ids, `<unix ms>-<seq>`."""
        now = now_ms()
        last_ms, last_seq = self._last_dlq
        self._last_dlq = (last_ms, last_seq + 1) if now <= last_ms else (now, 0)
        return f"{self._last_dlq[0]}-{self._last_dlq[1]}"

    def _publish_callback_locked(
        self, source: Message, spec: CallbackSpec, kind: Kind, payload: dict[str, Any]
    ) -> None:
        """Publish a callback as a new, signed, retried message of its own."""
        created_at = now_ms()
        callback = Message(
            id=random_id("msg_"),
            kind=kind,
            url=spec.url,
            method=spec.method,
            body=_go_json(payload),
            headers=[*spec.forward, ("Content-Type", "application/json")],
            max_retries=source.max_retries if spec.retries is None else spec.retries,
            retry_delay=spec.retry_delay or source.retry_delay,
            timeout_s=spec.timeout_s or source.timeout_s,
            created_at_ms=created_at,
            not_before_ms=created_at + int(spec.delay_s * 1000),
            caller_ip=source.caller_ip,
            generation=self._generation,
            source_message_id=source.id,
        )
        self._messages[callback.id] = callback
        if kind == "callback" and self._config.reorder_callbacks:
            source.held_callbacks.append(callback)  # released when the source settles
        else:
            self._schedule_locked(callback, spec.delay_s)

    def _on_settled_locked(self, message: Message) -> None:
        """Start the next queued message and release held-back callbacks, newest first."""
        if message.queue is not None:
            self._advance_queue_locked(message.queue)
        if message.held_callbacks:
            # A private FIFO queue delivers them one after another, so the order is real.
            held, message.held_callbacks = message.held_callbacks, []
            for callback in reversed(held):
                self._enqueue_locked(callback, f"__reorder__/{message.id}")
