"""`composite`: QStash calls this after every image-generation attempt (and, on a schedule
whose signed body is `{"picture_line": "sweep"}`, to run the sweep; see shared/sweep.py; and
with the doctor's signed self-test, which does no work; see shared/self_test.py).
Twilio calls it with `?message_status=<request id>` to report how far each message got.

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

from shared.callbacks import bound_request_id, is_sweep_body, parse_callback
from shared.delivery import handle_callback, offer_gallery_link
from shared.edge import (
    handler,
    json_response,
    require_post,
    verify_qstash_request,
    verify_twilio_request,
)
from shared.endpoints import (
    is_message_status,
    message_status_request_id,
    query_request_id,
    query_self_test_nonce,
)
from shared.errors import BadRequest
from shared.logs import bind, warning
from shared.self_test import answer_self_test, self_test_nonce
from shared.services import Services, get_services
from shared.sweep import sweep
from shared.twilio_webhooks import NOT_DELIVERED, read_status_callback

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
    if is_message_status(request.args):
        return _message_status(request, services)
    query_signed = verify_qstash_request(request, services.settings)
    raw = request.get_data(cache=True)
    if is_sweep_body(raw):
        return json_response(200, asdict(sweep(services)))
    if (nonce := self_test_nonce(raw)) is not None:  # deploy/doctor.py's signed self-test
        query_nonce = query_self_test_nonce(request.args)
        return json_response(200, answer_self_test(nonce, query_nonce, query_signed, services))
    try:
        callback = parse_callback(raw)
        request_id = bound_request_id(query_request_id(request.args), callback, query_signed)
        bind(request_id=request_id)
    except BadRequest as exc:
        # Genuinely from QStash but unusable: retrying cannot help, so tell QStash to stop.
        warning("unusable callback", error=exc.message)
        return json_response(489, {"error": exc.message}, **NON_RETRYABLE)
    owner = request.headers.get("Upstash-Message-Id") or f"anonymous-{uuid.uuid4()}"
    outcome = handle_callback(request_id, callback, owner, services)
    if outcome.retry_later:
        return json_response(503, {"outcome": outcome.value}, **{"Retry-After": "60"})
    return json_response(200, {"outcome": outcome.value, "request_id": request_id})


def _message_status(request: flask.Request, services: Services) -> flask.Response:
    """Twilio's status callback for one of our messages: signed by Twilio, not QStash."""
    verify_twilio_request(request, services.settings.composite_url, services.settings)
    try:
        request_id = message_status_request_id(request.args)
    except BadRequest as exc:
        return json_response(400, {"error": exc.message})
    bind(request_id=request_id)
    report = read_status_callback(request.form)
    if report is None:
        warning("a status callback with nothing to record")
        return flask.Response(status=204)
    recorded = services.store.record_message_status(
        request_id, report.message_sid, report.status, report.error_code
    )
    if recorded and report.error_code:
        warning(
            "Twilio could not deliver a message",
            status=report.status,
            error_code=report.error_code,
        )
    if recorded and report.status in NOT_DELIVERED:
        offer_gallery_link(request_id, report.message_sid, services)
    return flask.Response(status=204)
