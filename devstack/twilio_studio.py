"""The Twilio stand-in's Studio Flows v2 API (``studio.twilio.com/v2/Flows``).

``./deploy.sh studio`` creates and updates the project's flow through it, and points our number
at the flow's webhook URL (:func:`flow_webhook_url`). Validate, create, list, fetch, update and
delete are served; definitions are checked with :func:`devstack.flow_checker.check_flow`, and a
failing one gets 81022 with ``details.errors[]`` (``message``, ``property_path``), as Studio
answers. Running a flow is :mod:`devstack.studio_runner`'s job, not this module's.

Chosen where Twilio's behaviour was not pinned down (see the project's Twilio notes):

* A missing required parameter is 20001 ("Missing required parameter X in the post body").
* An invalid ``Status`` is 81022 too (``property_path`` ``Status``).
* A flow's revision goes up only when its definition or status changes, and its commit message
  is that of the latest revision.
* Lists come in creation order and, as on Twilio, without ``definition``, ``valid``, ``errors``
  and ``warnings`` (fetch one flow for those).
"""

from __future__ import annotations

import ast
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import flask
from werkzeug.datastructures import MultiDict

from devstack.flow_checker import check_flow
from devstack.twilio_api import (
    ApiError,
    envelope_v2,
    iso8601,
    json_response,
    new_sid,
    not_found,
    parse_paging,
    utc_now,
)

__all__ = [
    "FLOW_INVALID_CODE",
    "FLOW_STATUSES",
    "STUDIO_BASE_URL",
    "WEBHOOKS_BASE_URL",
    "FlowChange",
    "FlowRecord",
    "FlowStore",
    "flow_webhook_url",
    "init_app",
]

log = logging.getLogger(__name__)

STUDIO_BASE_URL = "https://studio.twilio.com"
WEBHOOKS_BASE_URL = "https://webhooks.twilio.com"
FLOW_STATUSES = ("draft", "published")
FLOW_INVALID_CODE = 81022


@dataclass
class FlowRecord:
    """A Studio flow; `definition` is the parsed JSON object."""

    sid: str
    friendly_name: str
    definition: dict[str, Any]
    status: str
    commit_message: str | None
    author_sid: str | None
    date_created: datetime
    date_updated: datetime
    revision: int = 1


@dataclass
class FlowChange:
    """A validated flow update; None leaves a field as it is (Status is always given)."""

    status: str
    definition: dict[str, Any] | None = None
    friendly_name: str | None = None
    commit_message: str | None = None
    author_sid: str | None = None


# --------------------------------------------------------------------------------------------
# Checks of a request
# --------------------------------------------------------------------------------------------

# check_flow quotes names with repr(): either quote style, with backslash escapes.
_QUOTED = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_STATE_AT = re.compile(r"states\[(\d+)\]")
_WIDGET_NAMED = re.compile(rf"widget {_QUOTED}")
_TRANSITION_AT = re.compile(r"transitions\[(\d+)\]")
_TRANSITION_OF = re.compile(rf"transition {_QUOTED}")
_PROPERTY_NAMED = re.compile(rf"property {_QUOTED}")
_TOP_LEVEL_KEY = re.compile(rf"(?:unexpected top-level key )?{_QUOTED}")


def _pointer(*parts: object) -> str:
    """A JSON pointer into the definition, written like Studio's ``#/states/3/properties/url``."""
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in parts)
    return "/".join(("#", *escaped))


def _index_of(items: Any, key: str, value: str) -> int | None:
    """Index of the first object in the list `items` whose `key` is `value`."""
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict) and item.get(key) == value:
            return index
    return None


def _widget_path(problem: str, match: re.Match[str], definition: Any) -> str:
    states = definition.get("states") if isinstance(definition, dict) else None
    index = _index_of(states, "name", ast.literal_eval(match[1]))
    if index is None:
        return _pointer("states")
    if transition := _TRANSITION_AT.search(problem, match.end()):
        return _pointer("states", index, "transitions", transition[1])
    if event := _TRANSITION_OF.search(problem, match.end()):
        transitions = states[index].get("transitions") if isinstance(states, list) else None
        position = _index_of(transitions, "event", ast.literal_eval(event[1]))
        if position is not None:
            return _pointer("states", index, "transitions", position)
    if prop := _PROPERTY_NAMED.search(problem, match.end()):
        return _pointer("states", index, "properties", ast.literal_eval(prop[1]))
    return _pointer("states", index)


def property_path(problem: str, definition: Any) -> str:
    """Where in `definition` a :func:`check_flow` problem lies, as a JSON pointer.

    check_flow reports readable lines, not paths; their wording is regular enough to map back
    (``states[2] ...``, ``widget 'Gather' (...): property 'hints' ...``, ``'flags' must ...``).
    """
    if problem.startswith(("duplicate widget name", "more than one trigger")):
        return _pointer("states")
    if problem.startswith("initial_state "):
        return _pointer("initial_state")
    if match := _STATE_AT.match(problem):
        return _pointer("states", match[1])
    if match := _WIDGET_NAMED.match(problem):
        return _widget_path(problem, match, definition)
    if match := _TOP_LEVEL_KEY.match(problem):
        return _pointer(ast.literal_eval(match[1]))
    return "#"


def _missing(name: str) -> ApiError:
    return ApiError(20001, f"Missing required parameter {name} in the post body")


def _flow_invalid(errors: list[dict[str, str]]) -> ApiError:
    details = {"errors": errors}
    return ApiError(FLOW_INVALID_CODE, "Flow definition validation failed", details=details)


def parse_definition(raw: str) -> dict[str, Any]:
    """The parsed ``Definition`` parameter; 81022 listing every problem when it is no valid flow."""
    try:
        definition = json.loads(raw)
    except ValueError as exc:
        message = f"Definition is not valid JSON: {exc}"
        raise _flow_invalid([{"message": message, "property_path": "#"}]) from exc
    problems = check_flow(definition)
    if problems or not isinstance(definition, dict):  # check_flow reports any non-object
        paths = [property_path(problem, definition) for problem in problems]
        errors = [{"message": m, "property_path": p} for m, p in zip(problems, paths, strict=True)]
        raise _flow_invalid(errors)
    return definition


def _flow_status(status: str) -> str:
    if status not in FLOW_STATUSES:
        message = f"Status must be one of {', '.join(FLOW_STATUSES)}, not {status!r}"
        raise _flow_invalid([{"message": message, "property_path": "Status"}])
    return status


def parse_new_flow(form: MultiDict[str, str]) -> FlowRecord:
    """A new flow from a create or Validate form; raise `ApiError` on the first problem."""
    for name in ("FriendlyName", "Status", "Definition"):
        if not form.get(name):
            raise _missing(name)
    status = _flow_status(form["Status"])
    definition = parse_definition(form["Definition"])
    now = utc_now()
    return FlowRecord(
        sid=new_sid("FW"),
        friendly_name=form["FriendlyName"],
        definition=definition,
        status=status,
        commit_message=form.get("CommitMessage") or None,
        author_sid=form.get("AuthorSid") or None,
        date_created=now,
        date_updated=now,
    )


def parse_flow_change(form: MultiDict[str, str]) -> FlowChange:
    """An update form: ``Status`` is required; a ``Definition`` replaces the whole definition."""
    if not form.get("Status"):
        raise _missing("Status")
    status = _flow_status(form["Status"])
    raw = form.get("Definition")
    return FlowChange(
        status=status,
        definition=parse_definition(raw) if raw is not None else None,
        friendly_name=form.get("FriendlyName") or None,
        commit_message=form.get("CommitMessage") or None,
        author_sid=form.get("AuthorSid") or None,
    )


def apply_flow_change(record: FlowRecord, change: FlowChange, now: datetime) -> None:
    """Update `record`; a new revision only when the definition or the status changes.

    A deploy script re-sending the same flow must not pile up revisions (nor appear to change).
    """
    definition = record.definition if change.definition is None else change.definition
    if definition != record.definition or change.status != record.status:
        record.revision += 1
        record.definition, record.status = definition, change.status
        record.commit_message = change.commit_message  # it describes this revision
        record.author_sid = change.author_sid or record.author_sid
        record.date_updated = now
    if change.friendly_name is not None and change.friendly_name != record.friendly_name:
        record.friendly_name = change.friendly_name
        record.date_updated = now


# --------------------------------------------------------------------------------------------
# JSON shape
# --------------------------------------------------------------------------------------------


def flow_webhook_url(account_sid: str, flow_sid: str) -> str:
    """The URL that starts the flow; a number's voice and SMS URLs are set to it."""
    return f"{WEBHOOKS_BASE_URL}/v1/Accounts/{account_sid}/Flows/{flow_sid}"


def flow_resource(record: FlowRecord, account_sid: str, *, listed: bool = False) -> dict[str, Any]:
    """The FlowInstance JSON; a list item lacks the definition and its checks, as on Twilio."""
    url = f"{STUDIO_BASE_URL}/v2/Flows/{record.sid}"
    links = {"test_users": "TestUsers", "revisions": "Revisions", "executions": "Executions"}
    return {
        "sid": record.sid,
        "account_sid": account_sid,
        "author_sid": record.author_sid,
        "friendly_name": record.friendly_name,
        "definition": None if listed else record.definition,
        "status": record.status,
        "revision": record.revision,
        "commit_message": record.commit_message,
        "valid": None if listed else True,  # an invalid definition is never stored
        "errors": None if listed else [],
        "warnings": None if listed else [],
        "date_created": iso8601(record.date_created),
        "date_updated": iso8601(record.date_updated),
        "webhook_url": flow_webhook_url(account_sid, record.sid),
        "url": url,
        "links": {name: f"{url}/{path}" for name, path in links.items()},
    }


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class FlowStore:
    """The account's Studio flows, in creation order."""

    def __init__(self, account_sid: str) -> None:
        self.account_sid = account_sid
        self._lock = threading.Lock()
        self._flows: dict[str, FlowRecord] = {}

    def reset(self) -> None:
        with self._lock:
            self._flows.clear()

    def add(self, record: FlowRecord) -> dict[str, Any]:
        with self._lock:
            self._flows[record.sid] = record
            log.info("created flow %s %r", record.sid, record.friendly_name)
            return flow_resource(record, self.account_sid)

    def get(self, sid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._flows.get(sid)
            return flow_resource(record, self.account_sid) if record else None

    def update(self, sid: str, change: FlowChange) -> dict[str, Any] | None:
        with self._lock:
            record = self._flows.get(sid)
            if record is None:
                return None
            apply_flow_change(record, change, utc_now())
            return flow_resource(record, self.account_sid)

    def delete(self, sid: str) -> bool:
        with self._lock:
            return self._flows.pop(sid, None) is not None

    def listed(self) -> list[dict[str, Any]]:
        """What ``GET /v2/Flows`` shows of each flow."""
        with self._lock:
            return [
                flow_resource(item, self.account_sid, listed=True) for item in self._flows.values()
            ]

    def complete(self) -> list[dict[str, Any]]:
        """Every flow with its definition (for ``/__dev/flows``)."""
        with self._lock:
            return [flow_resource(item, self.account_sid) for item in self._flows.values()]


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

# studio.twilio.com: LocalTwilioHttpClient keeps only the path, so it shares the stand-in's
# server with the other APIs.
studio = flask.Blueprint("twilio_studio", __name__, url_prefix="/v2")
_EXTENSION = "twilio.studio"


def init_app(app: flask.Flask, flows: FlowStore) -> None:
    """Serve the Studio API from `app`, on `flows` (credentials are checked by the app)."""
    app.extensions[_EXTENSION] = flows
    app.register_blueprint(studio)


def _flows() -> FlowStore:
    flows: FlowStore = flask.current_app.extensions[_EXTENSION]
    return flows


@studio.post("/Flows/Validate")
def validate_flow() -> flask.Response:
    parse_new_flow(flask.request.form)  # raises 81022 (or 20001) when it would not be accepted
    return json_response({"valid": True})


@studio.post("/Flows")
def create_flow() -> flask.Response:
    return json_response(_flows().add(parse_new_flow(flask.request.form)), 201)


@studio.get("/Flows")
def list_flows() -> flask.Response:
    query = parse_paging(flask.request.args)
    url = f"{STUDIO_BASE_URL}/v2/Flows"
    return json_response(envelope_v2("flows", _flows().listed(), query, url))


@studio.get("/Flows/<sid>")
def fetch_flow(sid: str) -> flask.Response:
    resource = _flows().get(sid)
    if resource is None:
        raise not_found()
    return json_response(resource)


@studio.post("/Flows/<sid>")
def update_flow(sid: str) -> flask.Response:
    flows = _flows()
    if flows.get(sid) is None:  # an unknown flow is 404 whatever the form holds
        raise not_found()
    resource = flows.update(sid, parse_flow_change(flask.request.form))
    if resource is None:
        raise not_found()
    return json_response(resource)


@studio.delete("/Flows/<sid>")
def delete_flow(sid: str) -> flask.Response:
    if not _flows().delete(sid):
        raise not_found()
    return flask.Response(status=204)
