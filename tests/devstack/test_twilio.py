"""The Twilio stand-in, driven through the real `twilio` SDK (no mocks).

One stand-in, one media server and one status-callback receiver per module; every test starts
from a reset stand-in.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import flask
import pytest
import requests
from PIL import Image
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from devstack.serving import RunningServer, serve_in_thread
from devstack.twilio import (
    DEV_ACCOUNT_SID,
    DEV_AUTH_TOKEN,
    LocalTwilioHttpClient,
    TwilioConfig,
    create_app,
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
    assert client.messages.list(date_sent_after=minute_ago + timedelta(hours=1)) == []
    assert len(client.messages.list(date_sent_before=minute_ago + timedelta(hours=1))) == 3
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
        ({"from_": None}, 21606),
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
