"""`generate`: accept a picture request and queue it; answers in well under a second.

One URL, three callers, told apart by what they send:
- an operator's JSON `{"to", "prompt", "from"?}` (scripts, `gcloud functions call`), with the
  operator key in the `X-Operator-Key` header or an `operator_key` field (gcloud cannot send
  custom headers);
- a Twilio Studio flow's form (`prompt` from a call, or `body` from a message), answered with
  JSON the flow says or texts; it proves itself with a valid `X-Twilio-Signature` or with the
  deployment's flow key, which `deploy.sh studio` writes into the flow (whether Studio signs a
  form-mode request is [UNCONFIRMED], so neither alone is relied on);
- Twilio's signed incoming-message webhook (SMS, WhatsApp), answered with TwiML.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import replace

import flask
import functions_framework
from werkzeug.datastructures import CombinedMultiDict

from shared import logs
from shared.accept import accept_picture_request
from shared.acceptance_decisions import operator_answer
from shared.channels import (
    answer_incoming_message,
    answer_studio,
    is_studio_form,
    settle_language,
)
from shared.deadline import STUDIO_BUDGET_S, WEBHOOK_BUDGET_S, Deadline
from shared.edge import (
    UnsupportedMediaType,
    handler,
    json_response,
    read_json,
    require_post,
    verify_twilio_request,
)
from shared.errors import ConfigError, Unauthorized
from shared.intake import parse_picture_request, requested_language
from shared.services import Services, get_services
from shared.settings import Settings
from shared.twilio_webhooks import FLOW_KEY_FIELD, twiml_message

MAX_BODY_BYTES = 64 * 1024
FORM = "application/x-www-form-urlencoded"


@functions_framework.http
@handler("generate", MAX_BODY_BYTES)
def generate(request: flask.Request) -> flask.Response:
    if (refusal := require_post(request)) is not None:
        return refusal
    services = get_services()
    if request.mimetype == FORM:
        return _from_twilio(request, services)
    if request.is_json:
        return _from_operator(request, services)
    raise UnsupportedMediaType("send JSON (operators) or a form signed by Twilio")


def _from_operator(request: flask.Request, services: Services) -> flask.Response:
    payload = read_json(request)
    _check_operator_key(request, payload, services.settings.secret("OPERATOR_KEY").reveal())
    settings = services.settings
    picture_request = parse_picture_request(
        payload,
        settings.max_prompt_chars,
        settings.twilio_from_number,
        default_region=settings.allowed_countries[0],
    )
    said = requested_language(payload)
    # The operator's choice is for this picture; it does not become the person's language.
    recipient, sender = picture_request.recipient, picture_request.sender
    language = settle_language(recipient, sender, said, services, remember=False)
    picture_request = replace(picture_request, language=language)
    accepted = accept_picture_request(picture_request, services)
    status, body = operator_answer(accepted, settings)
    return json_response(status, body)


def _from_twilio(request: flask.Request, services: Services) -> flask.Response:
    settings = services.settings
    generate_url = settings.generate_url
    if not generate_url:
        raise ConfigError("GENERATE_URL is needed to check Twilio's signatures")
    # Studio's parameters may arrive in the form or in the query [UNCONFIRMED]; read both.
    studio: Mapping[str, str] = CombinedMultiDict([request.form, request.args])
    if is_studio_form(studio):
        deadline = Deadline.after(STUDIO_BUDGET_S)
        _authenticate_studio(request, studio, generate_url, settings)
        return json_response(200, answer_studio(studio, services, deadline).as_json())
    deadline = Deadline.after(WEBHOOK_BUDGET_S)
    verify_twilio_request(request, generate_url, settings)
    reply = answer_incoming_message(request.form, services, deadline)
    return flask.Response(twiml_message(reply), status=200, mimetype="text/xml")


def _authenticate_studio(
    request: flask.Request, fields: Mapping[str, str], generate_url: str, settings: Settings
) -> None:
    """The flow key, else Twilio's signature; the log says which one let the flow in."""
    given = fields.get(FLOW_KEY_FIELD)
    if given and flow_key_matches(given, _flow_key(settings)):
        logs.info("Studio request authenticated", by="flow_key")
        return
    if given:
        logs.warning("wrong Studio flow key; checking the Twilio signature instead")
    verify_twilio_request(request, generate_url, settings)
    logs.info("Studio request authenticated", by="twilio_signature")


def _flow_key(settings: Settings) -> str:
    """The deployment's flow key, or "" when none is configured (then only signatures do)."""
    try:
        return settings.secret("STUDIO_FLOW_KEY").reveal()
    except ConfigError:
        logs.warning("the flow sent a flow key, but STUDIO_FLOW_KEY is not set")
        return ""


def flow_key_matches(given: str, expected: str) -> bool:
    if not expected:
        return False
    # "replace": a key holding a lone surrogate cannot be UTF-8 encoded, and is simply wrong.
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _check_operator_key(request: flask.Request, payload: object, expected: str) -> None:
    given = request.headers.get("X-Operator-Key")
    if given is None and isinstance(payload, dict):
        given = payload.get("operator_key")
    # "replace": a key holding a lone surrogate cannot be UTF-8 encoded, and is simply wrong.
    given_bytes = given.encode("utf-8", "replace") if isinstance(given, str) else b""
    if not given or not hmac.compare_digest(given_bytes, expected.encode()):
        raise Unauthorized("missing or wrong operator key")
