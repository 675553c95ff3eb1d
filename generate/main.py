"""`generate`: accept a picture request and queue it; answers in well under a second.

For now it takes the JSON body `{"to", "from", "prompt"}` from an operator (a script or
`gcloud functions call generate --data '{...}'`), authenticated by the operator key in the
`X-Operator-Key` header or an `operator_key` field (gcloud cannot send custom headers).
"""

from __future__ import annotations

import hmac

import flask
import functions_framework

from shared import Unauthorized, accept_picture_request, get_services, parse_picture_request
from shared.edge import handler, json_response, read_json, require_post

MAX_BODY_BYTES = 64 * 1024


@functions_framework.http
@handler("generate", MAX_BODY_BYTES)
def generate(request: flask.Request) -> flask.Response:
    if (refusal := require_post(request)) is not None:
        return refusal
    services = get_services()
    payload = read_json(request)
    _check_operator_key(request, payload, services.settings.secret("OPERATOR_KEY").reveal())
    picture_request = parse_picture_request(payload, services.settings.max_prompt_chars)
    accepted = accept_picture_request(picture_request, services)
    return json_response(202, {"request_id": accepted.request_id, "status": "queued"})


def _check_operator_key(request: flask.Request, payload: object, expected: str) -> None:
    given = request.headers.get("X-Operator-Key")
    if given is None and isinstance(payload, dict):
        given = payload.get("operator_key")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("missing or wrong operator key")
