"""The Twilio stand-in, driven through the real `twilio` SDK (no mocks).

One stand-in, one media server and one status-callback receiver per module; every test starts
from a reset stand-in.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import flask
import pytest
import requests
from PIL import Image
from twilio.base import serialize
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from devstack.serving import RunningServer, serve_in_thread
from devstack.studio_runner import TwilioAccount, run_message
from devstack.twilio import (
    DEFAULT_MESSAGING_SERVICE_SID,
    DEFAULT_PHONE_NUMBERS,
    DEV_ACCOUNT_SID,
    DEV_AUTH_TOKEN,
    LocalTwilioHttpClient,
    TwilioConfig,
    create_app,
    resolve_services,
    rewrite_twilio_url,
)

SENDER = "+15017122661"
ALICE = "+15558675310"
BOB = "+15558675311"
NUMBER = "+15005550006"  # the stand-in's default incoming number
WAIT_S = 10.0
REPO = Path(__file__).resolve().parents[2]


def make_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 80, 40)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


@dataclass
class MediaServer:
    url: str
    jpeg: bytes


@dataclass
class CallbackReceiver:
    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StandIn:
    url: str
    app: flask.Flask
    outbox: Path

    def dev(self, method: str, path: str, payload: Any = None) -> requests.Response:
        return requests.request(method, f"{self.url}/__dev/{path}", json=payload, timeout=WAIT_S)

    def wait_idle(self) -> None:
        assert self.app.extensions["twilio"].wait_idle(WAIT_S)


@pytest.fixture(scope="module")
def media_server() -> Iterator[MediaServer]:
    jpeg = make_jpeg()
    app = flask.Flask("media")
    app.add_url_rule("/picture.jpg", "picture", lambda: flask.Response(jpeg, mimetype="image/jpeg"))
    # JPEG bytes labelled PNG: Twilio rejects a Content-Type that does not match the file.
    app.add_url_rule("/mislabelled.png", "png", lambda: flask.Response(jpeg, mimetype="image/png"))
    app.add_url_rule("/page.html", "html", lambda: flask.Response("<p/>", mimetype="text/html"))
    server = serve_in_thread(app)
    yield MediaServer(server.url, jpeg)
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    app = flask.Flask("callbacks")
    holder = CallbackReceiver(url="")

    @app.post("/status")
    def status() -> tuple[str, int]:
        request = flask.request
        holder.calls.append({"form": request.form.copy(), "headers": dict(request.headers)})
        return "", 204

    server = serve_in_thread(app)
    holder.url = f"{server.url}/status"
    yield holder
    server.stop()


def start_stand_in(outbox: Path, **overrides: Any) -> tuple[StandIn, RunningServer]:
    app = create_app(TwilioConfig(outbox_dir=outbox, **overrides))
    server = serve_in_thread(app)
    return StandIn(server.url, app, outbox), server


@pytest.fixture(scope="module")
def module_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    stand_in, server = start_stand_in(tmp_path_factory.mktemp("outbox"))
    yield stand_in
    stand_in.app.extensions["twilio"].close()
    server.stop()


@pytest.fixture
def stand_in(module_stand_in: StandIn, receiver: CallbackReceiver) -> StandIn:
    module_stand_in.wait_idle()  # no stray delivery from the previous test
    assert module_stand_in.dev("POST", "reset").status_code == 200
    receiver.calls.clear()
    return module_stand_in


def sdk_client(
    url: str, sid: str = DEV_ACCOUNT_SID, token: str = DEV_AUTH_TOKEN, **kw: Any
) -> Client:
    """The real SDK, its requests sent to the stand-in at `url`."""
    return Client(sid, token, http_client=LocalTwilioHttpClient(url, **kw))


@pytest.fixture
def client(stand_in: StandIn) -> Client:
    return sdk_client(stand_in.url)


def send(client: Client, to: str = ALICE, **kwargs: Any) -> Any:
    kwargs.setdefault("from_", SENDER)
    kwargs.setdefault("body", "hello")
    return client.messages.create(to=to, **kwargs)


# --- the happy path --------------------------------------------------------------------------


def test_mms_is_queued_then_delivered_to_the_outbox(client, stand_in, media_server):
    message = send(client, body="Your picture", media_url=[f"{media_server.url}/picture.jpg"])

    assert message.sid.startswith("MM") and len(message.sid) == 34
    assert (message.status, message.num_media, message.num_segments) == ("queued", "1", "1")
    assert (message.to, message.from_, message.body) == (ALICE, SENDER, "Your picture")
    assert message.account_sid == DEV_ACCOUNT_SID
    assert message.direction == "outbound-api" and message.api_version == "2010-04-01"
    assert message.messaging_service_sid is None  # From alone: no service, status queued
    assert message.error_code is None and message.price is None
    assert message.date_created is not None and message.date_sent is None
    assert message.subresource_uris["media"].endswith(f"/Messages/{message.sid}/Media.json")

    stand_in.wait_idle()
    record = json.loads((stand_in.outbox / f"{message.sid}.json").read_text())
    assert record["status"] == "delivered" and record["date_sent"] is not None
    assert (stand_in.outbox / f"{message.sid}-0.jpg").read_bytes() == media_server.jpeg
    assert record["media"][0]["path"] == str(stand_in.outbox / f"{message.sid}-0.jpg")


def test_sms_without_media_gets_an_sm_sid(client, stand_in):
    message = send(client, body="x" * 161)
    assert message.sid.startswith("SM")
    assert (message.num_media, message.num_segments) == ("0", "2")
    stand_in.wait_idle()
    assert client.messages(message.sid).fetch().status == "delivered"


def test_fetch_by_sid_and_unknown_sid(client, stand_in, media_server):
    sent = send(client, media_url=[f"{media_server.url}/picture.jpg"])
    stand_in.wait_idle()

    fetched = client.messages(sent.sid).fetch()
    assert (fetched.sid, fetched.status, fetched.error_code) == (sent.sid, "delivered", None)
    assert fetched.date_sent is not None
    media = client.messages(sent.sid).media.list()
    assert [item.content_type for item in media] == ["image/jpeg"]

    with pytest.raises(TwilioRestException) as caught:
        client.messages("MM" + "0" * 32).fetch()
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_dev_outbox_lists_messages_with_status_and_files(stand_in, client, media_server):
    sent = send(client, media_url=[f"{media_server.url}/picture.jpg"])
    assert stand_in.dev("POST", "wait-idle", {"timeout": WAIT_S}).json() == {"idle": True}

    (entry,) = stand_in.dev("GET", "outbox").json()["messages"]
    assert (entry["sid"], entry["status"], entry["error_code"]) == (sent.sid, "delivered", None)
    assert Path(entry["media"][0]["path"]).read_bytes() == media_server.jpeg


# --- listing ---------------------------------------------------------------------------------


def test_list_filters_by_to_from_and_date_sent(client, stand_in):
    first = send(client, to=ALICE)
    second = send(client, to=BOB)
    third = send(client, to=ALICE, from_="+15017122662")
    stand_in.wait_idle()

    assert [m.sid for m in client.messages.list(to=ALICE)] == [third.sid, first.sid]
    assert [m.sid for m in client.messages.list(from_=SENDER)] == [second.sid, first.sid]
    minute_ago = datetime.now(UTC) - timedelta(minutes=1)
    assert len(client.messages.list(date_sent_after=minute_ago)) == 3
    assert client.messages.list(date_sent_after=minute_ago + timedelta(days=2)) == []
    assert len(client.messages.list(date_sent_before=minute_ago + timedelta(days=2))) == 3
    assert client.messages.list(date_sent_before=minute_ago - timedelta(days=2)) == []
    assert len(client.messages.list(date_sent=datetime.now(UTC))) == 3


def test_list_pages_newest_first(client, stand_in):
    sids = [send(client, body=f"n{index}").sid for index in range(5)]
    newest_first = list(reversed(sids))

    assert [m.sid for m in client.messages.list(page_size=2)] == newest_first
    assert [m.sid for m in client.messages.stream(page_size=2, limit=3)] == newest_first[:3]

    page = client.messages.page(page_size=2)
    seen = []
    while page is not None:
        seen.append([m.sid for m in page])
        page = page.next_page()
    assert seen == [newest_first[0:2], newest_first[2:4], newest_first[4:]]

    # Page tokens are cursors: a message arriving between pages neither repeats nor skips one.
    first = client.messages.page(page_size=2)
    send(client, body="late")
    second = first.next_page()
    assert [m.sid for m in second] == newest_first[2:4]
    assert [m.sid for m in second.previous_page()] == newest_first[0:2]


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"to": ""}, 21604),
        ({"to": "5558675310"}, 21211),
        ({"to": "+1555"}, 21211),
        ({"from_": None}, 21603),  # neither From nor MessagingServiceSid
        ({"from_": "not-a-number"}, 21606),
        ({"from_": "whatsapp:+15017122661"}, 21606),
        ({"body": None}, 21602),
        ({"body": "x" * 1601}, 21617),
        ({"media_url": ["https://example.com/a.jpg"] * 11}, 21623),
        ({"media_url": ["ftp://example.com/a.jpg"]}, 21620),
    ],
)
def test_validation_errors(client, kwargs, code):
    with pytest.raises(TwilioRestException) as caught:
        send(client, **kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)


def test_whatsapp_to_whatsapp_is_accepted(client):
    message = send(client, to=f"whatsapp:{ALICE}", from_=f"whatsapp:{SENDER}")
    assert message.to == f"whatsapp:{ALICE}"


def test_opted_out_number_gets_21610_until_opt_in(client, stand_in):
    assert stand_in.dev("POST", "opt-out", {"number": ALICE}).json() == {"opted_out": [ALICE]}
    with pytest.raises(TwilioRestException) as caught:
        send(client)
    assert (caught.value.status, caught.value.code) == (400, 21610)
    send(client, to=BOB)  # others unaffected

    stand_in.dev("POST", "opt-in", {"number": ALICE})
    assert send(client).status == "queued"


def test_bad_credentials_and_foreign_account_get_20003(stand_in):
    for sid, token in [(DEV_ACCOUNT_SID, "0" * 32), ("AC" + "1" * 32, DEV_AUTH_TOKEN)]:
        other = sdk_client(stand_in.url, sid, token)
        with pytest.raises(TwilioRestException) as caught:
            send(other)
        assert (caught.value.status, caught.value.code) == (401, 20003)

    raw = requests.get(f"{stand_in.url}/2010-04-01/Accounts/{DEV_ACCOUNT_SID}/Messages.json")
    assert raw.status_code == 401
    assert raw.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


# --- faults ----------------------------------------------------------------------------------


def test_fault_500_once_then_success(client, stand_in):
    assert stand_in.dev("POST", "faults", {"kind": "500"}).status_code == 201
    with pytest.raises(TwilioRestException) as caught:
        send(client)
    assert caught.value.status == 500
    assert send(client).status == "queued"


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ({"kind": "503"}, 503, 20503),
        ({"kind": "20429"}, 429, 20429),
        ({"kind": "21610"}, 400, 21610),
        ({"kind": "21211"}, 400, 21211),
        ({"kind": "timeout", "delay_s": 0.05}, 504, 20504),
    ],
)
def test_fault_kinds(client, stand_in, fault, status, code):
    stand_in.dev("POST", "faults", fault)
    with pytest.raises(TwilioRestException) as caught:
        send(client)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_fault_reset_drops_the_connection(client, stand_in):
    stand_in.dev("POST", "faults", {"kind": "reset"})
    with pytest.raises(requests.ConnectionError):
        send(client)
    assert send(client).status == "queued"


def test_fault_timeout_trips_the_client_timeout(stand_in):
    stand_in.dev("POST", "faults", {"kind": "timeout", "delay_s": 2})
    impatient = sdk_client(stand_in.url, timeout=0.2)
    with pytest.raises(requests.Timeout):
        send(impatient)


def test_fault_filtered_by_number_until_cleared(client, stand_in):
    stand_in.dev("POST", "faults", {"kind": "503", "times": -1, "to": BOB})
    send(client, to=ALICE)
    for _ in range(2):
        with pytest.raises(TwilioRestException):
            send(client, to=BOB)
    assert stand_in.dev("DELETE", "faults").json() == {"faults": []}
    send(client, to=BOB)


# --- delivery failures and status callbacks --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [("/missing.jpg", 11200), ("/mislabelled.png", 12300), ("/page.html", 12300)],
)
def test_unusable_media_fails_the_message(client, stand_in, media_server, receiver, path, code):
    sent = send(client, media_url=[media_server.url + path], status_callback=receiver.url)
    stand_in.wait_idle()

    failed = client.messages(sent.sid).fetch()
    assert (failed.status, failed.error_code) == ("failed", code)
    assert failed.error_message
    assert not (stand_in.outbox / f"{sent.sid}.json").exists()
    (call,) = receiver.calls
    assert (call["form"]["MessageStatus"], call["form"]["ErrorCode"]) == ("failed", str(code))


def test_media_over_the_size_limit_fails_with_11751(client, media_server, tmp_path):
    small, server = start_stand_in(tmp_path, media_max_bytes=len(media_server.jpeg) - 1)
    try:
        local = sdk_client(small.url)
        sent = send(local, media_url=[f"{media_server.url}/picture.jpg"])
        small.wait_idle()
        fetched = local.messages(sent.sid).fetch()
        assert (fetched.status, fetched.error_code) == ("failed", 11751)
    finally:
        small.app.extensions["twilio"].close()
        server.stop()


def test_status_callbacks_are_signed(client, stand_in, media_server, receiver):
    sent = send(client, media_url=[f"{media_server.url}/picture.jpg"], status_callback=receiver.url)
    stand_in.wait_idle()

    assert [call["form"]["MessageStatus"] for call in receiver.calls] == ["sent", "delivered"]
    validator = RequestValidator(DEV_AUTH_TOKEN)
    for call in receiver.calls:
        form = call["form"]
        assert (form["MessageSid"], form["To"], form["From"]) == (sent.sid, ALICE, SENDER)
        assert form["AccountSid"] == DEV_ACCOUNT_SID and "ErrorCode" not in form
        assert validator.validate(receiver.url, form, call["headers"]["X-Twilio-Signature"])
        assert not RequestValidator("0" * 32).validate(
            receiver.url, form, call["headers"]["X-Twilio-Signature"]
        )


# --- the SDK adapter -------------------------------------------------------------------------


def test_rewrite_twilio_url_keeps_path_and_query():
    base = "http://127.0.0.1:9000/"
    assert (
        rewrite_twilio_url("https://api.twilio.com/2010-04-01/A.json?Page=1&To=%2B1", base)
        == "http://127.0.0.1:9000/2010-04-01/A.json?Page=1&To=%2B1"
    )
    assert rewrite_twilio_url("https://studio.twilio.com/v2/Flows", base + "x") == (
        "http://127.0.0.1:9000/x/v2/Flows"
    )
    for untouched in ["https://example.com/", "http://api.twilio.com/", "https://eviltwilio.com/"]:
        assert rewrite_twilio_url(untouched, base) == untouched


# --- Studio flows ----------------------------------------------------------------------------


def hello_flow(text: str = "Hello") -> dict[str, Any]:
    """A minimal valid flow: a call hears `text`; messages and requests end at once."""
    return {
        "description": "Hello",
        "states": [
            {
                "name": "Trigger",
                "type": "trigger",
                "transitions": [
                    {"event": "incomingMessage"},
                    {"event": "incomingCall", "next": "Hello"},
                    {"event": "incomingRequest"},
                ],
                "properties": {"offset": {"x": 0, "y": 0}},
            },
            {
                "name": "Hello",
                "type": "say-play",
                "transitions": [{"event": "audioComplete"}],
                "properties": {"say": text, "offset": {"x": 0, "y": 200}},
            },
        ],
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
    }


def broken_flow() -> dict[str, Any]:
    flow = hello_flow()
    flow["states"][1]["properties"]["loop"] = "twice"  # must be an integer
    flow["states"][0]["transitions"][1]["next"] = "Missing"
    return flow


def create_flow(client: Client, name: str = "phone bot", **kwargs: Any) -> Any:
    kwargs.setdefault("status", "published")
    kwargs.setdefault("definition", hello_flow())
    return client.studio.v2.flows.create(friendly_name=name, **kwargs)


def test_flow_validate_accepts_a_valid_definition(client):
    result = client.studio.v2.flow_validate.update(
        friendly_name="phone bot", status="published", definition=hello_flow()
    )
    assert result.valid is True


def test_the_project_flow_validates(client):
    definition = json.loads((REPO / "studio" / "flow.json").read_text())
    result = client.studio.v2.flow_validate.update(
        friendly_name="phone bot", status="draft", definition=definition
    )
    assert result.valid is True


def test_flow_validate_reports_81022_with_details(client):
    with pytest.raises(TwilioRestException) as caught:
        client.studio.v2.flow_validate.update(
            friendly_name="phone bot", status="published", definition=broken_flow()
        )
    error = caught.value
    assert (error.status, error.code) == (400, 81022)
    assert "Flow definition validation failed" in error.msg
    paths = {item["property_path"]: item["message"] for item in error.details["errors"]}
    assert "loop" in paths["#/states/1/properties/loop"]
    assert "'Missing'" in paths["#/states/0/transitions/1"]


@pytest.mark.parametrize(
    ("form", "code", "property_path"),
    [
        ({"Status": "live", "Definition": json.dumps(hello_flow())}, 81022, "Status"),
        ({"Status": "draft", "Definition": "{not json"}, 81022, "#"),
        ({"Status": "draft", "Definition": "[]"}, 81022, "#"),
        ({"Status": "draft"}, 20001, None),
        ({"Definition": json.dumps(hello_flow())}, 20001, None),
    ],
)
def test_flow_validate_rejects_bad_forms(stand_in, form, code, property_path):
    response = requests.post(
        f"{stand_in.url}/v2/Flows/Validate",
        data={"FriendlyName": "phone bot", **form},
        auth=(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN),
        timeout=WAIT_S,
    )
    body = response.json()
    assert (response.status_code, body["code"], body["status"]) == (400, code, 400)
    if property_path is not None:
        assert [item["property_path"] for item in body["details"]["errors"]] == [property_path]


def test_flow_create_fetch_and_list(client):
    flow = create_flow(client, commit_message="first")

    assert flow.sid.startswith("FW") and len(flow.sid) == 34
    assert (flow.account_sid, flow.friendly_name, flow.status) == (
        DEV_ACCOUNT_SID,
        "phone bot",
        "published",
    )
    assert (flow.revision, flow.commit_message, flow.valid) == (1, "first", True)
    assert (flow.errors, flow.warnings, flow.definition) == ([], [], hello_flow())
    assert flow.webhook_url == (
        f"https://webhooks.twilio.com/v1/Accounts/{DEV_ACCOUNT_SID}/Flows/{flow.sid}"
    )
    assert flow.url == f"https://studio.twilio.com/v2/Flows/{flow.sid}"
    assert flow.links["revisions"] == f"{flow.url}/Revisions"
    assert flow.date_created is not None and flow.date_updated == flow.date_created

    fetched = client.studio.v2.flows(flow.sid).fetch()
    assert (fetched.sid, fetched.revision, fetched.definition) == (flow.sid, 1, hello_flow())

    (listed,) = client.studio.v2.flows.list()
    assert (listed.sid, listed.friendly_name, listed.revision) == (flow.sid, "phone bot", 1)
    assert listed.definition is None  # as on Twilio: a list leaves the definition out


def test_flow_list_pages_through_meta_urls(client):
    sids = [create_flow(client, name=f"flow {index}").sid for index in range(3)]
    assert [flow.sid for flow in client.studio.v2.flows.list(page_size=2)] == sids
    page = client.studio.v2.flows.page(page_size=2)
    assert [flow.sid for flow in page.next_page()] == sids[2:]


def test_flow_update_bumps_revision_only_on_change(client):
    flow = create_flow(client, status="draft")
    context = client.studio.v2.flows(flow.sid)

    changed = context.update(
        status="published", definition=hello_flow("Hi there"), commit_message="greet"
    )
    assert (changed.revision, changed.status, changed.commit_message) == (2, "published", "greet")
    assert changed.definition == hello_flow("Hi there")

    same = context.update(
        status="published", definition=hello_flow("Hi there"), commit_message="again"
    )
    assert (same.revision, same.commit_message) == (2, "greet")

    status_only = context.update(status="draft")  # no Definition: the definition stays
    assert (status_only.revision, status_only.definition) == (3, hello_flow("Hi there"))
    assert context.fetch().revision == 3


def test_flow_create_and_update_reject_an_invalid_definition(client):
    with pytest.raises(TwilioRestException) as caught:
        create_flow(client, definition=broken_flow())
    assert (caught.value.status, caught.value.code) == (400, 81022)
    assert client.studio.v2.flows.list() == []

    flow = create_flow(client)
    with pytest.raises(TwilioRestException) as caught:
        client.studio.v2.flows(flow.sid).update(status="published", definition=broken_flow())
    assert caught.value.code == 81022
    assert client.studio.v2.flows(flow.sid).fetch().definition == hello_flow()


def test_flow_delete_and_unknown_sid(client):
    flow = create_flow(client)
    assert client.studio.v2.flows(flow.sid).delete() is True
    unknown = "FW" + "0" * 32
    calls: list[Callable[[], Any]] = [
        lambda: client.studio.v2.flows(flow.sid).fetch(),
        lambda: client.studio.v2.flows(unknown).update(status="draft"),
        lambda: client.studio.v2.flows(unknown).delete(),
    ]
    for call in calls:
        with pytest.raises(TwilioRestException) as caught:
            call()
        assert (caught.value.status, caught.value.code) == (404, 20404)


def test_dev_flows_shows_revision_and_definition_and_reset_clears(stand_in, client):
    flow = create_flow(client)
    (entry,) = stand_in.dev("GET", "flows").json()["flows"]
    assert (entry["sid"], entry["revision"], entry["definition"]) == (flow.sid, 1, hello_flow())

    stand_in.dev("POST", "reset")
    assert stand_in.dev("GET", "flows").json() == {"flows": []}


# --- incoming phone numbers ------------------------------------------------------------------


def the_number(client: Client) -> Any:
    (number,) = client.incoming_phone_numbers.list(phone_number=NUMBER)
    return number


def test_number_is_listed_with_empty_webhooks(client):
    number = the_number(client)
    assert number.sid.startswith("PN") and len(number.sid) == 34
    assert (number.phone_number, number.friendly_name) == (NUMBER, "(500) 555-0006")
    assert (number.voice_url, number.sms_url) == ("", "")
    assert (number.voice_method, number.sms_method) == ("POST", "POST")
    assert number.capabilities == {"voice": True, "sms": True, "mms": True, "fax": False}
    assert number.account_sid == DEV_ACCOUNT_SID and number.date_created is not None
    assert number.uri.endswith(f"/IncomingPhoneNumbers/{number.sid}.json")


@pytest.mark.parametrize(
    ("filters", "found"),
    [
        ({}, True),
        ({"phone_number": "5550006"}, True),  # any part of the number
        ({"phone_number": "+1500555****"}, True),  # * is any digit
        ({"phone_number": "+15005550007"}, False),
        ({"friendly_name": "(500) 555-0006"}, True),
        ({"friendly_name": "other"}, False),
    ],
)
def test_number_list_filters(client, filters, found):
    assert len(client.incoming_phone_numbers.list(**filters)) == (1 if found else 0)


def test_number_webhooks_update_persists(client, stand_in):
    number = the_number(client)
    flow = create_flow(client)
    updated = client.incoming_phone_numbers(number.sid).update(
        voice_url=flow.webhook_url, sms_url=flow.webhook_url, voice_method="post"
    )
    assert (updated.voice_url, updated.sms_url, updated.voice_method) == (
        flow.webhook_url,
        flow.webhook_url,
        "POST",
    )

    fetched = client.incoming_phone_numbers(number.sid).fetch()
    assert (fetched.voice_url, fetched.sms_url) == (flow.webhook_url, flow.webhook_url)
    assert fetched.friendly_name == "(500) 555-0006"  # untouched fields stay
    (entry,) = stand_in.dev("GET", "numbers").json()["numbers"]
    assert (entry["sid"], entry["voice_url"]) == (number.sid, flow.webhook_url)

    stand_in.dev("POST", "reset")  # back to the number as configured, same SID
    assert client.incoming_phone_numbers(number.sid).fetch().voice_url == ""


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [({"voice_url": "not a url"}, 21402), ({"sms_method": "PUT"}, 21403)],
)
def test_number_update_rejects_bad_values(client, kwargs, code):
    number = the_number(client)
    with pytest.raises(TwilioRestException) as caught:
        client.incoming_phone_numbers(number.sid).update(sms_url="https://ex.com/a", **kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert client.incoming_phone_numbers(number.sid).fetch().sms_url == ""  # nothing applied


def test_unknown_number_is_404(client):
    with pytest.raises(TwilioRestException) as caught:
        client.incoming_phone_numbers("PN" + "0" * 32).update(voice_url="https://ex.com/v")
    assert (caught.value.status, caught.value.code) == (404, 20404)


def test_configured_numbers(tmp_path):
    numbers = ("+15005550006", "+442071838750")
    app = create_app(TwilioConfig(outbox_dir=tmp_path, phone_numbers=numbers))
    listed = app.test_client().get("/__dev/numbers").get_json()["numbers"]
    assert [(item["phone_number"], item["friendly_name"]) for item in listed] == [
        ("+15005550006", "(500) 555-0006"),
        ("+442071838750", "+442071838750"),
    ]
    with pytest.raises(ValueError, match=r"E\.164"):
        create_app(TwilioConfig(outbox_dir=tmp_path, phone_numbers=("5550006",)))


# --- auth for the new APIs -------------------------------------------------------------------


def test_studio_and_numbers_need_credentials(client, stand_in):
    number_sid = the_number(client).sid
    flow_sid = create_flow(client).sid
    wrong = sdk_client(stand_in.url, DEV_ACCOUNT_SID, "0" * 32)
    calls: list[Callable[[], Any]] = [
        lambda: wrong.studio.v2.flow_validate.update(
            friendly_name="x", status="draft", definition=hello_flow()
        ),
        lambda: wrong.studio.v2.flows.create(
            friendly_name="x", status="draft", definition=hello_flow()
        ),
        lambda: wrong.studio.v2.flows(flow_sid).fetch(),
        lambda: wrong.incoming_phone_numbers(number_sid).update(voice_url="https://ex.com/v"),
    ]
    for call in calls:
        with pytest.raises(TwilioRestException) as caught:
            call()
        assert (caught.value.status, caught.value.code) == (401, 20003)

    # The SDK's list() reads pages without its error mapping: a plain TwilioException.
    for listing in [wrong.studio.v2.flows.list, wrong.incoming_phone_numbers.list]:
        with pytest.raises(TwilioException, match="Unable to fetch page") as caught_page:
            listing()
        assert caught_page.value.args[1].status_code == 401
    assert the_number(client).voice_url == ""  # nothing changed


# --- date filters, direction and num_media of listed messages ---------------------------------


def test_sdk_sends_date_sent_filters_as_utc_timestamps():
    # What `messages.list(date_sent_after=...)` puts in `DateSent>`: a date becomes midnight,
    # and an aware datetime keeps its wall-clock time but is labelled Z (its offset is dropped).
    assert serialize.iso8601_datetime(date(2024, 5, 1)) == "2024-05-01T00:00:00Z"
    pacific = timezone(timedelta(hours=-8))
    assert serialize.iso8601_datetime(datetime(2024, 5, 1, 23, 30, tzinfo=pacific)) == (
        "2024-05-01T23:30:00Z"
    )


def test_date_sent_filters_compare_whole_utc_days(client, stand_in):
    message = send(client)
    stand_in.wait_idle()
    sent = client.messages(message.sid).fetch().date_sent
    assert sent is not None and sent.tzinfo is not None
    day_start = datetime.combine(sent.astimezone(UTC).date(), time.min, UTC)
    day_end = day_start + timedelta(hours=23, minutes=59, seconds=59)

    def listed(**filters: Any) -> list[str]:
        return [item.sid for item in client.messages.list(**filters)]

    # The time of day is ignored: later the same day still counts as "on or after".
    assert listed(date_sent_after=day_end) == [message.sid]
    assert listed(date_sent_before=day_start) == [message.sid]
    assert listed(date_sent=day_end) == [message.sid]
    assert listed(date_sent_after=sent.date(), date_sent_before=sent.date()) == [message.sid]
    assert listed(date_sent_after=day_start + timedelta(days=1)) == []
    assert listed(date_sent_before=day_start - timedelta(seconds=1)) == []


def test_raw_date_sent_forms(stand_in, client):
    message = send(client)
    stand_in.wait_idle()
    today = datetime.now(UTC).date()
    path = f"{stand_in.url}/2010-04-01/Accounts/{DEV_ACCOUNT_SID}/Messages.json"

    def raw(query: str) -> requests.Response:
        return requests.get(f"{path}?{query}", auth=(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN), timeout=5)

    # Twilio's documented form: DateSent>=YYYY-MM-DD (the key is "DateSent>").
    found = raw(f"DateSent>={today.isoformat()}").json()["messages"]
    assert [item["sid"] for item in found] == [message.sid]
    # An offset moves the value to UTC first: 23:30 at -08:00 on the eve is today in UTC.
    eve = (today - timedelta(days=1)).isoformat()
    found = raw(urlencode({"DateSent": f"{eve}T23:30:00-08:00"})).json()["messages"]
    assert [item["sid"] for item in found] == [message.sid]

    bad = raw(urlencode({"DateSent>": "yesterday"}))
    assert (bad.status_code, bad.json()["code"], bad.json()["status"]) == (400, 20001, 400)


def test_listed_messages_carry_direction_and_num_media(client, stand_in, media_server, webhook):
    webhook.answer_twiml(twiml_replies("ok"))
    sms = send(client, to=ALICE)
    mms = send(client, to=ALICE, media_url=[f"{media_server.url}/picture.jpg"])
    incoming = stand_in.dev("POST", "incoming", incoming_json(url=webhook.url)).json()
    stand_in.wait_idle()

    listed = {item.sid: item for item in client.messages.list()}
    (reply,) = incoming["replies"]
    assert {sid: (m.direction, m.num_media) for sid, m in listed.items()} == {
        sms.sid: ("outbound-api", "0"),
        mms.sid: ("outbound-api", "1"),
        incoming["inbound_sid"]: ("inbound", "0"),
        reply["sid"]: ("outbound-reply", "0"),
    }


# --- Messaging Services --------------------------------------------------------------------

OTHER_NUMBER = "+15005550007"
SERVICE_A = "MG" + "a" * 32
SERVICE_B = "MG" + "b" * 32


def test_default_messaging_service_holds_the_default_numbers(tmp_path):
    assert re.fullmatch(r"MG[0-9a-f]{32}", DEFAULT_MESSAGING_SERVICE_SID)
    config = TwilioConfig(outbox_dir=tmp_path)
    assert resolve_services(config) == {DEFAULT_MESSAGING_SERVICE_SID: DEFAULT_PHONE_NUMBERS}
    other = TwilioConfig(outbox_dir=tmp_path, phone_numbers=(NUMBER, OTHER_NUMBER))
    assert resolve_services(other) == {DEFAULT_MESSAGING_SERVICE_SID: (NUMBER, OTHER_NUMBER)}


@pytest.mark.parametrize(
    ("services", "problem"),
    [
        ({"MG123": (NUMBER,)}, "32 hex"),
        ({SERVICE_A: ()}, "at least one sender"),
        ({SERVICE_A: ("+15550001111",)}, "not in TwilioConfig.phone_numbers"),
        ({SERVICE_A: (NUMBER,), SERVICE_B: (NUMBER,)}, "already in"),
    ],
)
def test_bad_messaging_services_config(tmp_path, services, problem):
    with pytest.raises(ValueError, match=problem):
        create_app(TwilioConfig(outbox_dir=tmp_path, messaging_services=services))


def test_service_without_from_is_accepted_then_sent_from_its_pool(client, stand_in, receiver):
    message = client.messages.create(
        to=ALICE,
        messaging_service_sid=DEFAULT_MESSAGING_SERVICE_SID,
        body="hello",
        status_callback=receiver.url,
    )
    # No sender yet: accepted, no from, zero segments.
    assert (message.status, message.from_, message.num_segments) == ("accepted", None, "0")
    assert message.messaging_service_sid == DEFAULT_MESSAGING_SERVICE_SID
    assert message.direction == "outbound-api"

    stand_in.wait_idle()
    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.from_, fetched.num_segments) == ("delivered", NUMBER, "1")
    # No callback for the first status; one for each later one, naming the service.
    assert [call["form"]["MessageStatus"] for call in receiver.calls] == [
        "queued",
        "sent",
        "delivered",
    ]
    for call in receiver.calls:
        assert call["form"]["MessagingServiceSid"] == DEFAULT_MESSAGING_SERVICE_SID
        assert call["form"]["From"] == NUMBER
    (listed,) = client.messages.list(to=ALICE, from_=NUMBER)
    assert listed.sid == message.sid
    (entry,) = stand_in.dev("GET", "outbox").json()["messages"]
    assert (entry["sid"], entry["messaging_service_sid"]) == (
        message.sid,
        DEFAULT_MESSAGING_SERVICE_SID,
    )


def test_service_mms_with_from_is_delivered_from_that_number(client, stand_in, media_server):
    message = client.messages.create(
        to=ALICE,
        messaging_service_sid=DEFAULT_MESSAGING_SERVICE_SID,
        from_=NUMBER,
        body="Your picture",
        media_url=[f"{media_server.url}/picture.jpg"],
    )
    assert (message.status, message.from_, message.num_media) == ("accepted", NUMBER, "1")
    stand_in.wait_idle()

    fetched = client.messages(message.sid).fetch()
    assert (fetched.status, fetched.messaging_service_sid) == (
        "delivered",
        DEFAULT_MESSAGING_SERVICE_SID,
    )
    assert (stand_in.outbox / f"{message.sid}-0.jpg").read_bytes() == media_server.jpeg


def test_from_may_name_the_service(client, stand_in):
    message = send(client, from_=DEFAULT_MESSAGING_SERVICE_SID)
    assert (message.status, message.messaging_service_sid) == (
        "accepted",
        DEFAULT_MESSAGING_SERVICE_SID,
    )
    stand_in.wait_idle()
    assert client.messages(message.sid).fetch().from_ == NUMBER


@pytest.fixture
def two_services(tmp_path: Path) -> Iterator[Client]:
    """A stand-in with two numbers, each in its own Messaging Service."""
    services = {SERVICE_A: (NUMBER,), SERVICE_B: (OTHER_NUMBER,)}
    local, server = start_stand_in(
        tmp_path, phone_numbers=(NUMBER, OTHER_NUMBER), messaging_services=services
    )
    yield sdk_client(local.url)
    assert local.app.extensions["twilio"].wait_idle(WAIT_S)
    local.app.extensions["twilio"].close()
    server.stop()


def test_configured_services_pick_their_own_pool(two_services):
    message = two_services.messages.create(to=ALICE, messaging_service_sid=SERVICE_B, body="b")
    assert message.messaging_service_sid == SERVICE_B
    # A From of the account but outside the service's pool is used (Twilio only warns, 21711).
    outside = two_services.messages.create(
        to=ALICE, messaging_service_sid=SERVICE_B, from_=NUMBER, body="a"
    )
    assert (outside.from_, outside.messaging_service_sid) == (NUMBER, SERVICE_B)


def test_configured_services_refuse_the_default_sid(two_services):
    with pytest.raises(TwilioRestException) as caught:
        two_services.messages.create(
            to=ALICE, messaging_service_sid=DEFAULT_MESSAGING_SERVICE_SID, body="x"
        )
    assert (caught.value.status, caught.value.code) == (400, 21701)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"messaging_service_sid": "MG123"}, 21705),  # not MG + 32 hex
        ({"messaging_service_sid": "XX" + "0" * 32}, 21705),
        ({"from_": "MGnot-a-sid"}, 21705),  # a service SID in From, malformed
        ({"messaging_service_sid": "MG" + "f" * 32}, 21701),  # well formed, not ours
        ({"messaging_service_sid": DEFAULT_MESSAGING_SERVICE_SID, "from_": SENDER}, 21660),
        ({"messaging_service_sid": DEFAULT_MESSAGING_SERVICE_SID, "from_": "+1"}, 21606),
        (
            {"messaging_service_sid": DEFAULT_MESSAGING_SERVICE_SID, "to": f"whatsapp:{ALICE}"},
            21606,
        ),
    ],
)
def test_messaging_service_refusals(client, stand_in, kwargs, code):
    kwargs.setdefault("to", ALICE)
    kwargs.setdefault("from_", None)
    with pytest.raises(TwilioRestException) as caught:
        client.messages.create(body="hello", **kwargs)
    assert (caught.value.status, caught.value.code) == (400, code)
    assert client.messages.list() == []


def test_messaging_service_refusal_has_twilios_error_shape(stand_in):
    response = requests.post(
        f"{stand_in.url}/2010-04-01/Accounts/{DEV_ACCOUNT_SID}/Messages.json",
        data={"To": ALICE, "MessagingServiceSid": "MG" + "f" * 32, "Body": "hi"},
        auth=(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN),
        timeout=WAIT_S,
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": 21701,
        "message": f"The Messaging Service MG{'f' * 32} does not exist.",
        "more_info": "https://www.twilio.com/docs/errors/21701",
        "status": 400,
    }


# --- incoming messages and TwiML replies -----------------------------------------------------


@dataclass
class Webhook:
    """Our side of the incoming-message webhook: records requests, answers `answer`.

    With `fetch_media` it downloads each ``MediaUrl{N}`` with the account's Basic auth before
    answering, as generate would, into `fetched` as (status, Content-Type, bytes).
    """

    url: str
    calls: list[dict[str, Any]] = field(default_factory=list)
    answer: tuple[int, str | None, bytes] = (200, "text/xml", b"<Response/>")
    fetch_media: bool = False
    fetched: list[tuple[int, str, bytes]] = field(default_factory=list)

    def answer_twiml(self, twiml: Any) -> None:
        self.answer = (200, "text/xml", str(twiml).encode())


@pytest.fixture(scope="module")
def webhook_server() -> Iterator[Webhook]:
    app = flask.Flask("webhook")
    holder = Webhook(url="")

    @app.route("/sms", methods=["GET", "POST"])
    def sms() -> flask.Response:
        request = flask.request
        holder.calls.append(
            {
                "method": request.method,
                "form": request.form.copy(),
                "args": request.args.copy(),
                "headers": dict(request.headers),
            }
        )
        if holder.fetch_media:
            for index in range(int(request.form.get("NumMedia", "0"))):
                got = requests.get(
                    request.form[f"MediaUrl{index}"],
                    auth=(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN),
                    timeout=WAIT_S,
                )
                holder.fetched.append((got.status_code, got.headers["Content-Type"], got.content))
        status, content_type, body = holder.answer
        response = flask.Response(body, status=status)
        if content_type is None:
            del response.headers["Content-Type"]
        else:
            response.headers["Content-Type"] = content_type
        return response

    server = serve_in_thread(app)
    holder.url = f"{server.url}/sms"
    yield holder
    server.stop()


@pytest.fixture
def webhook(webhook_server: Webhook) -> Webhook:
    webhook_server.calls.clear()
    webhook_server.answer = (200, "text/xml", b"<Response/>")
    webhook_server.fetch_media = False
    webhook_server.fetched.clear()
    return webhook_server


def twiml_replies(*texts: str) -> MessagingResponse:
    twiml = MessagingResponse()
    for text in texts:
        twiml.message(text)
    return twiml


def incoming_json(body: str = "a cat in a hat", **extra: Any) -> dict[str, Any]:
    return {"from": ALICE, "to": NUMBER, "body": body, **extra}


INCOMING_FIELDS = {
    "AccountSid",
    "ApiVersion",
    "Body",
    "From",
    "MessageSid",
    "MessagingServiceSid",
    "NumMedia",
    "NumSegments",
    "SmsMessageSid",
    "SmsSid",
    "SmsStatus",
    "To",
}


def test_incoming_message_posts_signed_webhook_and_sends_twiml_replies(
    client, stand_in, webhook, media_server, receiver
):
    twiml = MessagingResponse()
    twiml.message("Drawing a cat in a hat for you.")
    picture = twiml.message()
    picture.body("Here it is")
    picture.media(f"{media_server.url}/picture.jpg")
    webhook.answer_twiml(twiml)

    answer = stand_in.dev("POST", "incoming", incoming_json(url=webhook.url))
    assert answer.status_code == 200
    result = answer.json()

    (call,) = webhook.calls
    form = call["form"]
    assert call["method"] == "POST" and set(form) == INCOMING_FIELDS
    assert form["MessageSid"] == form["SmsSid"] == form["SmsMessageSid"] == result["inbound_sid"]
    assert (form["From"], form["To"], form["Body"]) == (ALICE, NUMBER, "a cat in a hat")
    assert (form["AccountSid"], form["ApiVersion"]) == (DEV_ACCOUNT_SID, "2010-04-01")
    assert form["MessagingServiceSid"] == DEFAULT_MESSAGING_SERVICE_SID
    assert (form["NumMedia"], form["NumSegments"], form["SmsStatus"]) == ("0", "1", "received")
    signature = call["headers"]["X-Twilio-Signature"]
    assert signature == RequestValidator(DEV_AUTH_TOKEN).compute_signature(webhook.url, form)
    assert RequestValidator(DEV_AUTH_TOKEN).validate(webhook.url, form, signature)

    assert (result["webhook_url"], result["webhook_status"], result["notices"]) == (
        webhook.url,
        200,
        [],
    )
    text, mms = result["replies"]
    assert (text["direction"], text["from"], text["to"]) == ("outbound-reply", NUMBER, ALICE)
    assert (text["body"], text["status"], text["num_media"]) == (
        "Drawing a cat in a hat for you.",
        "queued",
        "0",
    )
    assert mms["sid"].startswith("MM") and (mms["body"], mms["num_media"]) == ("Here it is", "1")

    stand_in.wait_idle()
    replies = client.messages.list(to=ALICE, from_=NUMBER)
    assert [m.sid for m in replies] == [mms["sid"], text["sid"]]
    assert {(m.direction, m.status) for m in replies} == {("outbound-reply", "delivered")}
    (inbound,) = client.messages.list(to=NUMBER, from_=ALICE)
    assert (inbound.sid, inbound.direction, inbound.status) == (
        result["inbound_sid"],
        "inbound",
        "received",
    )
    assert inbound.messaging_service_sid == DEFAULT_MESSAGING_SERVICE_SID
    assert inbound.date_sent is not None and inbound.body == "a cat in a hat"

    outbox = stand_in.dev("GET", "outbox").json()["messages"]  # replies only, no inbound
    assert [entry["sid"] for entry in outbox] == [text["sid"], mms["sid"]]
    assert {entry["status_callback"] for entry in outbox} == {None}
    assert (stand_in.outbox / f"{mms['sid']}-0.jpg").read_bytes() == media_server.jpeg
    assert receiver.calls == []  # TwiML replies have no status callback


def test_incoming_goes_to_the_numbers_sms_url_with_its_method(client, stand_in, webhook):
    (number,) = client.incoming_phone_numbers.list(phone_number=NUMBER)
    configured = f"{webhook.url}?source=number"
    client.incoming_phone_numbers(number.sid).update(sms_url=configured, sms_method="GET")
    webhook.answer_twiml(twiml_replies("hi back"))

    result = stand_in.dev("POST", "incoming", incoming_json("hi")).json()

    (call,) = webhook.calls
    assert call["method"] == "GET" and not call["form"]
    args = call["args"]
    assert (args["source"], args["Body"], args["MessageSid"]) == (
        "number",
        "hi",
        result["inbound_sid"],
    )
    # GET: the form is in the query string and Twilio signs that whole URL alone.
    signed_url = f"{configured}&{urlencode({k: v for k, v in args.items() if k != 'source'})}"
    validator = RequestValidator(DEV_AUTH_TOKEN)
    assert validator.validate(signed_url, {}, call["headers"]["X-Twilio-Signature"])
    assert result["webhook_url"] == configured
    assert [reply["body"] for reply in result["replies"]] == ["hi back"]


def test_incoming_without_a_webhook_only_stores_the_message(client, stand_in, webhook):
    result = stand_in.dev("POST", "incoming", incoming_json()).json()

    assert (result["webhook_url"], result["webhook_status"], result["replies"]) == (None, None, [])
    assert webhook.calls == []
    (inbound,) = client.messages.list()
    assert (inbound.sid, inbound.direction) == (result["inbound_sid"], "inbound")
    assert stand_in.dev("GET", "outbox").json() == {"messages": []}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/sms"


@pytest.mark.parametrize(
    ("answer", "status", "codes"),
    [
        ((500, "text/xml", b"<Response><Message>x</Message></Response>"), 500, [11200]),
        ((200, "text/plain", b"hello"), 200, [12300]),
        ((200, None, b"<Response><Message>x</Message></Response>"), 200, [12300]),
        ((200, "text/xml", b"<Response><Message>x</Response>"), 200, [12100]),
        ((200, "text/xml", b"<Reply><Message>x</Message></Reply>"), 200, [12102]),
        (
            (200, "text/xml", b"<Response>" + b"<Message>x</Message>" * 4000 + b"</Response>"),
            200,
            [11750],
        ),
        ((200, "text/xml", b""), 200, [11200]),
        ((204, None, b""), 204, []),
        ((200, "text/xml", b"<Response/>"), 200, []),
    ],
)
def test_unusable_or_empty_answers_send_no_reply(client, stand_in, webhook, answer, status, codes):
    webhook.answer = answer

    result = stand_in.dev("POST", "incoming", incoming_json(url=webhook.url)).json()

    assert (result["webhook_status"], result["replies"]) == (status, [])
    assert [notice["code"] for notice in result["notices"]] == codes
    stand_in.wait_idle()
    assert client.messages.list(from_=NUMBER) == []
    assert len(client.messages.list(to=NUMBER)) == 1  # the inbound message stays


def test_unreachable_webhook_is_11200(client, stand_in):
    result = stand_in.dev("POST", "incoming", incoming_json(url=closed_port_url())).json()
    assert (result["webhook_status"], result["replies"]) == (None, [])
    assert [notice["code"] for notice in result["notices"]] == [11200]


def test_twiml_verbs_and_attributes_twilio_would_not_send(client, stand_in, webhook):
    webhook.answer = (
        200,
        "application/xml",
        b"<?xml version='1.0' encoding='UTF-8'?>"
        b"<Response>"
        b"<Say>no voice here</Say>"
        b'<Message to="nope">bad to</Message>'
        b'<Message from="+15550001111">not our number</Message>'
        b"<Message></Message>"
        b"<Redirect>https://example.com/next</Redirect>"
        b'<Message to="+15558675311">  to Bob  </Message>'
        b"</Response>",
    )

    result = stand_in.dev("POST", "incoming", incoming_json(url=webhook.url)).json()

    assert [notice["code"] for notice in result["notices"]] == [14110, None, 14101, 14102, 21602]
    (reply,) = result["replies"]
    assert (reply["to"], reply["from"], reply["body"]) == (BOB, NUMBER, "to Bob")


def test_stop_opts_out_before_the_webhook_and_start_opts_back_in(client, stand_in, webhook):
    webhook.answer_twiml(twiml_replies("Sorry to see you go"))

    stopped = stand_in.dev("POST", "incoming", incoming_json(" stop ", url=webhook.url)).json()

    assert webhook.calls[0]["form"]["Body"] == " stop "  # still forwarded
    assert stopped["replies"] == []
    assert [notice["code"] for notice in stopped["notices"]] == [21610]
    with pytest.raises(TwilioRestException) as caught:
        send(client, to=ALICE)
    assert (caught.value.status, caught.value.code) == (400, 21610)

    started = stand_in.dev("POST", "incoming", incoming_json("START", url=webhook.url)).json()
    assert len(started["replies"]) == 1
    assert send(client, to=ALICE).status == "queued"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"from": "5558675310"}, 400),
        ({"to": "+15550001111"}, 400),  # not one of our numbers
        ({"body": 7}, 400),
        ({"url": "ftp://example.com/sms"}, 400),
        ({"url": "https://webhooks.twilio.com/v1/Accounts/AC1/Flows/FW1"}, 409),
    ],
)
def test_dev_incoming_rejects_bad_requests(client, stand_in, payload, status):
    response = stand_in.dev("POST", "incoming", {**incoming_json(), **payload})
    assert response.status_code == status
    assert response.json()["status"] == status and response.json()["error"]
    assert client.messages.list() == []


def test_dev_incoming_never_calls_a_studio_flow_on_twilio(client, stand_in):
    (number,) = client.incoming_phone_numbers.list(phone_number=NUMBER)
    flow = create_flow(client)
    client.incoming_phone_numbers(number.sid).update(sms_url=flow.webhook_url)

    response = stand_in.dev("POST", "incoming", incoming_json())

    assert response.status_code == 409 and "studio_runner" in response.json()["error"]
    assert client.messages.list() == []


# --- incoming pictures (MMS) --------------------------------------------------------------

HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00heicmif1"  # what an iPhone sends
MEDIA_URL = re.compile(
    rf"http://127\.0\.0\.1:\d+/2010-04-01/Accounts/{DEV_ACCOUNT_SID}"
    r"/Messages/(MM[0-9a-f]{32})/Media/(ME[0-9a-f]{32})"
)


def media_json(content_type: str, data: bytes) -> dict[str, str]:
    return {"content_type": content_type, "data_b64": base64.b64encode(data).decode()}


def point_number_at(client: Client, url: str) -> None:
    (number,) = client.incoming_phone_numbers.list(phone_number=NUMBER)
    client.incoming_phone_numbers(number.sid).update(sms_url=url, sms_method="POST")


def send_pictures(stand_in: StandIn, *media: dict[str, str], body: str = "") -> dict[str, Any]:
    answer = stand_in.dev(
        "POST", "inbound", {"from": ALICE, "to": NUMBER, "body": body, "media": list(media)}
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_inbound_pictures_reach_the_numbers_webhook_signed_with_their_media_fields(
    client: Client, stand_in: StandIn, webhook: Webhook, media_server: MediaServer
) -> None:
    point_number_at(client, webhook.url)
    webhook.fetch_media = True
    twiml = twiml_replies("Got your 2 pictures")
    webhook.answer_twiml(twiml)

    result = send_pictures(
        stand_in,
        media_json("image/jpeg", media_server.jpeg),
        media_json("image/heic", HEIC),
        body="make it a painting",
    )

    (call,) = webhook.calls
    form = call["form"]
    media_fields = {"MediaUrl0", "MediaContentType0", "MediaUrl1", "MediaContentType1"}
    assert call["method"] == "POST" and set(form) == INCOMING_FIELDS | media_fields
    assert form["MessageSid"].startswith("MM") and form["MessageSid"] == result["inbound_sid"]
    assert (form["From"], form["To"], form["Body"]) == (ALICE, NUMBER, "make it a painting")
    assert (form["NumMedia"], form["NumSegments"], form["SmsStatus"]) == ("2", "1", "received")
    assert (form["MediaContentType0"], form["MediaContentType1"]) == ("image/jpeg", "image/heic")
    assert [form["MediaUrl0"], form["MediaUrl1"]] == result["media_urls"]
    for url in result["media_urls"]:
        found = MEDIA_URL.fullmatch(url)
        assert found is not None and found[1] == result["inbound_sid"]
    assert result["media_urls"][0] != result["media_urls"][1]

    validator = RequestValidator(DEV_AUTH_TOKEN)
    signature = call["headers"]["X-Twilio-Signature"]
    assert validator.validate(webhook.url, form, signature)  # the form as the webhook got it
    tampered = form.copy()
    tampered["MediaUrl1"] = result["media_urls"][0]
    assert not validator.validate(webhook.url, tampered, signature)  # media fields are signed

    # The pictures can be downloaded while the webhook is being answered.
    assert webhook.fetched == [(200, "image/jpeg", media_server.jpeg), (200, "image/heic", HEIC)]
    assert (result["webhook_url"], result["webhook_status"]) == (webhook.url, 200)
    assert result["twiml"] == str(twiml) and result["notices"] == []
    (reply,) = result["replies"]
    assert reply["sid"].startswith("SM") and reply["body"] == "Got your 2 pictures"


def test_inbound_picture_is_an_mms_message_resource_with_listed_media(
    client: Client, stand_in: StandIn, media_server: MediaServer
) -> None:
    result = send_pictures(stand_in, media_json("image/jpeg", media_server.jpeg))

    inbound = client.messages(result["inbound_sid"]).fetch()
    assert (inbound.direction, inbound.status, inbound.num_media) == ("inbound", "received", "1")
    assert (inbound.from_, inbound.to, inbound.body) == (ALICE, NUMBER, "")
    assert result["inbound"]["num_media"] == "1" and result["webhook_url"] is None
    (media,) = client.messages(inbound.sid).media.list()
    assert (media.content_type, media.parent_sid) == ("image/jpeg", inbound.sid)
    assert result["media_urls"] == [f"{stand_in.url}{media.uri.removesuffix('.json')}"]
    fetched = client.messages(inbound.sid).media(media.sid).fetch()
    assert (fetched.sid, fetched.content_type) == (media.sid, "image/jpeg")
    assert stand_in.dev("GET", "outbox").json() == {"messages": []}  # received, not sent


def test_inbound_without_media_is_an_sms_like_incoming(
    client: Client, stand_in: StandIn, webhook: Webhook
) -> None:
    point_number_at(client, webhook.url)

    result = send_pictures(stand_in, body="just text")

    (call,) = webhook.calls
    assert set(call["form"]) == INCOMING_FIELDS and call["form"]["NumMedia"] == "0"
    assert result["inbound_sid"].startswith("SM") and result["media_urls"] == []
    assert result["twiml"] == "<Response/>" and result["replies"] == []


@pytest.mark.parametrize(
    ("auth", "status"),
    [
        ((DEV_ACCOUNT_SID, DEV_AUTH_TOKEN), 200),
        (None, 401),
        ((DEV_ACCOUNT_SID, "wrong-token"), 401),
        ("AC" + "1" * 32, 401),  # another account with our token
    ],
)
def test_inbound_media_url_needs_the_accounts_basic_auth(
    stand_in: StandIn, auth: tuple[str, str] | str | None, status: int
) -> None:
    (url,) = send_pictures(stand_in, media_json("image/heic", HEIC))["media_urls"]
    credentials = (auth, DEV_AUTH_TOKEN) if isinstance(auth, str) else auth

    got = requests.get(url, auth=credentials, timeout=WAIT_S)

    assert got.status_code == status
    if status == 200:
        assert (got.headers["Content-Type"], got.content) == ("image/heic", HEIC)
    else:
        assert got.headers["WWW-Authenticate"].startswith("Basic")
        assert got.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }


def test_inbound_twiml_reply_is_recorded_as_an_outbound_reply(
    client: Client, stand_in: StandIn, webhook: Webhook, media_server: MediaServer
) -> None:
    point_number_at(client, webhook.url)
    twiml = MessagingResponse()
    framed = twiml.message()
    framed.body("Your painting")
    framed.media(f"{media_server.url}/picture.jpg")
    webhook.answer_twiml(twiml)

    result = send_pictures(stand_in, media_json("image/jpeg", media_server.jpeg))

    (reply,) = result["replies"]
    assert reply["sid"].startswith("MM") and reply["body"] == "Your painting"
    stand_in.wait_idle()
    (listed,) = client.messages.list(from_=NUMBER, to=ALICE)
    assert (listed.sid, listed.direction, listed.status) == (
        reply["sid"],
        "outbound-reply",
        "delivered",
    )
    (entry,) = stand_in.dev("GET", "outbox").json()["messages"]
    assert entry["sid"] == reply["sid"]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"from": None}, "from is required"),
        ({"to": None}, "to is required"),
        ({"from": "5558675310"}, "from must be"),
        ({"to": "+15550001111"}, "to must be one of our numbers"),
        ({"media": {"content_type": "image/jpeg"}}, "media must be a list"),
        ({"media": [media_json("image/jpeg", b"x")] * 11}, "11 files; a message has at most 10"),
        ({"media": ["aGk="]}, "media[0] must be an object"),
        ({"media": [{"data_b64": "aGk="}]}, "media[0].content_type"),
        ({"media": [{"content_type": "jpeg", "data_b64": "aGk="}]}, "media[0].content_type"),
        ({"media": [{"content_type": "image/jpeg"}]}, "media[0].data_b64 must be"),
        (
            {
                "media": [
                    media_json("image/png", b"x"),
                    {"content_type": "image/jpeg", "data_b64": "not base64!"},
                ]
            },
            "media[1].data_b64 is not base64",
        ),
        ({"media": [{"content_type": "image/jpeg", "data_b64": "é"}]}, "is not base64"),
        ({"media": [{"content_type": "image/jpeg", "data_b64": ""}]}, "holds no bytes"),
    ],
)
def test_dev_inbound_refuses_bad_input_with_400(
    client: Client, stand_in: StandIn, webhook: Webhook, payload: dict[str, Any], problem: str
) -> None:
    point_number_at(client, webhook.url)
    request = {"from": ALICE, "to": NUMBER, "body": "hi", "media": [], **payload}
    request = {key: value for key, value in request.items() if value is not None}

    response = stand_in.dev("POST", "inbound", request)

    assert response.status_code == 400
    assert response.json()["status"] == 400 and problem in response.json()["error"]
    assert webhook.calls == [] and client.messages.list() == []


def test_dev_inbound_refuses_media_over_the_message_size_limit(tmp_path: Path) -> None:
    small, server = start_stand_in(tmp_path, media_max_bytes=10)
    try:
        payload = {"from": ALICE, "to": NUMBER, "media": [media_json("image/jpeg", b"x" * 6)] * 2}
        response = small.dev("POST", "inbound", payload)
    finally:
        small.app.extensions["twilio"].close()
        server.stop()
    assert response.status_code == 400
    assert "12 bytes; a message has at most 10" in response.json()["error"]


# --- Studio's send-message widget --------------------------------------------------------------


def reply_flow(media_url: str = "") -> dict[str, Any]:
    """Trigger -> one send-message widget with the Console's default from/to."""
    return {
        "description": "Reply",
        "states": [
            {
                "name": "Trigger",
                "type": "trigger",
                "transitions": [
                    {"event": "incomingMessage", "next": "reply"},
                    {"event": "incomingCall"},
                    {"event": "incomingRequest"},
                ],
                "properties": {"offset": {"x": 0, "y": 0}},
            },
            {
                "name": "reply",
                "type": "send-message",
                "transitions": [{"event": "sent"}, {"event": "failed"}],
                "properties": {
                    "offset": {"x": 0, "y": 200},
                    "body": "Got {{trigger.message.Body}}",
                    "from": "{{flow.channel.address}}",
                    "to": "{{contact.channel.address}}",
                    "media_url": media_url,
                },
            },
        ],
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
    }


def test_studio_send_message_is_listed_between_the_right_numbers(client, stand_in, media_server):
    """Studio's widget sends through the Messages API [DOC studio send-message: "The request to
    the Messaging API failed"], so its message is an ordinary listed Message resource."""
    account = TwilioAccount(DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, stand_in.url)
    flow = reply_flow(f"{media_server.url}/picture.jpg")

    execution = run_message(flow, from_=ALICE, to=NUMBER, body="a cat", account=account)

    assert execution.status == "ended", execution.error
    outbound = execution.widgets["reply"]["outbound"]
    stand_in.wait_idle()
    (listed,) = client.messages.list(to=ALICE, from_=NUMBER)
    assert (listed.sid, listed.body, listed.status) == (outbound["Sid"], "Got a cat", "delivered")
    assert (listed.direction, listed.num_media) == ("outbound-api", "1")
    assert client.messages.list(to=NUMBER, from_=ALICE) == []  # the runner stores no inbound
