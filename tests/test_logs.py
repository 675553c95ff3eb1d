from __future__ import annotations

import json

import pytest

from shared import logs


def test_mask_phone_hides_the_middle_of_numbers() -> None:
    assert logs.mask_phone("to +15551230001 from whatsapp:+447700900123") == (
        "to +155******01 from whatsapp:+447*******23"
    )


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
    from tests.secret_scan import find_leaks

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
