"""`composite`: QStash calls this after every image-generation attempt (and, with `?sweep=1`,
on a schedule to run the sweep; see shared/sweep.py).

It verifies the QStash signature against the configured public URL before reading anything,
then lets the pipeline frame, store and send the picture (or record the failed attempt, or tell
the person it failed). A non-2xx answer makes QStash retry the callback, so we answer 5xx only
when a retry can help.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict

import flask
import functions_framework

from shared.callbacks import parse_callback, verify_qstash_signature
from shared.delivery import handle_callback
from shared.edge import handler, json_response, require_post, signed_url
from shared.errors import BadRequest
from shared.logs import bind, warning
from shared.services import get_services
from shared.sweep import sweep

# QStash's largest plan message is 50 MB; a 1024² JPEG callback is well under 1 MB.
MAX_BODY_BYTES = 12 * 1024 * 1024
# QStash's one non-retryable answer: 489 with this header fails the message at once.
NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}


@functions_framework.http
@handler("composite", MAX_BODY_BYTES)
def composite(request: flask.Request) -> flask.Response:
    if (refusal := require_post(request)) is not None:
        return refusal
    services = get_services()
    settings = services.settings
    raw = request.get_data(cache=True)
    keys = (
        settings.secret("QSTASH_CURRENT_SIGNING_KEY").reveal(),
        settings.secret("QSTASH_NEXT_SIGNING_KEY").reveal(),
    )
    if settings.insecure_skip_signatures:
        warning("INSECURE_SKIP_SIGNATURES is on: the QStash signature was not checked")
    else:
        verify_qstash_signature(
            request.headers.get("Upstash-Signature"),
            raw,
            signed_url(settings.composite_url, request),
            keys,
        )
    if "sweep" in request.args:
        # A QStash schedule (signed like every QStash call) runs the sweep.
        return json_response(200, asdict(sweep(services)))
    try:
        request_id = _request_id(request.args.get("request"))
        bind(request_id=request_id)
        callback = parse_callback(raw)
    except BadRequest as exc:
        # Genuinely from QStash but unusable: retrying cannot help, so tell QStash to stop.
        warning("unusable callback", error=exc.message)
        return json_response(489, {"error": exc.message}, **NON_RETRYABLE)
    owner = request.headers.get("Upstash-Message-Id") or f"anonymous-{uuid.uuid4()}"
    outcome = handle_callback(request_id, callback, owner, services)
    if outcome.retry_later:
        return json_response(503, {"outcome": outcome.value}, **{"Retry-After": "60"})
    return json_response(200, {"outcome": outcome.value, "request_id": request_id})


def _request_id(value: str | None) -> str:
    try:
        return str(uuid.UUID(value or ""))
    except ValueError as exc:
        raise BadRequest("the callback URL has no valid request id") from exc
