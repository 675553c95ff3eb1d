from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.serving import serve_in_thread
from devstack.twilio import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, TwilioConfig, create_app
from shared import logs
from shared.messaging import Messenger
from shared.secrets import Secret, SecretSource
from tests.secret_scan import find_leaks, watch_twilio_logs


def test_mask_phone_hides_the_middle_of_numbers() -> None:
    assert logs.mask_phone("to +15551230001 from whatsapp:+447700900123") == (
        "to +155******01 from whatsapp:+447*******23"
    )


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        pytest.param("?To=%2B15551230001&x=1", "?To=%2B155******01&x=1", id="url-encoded-plus"),
        pytest.param("%252B15551230001", "%252B155******01", id="encoded-twice"),
        pytest.param("+15551230001abc", "+155******01abc", id="letters-after"),
        pytest.param("+1 555-123-0001", "+155******01", id="spaces-and-dashes"),
        pytest.param("+1 (555) 123.0001", "+155******01", id="brackets-and-dots"),
        pytest.param("%2B1+555+123+0001", "%2B155******01", id="form-encoded-spaces"),
        pytest.param("tel:+15551230001", "tel:+155******01", id="tel-uri"),
        pytest.param("tel:15551230001", "tel:155******01", id="tel-uri-without-plus"),
        pytest.param("whatsapp:15551230001", "whatsapp:155******01", id="whatsapp-without-plus"),
        pytest.param("\uff0b15551230001", "\uff0b155******01", id="full-width-plus"),
        pytest.param("&#43;15551230001", "&#43;155******01", id="html-escape"),
        pytest.param("\\u002b15551230001", "\\u002b155******01", id="json-escape"),
        pytest.param("+15551230001+15551230002", "+155******01+155******02", id="two-numbers"),
        pytest.param("+2562533", "+256**33", id="seven-digits"),
    ],
)
def test_mask_phone_masks_numbers_in_every_form(text: str, masked: str) -> None:
    assert logs.mask_phone(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-09T07:35:25.123+00:00",
        "qstash 1725323658779-0",
        "hotel:15551230001",
        "+1234 or 15551230001 bare",
        "SM0123456789abcdef0123456789abcdef",
    ],
)
def test_mask_phone_leaves_times_ids_and_bare_digits_alone(text: str) -> None:
    assert logs.mask_phone(text) == text


def test_log_writes_one_json_object_per_line_with_masked_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with logs.log_context(request_id="r-1", **logs.trace_field("proj", "abc123/1;o=1")):
        logs.info("sent to +15551230001", recipient="+15551230001", nested={"to": ["+15551230001"]})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["severity"] == "INFO"
    assert entry["request_id"] == "r-1"
    assert entry["logging.googleapis.com/trace"] == "projects/proj/traces/abc123"
    assert "5551230001" not in lines[0]
    assert entry["recipient"] == "+155******01"


def test_the_secret_scan_finds_secrets_and_unmasked_numbers() -> None:
    lines = [
        '{"message": "ok", "to": "+155******01"}',
        '{"auth": "Bearer sk-abc"}',
        '{"to": "+15551230001"}',
    ]
    problems = find_leaks(lines, {"OPENAI_API_KEY": "sk-abc", "EMPTY": ""})
    assert problems == [
        "log line 2 contains the value of OPENAI_API_KEY",
        "log line 3 shows an unmasked number (+155…)",
    ]
    assert find_leaks(lines[:1], {"OPENAI_API_KEY": "sk-abc"}) == []


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('{"message": "GET /Messages.json?To=%2B15551230001"}', "%2B1"),
        ('{"message": "+15551230001abc"}', "+155"),
        ('{"to": "+1 555-123-0001"}', "+1 5"),
        ('{"to": "tel:15551230001"}', "tel:"),
        ('{"to": "\\uff0b15551230001"}', "\\uff"),
    ],
)
def test_the_secret_scan_finds_numbers_in_every_form(line: str, shown: str) -> None:
    assert find_leaks([line], {}) == [f"log line 1 shows an unmasked number ({shown}…)"]


# --- the twilio SDK's own logger ---------------------------------------------------------------

CALLER, OURS = "+15551230001", "+15005550006"


@pytest.fixture
def twilio_url(tmp_path: Path) -> Iterator[str]:
    server = serve_in_thread(create_app(TwilioConfig(outbox_dir=tmp_path)))
    yield server.url
    server.stop()


@pytest.fixture
def twilio_records_at_the_root() -> Iterator[list[str]]:
    """The twilio SDK at DEBUG (its request logger too), and what of it reaches the root
    logger's handlers, where functions-framework or a deployment prints records."""
    lines: list[str] = []
    undo = watch_twilio_logs(lines.append)
    http_client = logging.getLogger("twilio.http_client")
    level = http_client.level
    http_client.setLevel(logging.DEBUG)
    yield lines
    http_client.setLevel(level)
    undo()


def test_the_twilio_sdk_logs_no_full_number_even_at_debug(
    twilio_url: str,
    twilio_records_at_the_root: list[str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SDK logs each request's query at INFO: `messages.list(to=..., from_=...)` put both
    numbers, in full, on the root logger (as a dict, and URL-encoded in the URL). caplog's
    handler sits on the twilio logger itself, as a deployment's could."""
    token = Secret("TWILIO_AUTH_TOKEN", SecretSource({"TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN}))
    messenger = Messenger(DEV_ACCOUNT_SID, token, twilio_url)

    sent = messenger.send(to=CALLER, from_=OURS, body="hello")
    found = messenger.find_sent(to=CALLER, from_=OURS, bodies={"hello"}, created_at=None)

    assert found == sent.sid
    captured = capsys.readouterr()
    everything = [
        *twilio_records_at_the_root,
        *captured.out.splitlines(),
        *captured.err.splitlines(),
        *caplog.text.splitlines(),
    ]
    assert find_leaks(everything, {"TWILIO_AUTH_TOKEN": DEV_AUTH_TOKEN}) == []
    assert twilio_records_at_the_root == []
    # The SDK did log, at DEBUG, through our lines and masked.
    assert any("Query Params" in record.getMessage() for record in caplog.records)
    ours = [json.loads(line) for line in captured.out.splitlines()]
    from_the_sdk = [
        entry["message"] for entry in ours if entry.get("logger") == "twilio.http_client"
    ]
    assert any(message.startswith("Query Params: ") for message in from_the_sdk), from_the_sdk
    assert any("To=%2B155******01" in message for message in from_the_sdk), from_the_sdk


def test_route_vendor_logs_can_run_again_without_a_second_handler() -> None:
    logs.route_vendor_logs()
    twilio = logging.getLogger("twilio")
    assert twilio.propagate is False
    assert [type(handler).__name__ for handler in twilio.handlers].count("_VendorHandler") == 1
    http_client = logging.getLogger("twilio.http_client")
    assert [type(each).__name__ for each in http_client.filters] == ["_MaskNumbers"]
