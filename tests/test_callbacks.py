"""QStash signature checks and callback parsing. Tokens are made here with PyJWT from the
documented claims, independently of the stand-in's signer."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

import jwt
import pytest

from shared.callbacks import (
    QStashCallback,
    bound_request_id,
    is_sweep_body,
    parse_callback,
    verify_qstash_signature,
)
from shared.errors import BadRequest, SignatureError

CURRENT = "sig_current_key_for_tests_0000000000"
NEXT = "sig_next_key_for_tests_000000000000"
URL = "https://composite.example.run.app?request=5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11"
BODY = b'{"status":200,"body":"e30="}'


def _body_claim(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()


def sign(key: str = CURRENT, url: str = URL, signed_body: bytes = BODY, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "Upstash",
        "sub": url,
        "exp": now + 300,
        "nbf": 0,
        "iat": now,
        "jti": "jwt_test",
        "body": _body_claim(signed_body),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="HS256")


def verify(token: str | None, body: bytes = BODY, url: str = URL) -> dict[str, Any]:
    return verify_qstash_signature(token, body, (url,), (CURRENT, NEXT))


def test_verify_accepts_the_current_key() -> None:
    assert verify(sign())["sub"] == URL


def test_verify_accepts_the_next_key_during_rotation() -> None:
    assert verify(sign(key=NEXT))["iss"] == "Upstash"


def test_verify_accepts_an_unpadded_body_claim() -> None:
    assert verify(sign(body=_body_claim(BODY).rstrip("=")))


@pytest.mark.parametrize(
    ("token_maker", "why"),
    [
        (lambda: None, "missing"),
        (lambda: "", "missing"),
        (lambda: "not-a-jwt", "did not verify"),
        (lambda: sign(key="sig_someone_else_entirely_0000000"), "did not verify"),
        (lambda: sign(url="https://composite.example.run.app?request=other"), "another URL"),
        (lambda: sign(url=URL.replace("https", "http")), "another URL"),
        (lambda: sign(signed_body=b'{"status":500}'), "body does not match"),
        (lambda: sign(iss="Mallory"), "did not verify"),
        (lambda: sign(iss=None), "did not verify"),
        (lambda: sign(exp=int(time.time()) - 3600), "did not verify"),
        (lambda: sign(nbf=int(time.time()) + 3600), "did not verify"),
        (lambda: sign(body=None), "did not verify"),
        (
            lambda: jwt.encode({"iss": "Upstash", "sub": URL}, CURRENT * 2, algorithm="HS512"),
            "did not verify",
        ),
    ],
)
def test_verify_refuses(token_maker: Any, why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(token_maker())


def test_verify_refuses_an_unsigned_token() -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = (
        base64.urlsafe_b64encode(
            json.dumps(
                {"iss": "Upstash", "sub": URL, "exp": 2**40, "nbf": 0, "body": _body_claim(BODY)}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(SignatureError):
        verify(f"{header}.{payload}.")


def test_verify_tolerates_small_clock_skew() -> None:
    assert verify(sign(exp=int(time.time()) - 30, nbf=int(time.time()) + 30))


def test_parse_callback_reads_a_first_attempt_with_zero_fields_omitted() -> None:
    raw = json.dumps(
        {
            "status": 200,
            "body": base64.b64encode(b'{"data":[]}').decode(),
            "sourceMessageId": "msg_1",
            "maxRetries": 2,
            "createdAt": 1767225600000,
        }
    ).encode()
    callback = parse_callback(raw)
    assert callback.succeeded
    assert callback.retried == 0
    assert callback.body == b'{"data":[]}'
    assert callback.source_message_id == "msg_1"
    assert not callback.is_final  # 0 of 2 retries used; but success needs no retry anyway


@pytest.mark.parametrize(
    ("fields", "final"),
    [
        ({"status": 500, "maxRetries": 2}, False),
        ({"status": 500, "retried": 1, "maxRetries": 2}, False),
        ({"status": 500, "retried": 2, "maxRetries": 2}, True),
        ({"status": 500}, True),  # no retries configured: the first failure is the last
        ({"status": 429, "retried": 0, "maxRetries": 3, "dlqId": "1725323658779-0"}, True),
        ({"maxRetries": 3}, False),  # timed out: no status at all
    ],
)
def test_parse_callback_knows_when_the_failure_is_final(
    fields: dict[str, Any], final: bool
) -> None:
    callback = parse_callback(json.dumps(fields).encode())
    assert not callback.succeeded
    assert callback.is_final is final


def test_parse_callback_keeps_going_when_the_body_was_truncated() -> None:
    callback = parse_callback(
        json.dumps({"status": 200, "body": "eyJkYXRhIjpbeyJiNjRf"[:-3]}).encode()
    )
    assert callback.succeeded
    assert callback.body == b""


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'{"status": "200"}', b"\xff\xfe"])
def test_parse_callback_rejects_malformed_bodies(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_callback(raw)


# --- which request a callback is for, proven by signed content ------------------------------

REQUEST_ID = "5f0c1a52-8a55-4a8e-9d2c-1f1e0b7c9a11"
OTHER_ID = "0b7c9a11-8a55-4a8e-9d2c-5f0c1a521f1e"


def _callback(source_header: dict[str, list[str]] | None = None, **fields: Any) -> QStashCallback:
    payload: dict[str, Any] = {"status": 200, **fields}
    if source_header is not None:
        payload["sourceHeader"] = source_header
    return parse_callback(json.dumps(payload).encode())


def test_a_signature_without_the_query_is_accepted_when_that_form_is_allowed() -> None:
    bare = URL.split("?")[0]
    claims = verify_qstash_signature(sign(url=bare), BODY, (URL, bare), (CURRENT, NEXT))
    assert claims["sub"] == bare


def test_the_signed_request_id_is_the_one_taken() -> None:
    callback = _callback({"Picture-Line-Request": [REQUEST_ID]})
    assert bound_request_id(REQUEST_ID, callback, query_signed=False) == REQUEST_ID
    assert bound_request_id(None, callback, query_signed=False) == REQUEST_ID


def test_a_url_naming_another_request_than_the_signed_one_is_refused() -> None:
    callback = _callback({"Picture-Line-Request": [REQUEST_ID]})
    for query_signed in (True, False):
        with pytest.raises(SignatureError, match="differs"):
            bound_request_id(OTHER_ID, callback, query_signed=query_signed)


def test_without_a_signed_request_id_only_a_signed_query_counts() -> None:
    callback = _callback()
    assert bound_request_id(REQUEST_ID, callback, query_signed=True) == REQUEST_ID
    with pytest.raises(SignatureError, match="not signed"):
        bound_request_id(REQUEST_ID, callback, query_signed=False)


def test_a_signed_request_id_that_is_not_a_uuid_is_unusable() -> None:
    callback = _callback({"Picture-Line-Request": ["../../etc"]})
    with pytest.raises(BadRequest):
        bound_request_id(None, callback, query_signed=False)


def test_only_the_sweep_body_starts_a_sweep() -> None:
    assert is_sweep_body(b'{"picture_line": "sweep"}')
    assert not is_sweep_body(b'{"picture_line": "sweep", "x": 1}')
    assert not is_sweep_body(b"")
    assert not is_sweep_body(BODY)


def test_the_model_asked_for_comes_from_the_signed_source_body() -> None:
    source = base64.b64encode(b'{"model":"gpt-image-2.6-flare","prompt":"a fox"}').decode()
    assert _callback(sourceBody=source).requested_model == "gpt-image-2.6-flare"
    assert _callback(sourceBody="bm90IGpzb24=").requested_model is None


@pytest.mark.parametrize(
    ("fields", "truncated"),
    [
        # Cut raw, before base64: exactly the plan's limit arrived.
        ({"body": base64.b64encode(b"x" * 1_000_000).decode()}, True),
        # The provider said how long its answer was, and less arrived.
        (
            {"body": base64.b64encode(b"x" * 500).decode(), "header": {"Content-Length": ["900"]}},
            True,
        ),
        # Cut after base64: the text itself is at the limit (and no longer decodes).
        ({"body": "A" * 999_999}, True),
        # Short and merely broken: not the plan's doing.
        ({"body": base64.b64encode(b"{broken").decode()}, False),
        (
            {"body": base64.b64encode(b"x" * 500).decode(), "header": {"Content-Length": ["500"]}},
            False,
        ),
    ],
)
def test_a_callback_cut_at_the_plan_limit_is_recognised(
    fields: dict[str, Any], truncated: bool
) -> None:
    assert _callback(**fields).looks_truncated(1_000_000) is truncated


@pytest.mark.parametrize("huge", ["9" * 5000, 2**80, -5, "12abc", 1.5])
def test_absurd_counts_read_as_zero_and_never_raise(huge: Any) -> None:
    callback = parse_callback(
        json.dumps({"status": 500, "retried": huge, "maxRetries": huge, "createdAt": huge}).encode()
    )
    assert (callback.retried, callback.max_retries, callback.created_at_ms) == (0, 0, None)


def test_a_json_number_of_5000_digits_is_a_bad_request_not_a_crash() -> None:
    with pytest.raises(BadRequest):
        parse_callback(b'{"status": 500, "retried": ' + b"9" * 5000 + b"}")


def test_the_size_asked_for_comes_from_the_signed_source_body() -> None:
    source = base64.b64encode(b'{"model":"gpt-image-2.6-flare","size":"3840x2160"}').decode()
    assert _callback(sourceBody=source).requested_size == (3840, 2160)
    auto = base64.b64encode(b'{"size":"auto"}').decode()
    assert _callback(sourceBody=auto).requested_size is None
    assert _callback().requested_size is None


def test_a_provider_content_length_of_5000_digits_is_no_crash() -> None:
    callback = _callback(body="e30=", header={"Content-Length": ["9" * 5000]})
    assert callback.looks_truncated(1_000_000) is False
