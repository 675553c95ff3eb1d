"""The OpenAI Images/Moderations stand-in, over plain HTTP and through the official SDK."""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import flask
import pytest
import requests
from PIL import Image, ImageDraw, UnidentifiedImageError

from devstack.openai_images import (
    DEFAULT_IMAGE_FETCH_TIMEOUT_S,
    DEV_API_KEY,
    MAX_IMAGE_URL_BYTES,
    MAX_INPUT_IMAGES,
    MAX_MASK_BYTES,
    MODERATION_CATEGORIES,
    OpenAIConfig,
    create_app,
    input_image_tokens,
)
from devstack.picture_drawing import draw_edit, draw_picture, encode_picture
from devstack.serving import RunningServer, serve_in_thread

MODEL = "gpt-image-2.6-flare"
AUTH = {"Authorization": f"Bearer {DEV_API_KEY}"}

# The vendor facts these tests hold the stand-in to (see the sources in openai_images.py).
CURRENT_IMAGE_MODELS = {
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
}
MODERATION_MODELS = {
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
}
# id -> (shutdown date, text the 404 recommends instead)
RETIRED_MODELS = {
    "gpt-image-1.5": ("2026-12-01", "gpt-image-2.6-sunburst or gpt-image-2.6-flare"),
    "gpt-image-1.5-2025-12-16": ("2026-12-01", "gpt-image-2.6-sunburst or gpt-image-2.6-flare"),
    "gpt-image-1-mini": ("2026-12-01", "gpt-image-2.6-sunburst or gpt-image-2.6-flare"),
    "chatgpt-image-latest": ("2026-12-01", "gpt-image-2.6-sunburst or gpt-image-2.6-flare"),
    "gpt-image-1": ("2026-10-23", "gpt-image-2.5-sunburst or gpt-image-2.5-flare"),
    "dall-e-3": ("2026-05-12", "a GPT image model"),
    "dall-e-2": ("2026-05-12", "a GPT image model"),
}


# One server per module (stopping one costs ~0.5 s); every test starts from a reset state.
@pytest.fixture(scope="module")
def config() -> OpenAIConfig:
    return OpenAIConfig()


@pytest.fixture(scope="module")
def server(config: OpenAIConfig) -> Iterator[RunningServer]:
    running = serve_in_thread(create_app(config))
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _clean(server: RunningServer, config: OpenAIConfig) -> Iterator[None]:
    requests.post(f"{server.url}/__dev/reset")
    yield
    config.latency_s = 0.0
    config.today = None
    config.shutdown_dates = {}
    config.image_fetch_timeout_s = DEFAULT_IMAGE_FETCH_TIMEOUT_S


def generate(server: RunningServer, timeout: float = 10, **body: Any) -> requests.Response:
    body = {"model": MODEL, "prompt": "a red bicycle at dawn", **body}
    url = f"{server.url}/v1/images/generations"
    return requests.post(url, json=body, headers=AUTH, timeout=timeout)


def add_fault(server: RunningServer, **fault: Any) -> dict[str, Any]:
    resp = requests.post(f"{server.url}/__dev/faults", json=fault)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def decode(resp: requests.Response, index: int = 0) -> bytes:
    return base64.b64decode(resp.json()["data"][index]["b64_json"], validate=True)


def error_of(resp: requests.Response) -> dict[str, Any]:
    err = resp.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


# ---- success --------------------------------------------------------------------------------


def test_success_shape(server):
    resp = generate(
        server, size="1024x1024", quality="low", output_format="jpeg", output_compression=80
    )
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {
        "created",
        "data",
        "background",
        "output_format",
        "quality",
        "size",
        "usage",
    }
    assert abs(body["created"] - time.time()) < 60
    assert body["data"] == [{"b64_json": body["data"][0]["b64_json"]}]  # no url/revised_prompt
    assert (body["background"], body["output_format"]) == ("opaque", "jpeg")
    assert (body["quality"], body["size"]) == ("low", "1024x1024")
    usage = body["usage"]
    assert usage["output_tokens"] == usage["output_tokens_details"]["image_tokens"] == 272
    assert usage["input_tokens"] == usage["input_tokens_details"]["text_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert resp.headers["x-request-id"].startswith("req_")
    assert resp.headers["x-ratelimit-limit-requests"] == "50"
    assert resp.headers["x-ratelimit-remaining-requests"] == "49"
    assert resp.headers["x-ratelimit-reset-requests"].endswith("s")


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536"])
def test_jpeg_of_requested_size(server, size):
    resp = generate(server, size=size, quality="low", output_format="jpeg", output_compression=80)
    data = decode(resp)
    assert data[:3] == b"\xff\xd8\xff"
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        assert f"{img.width}x{img.height}" == size
    assert 60_000 < len(data) < 400_000  # realistic for a photo at quality 80


def test_same_prompt_same_bytes_different_prompt_different(server):
    first = generate(server, output_format="jpeg", output_compression=80)
    again = generate(server, output_format="jpeg", output_compression=80)
    other = generate(server, prompt="a blue kite", output_format="jpeg", output_compression=80)
    assert decode(first) == decode(again)
    assert decode(first) != decode(other)


def test_png_by_default_and_auto_values(server):
    resp = generate(server)
    body = resp.json()
    assert (body["output_format"], body["quality"], body["size"]) == ("png", "medium", "1024x1024")
    assert body["usage"]["output_tokens"] == 1056
    data = decode(resp)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as img:
        assert (img.size, img.mode) == ((1024, 1024), "RGB")


def test_n_images_differ_and_tokens_scale(server):
    resp = generate(server, n=2, quality="high", size="1536x1024", output_format="webp")
    body = resp.json()
    assert len(body["data"]) == 2
    assert decode(resp, 0) != decode(resp, 1)
    assert body["usage"]["output_tokens"] == 2 * 6240
    with Image.open(io.BytesIO(decode(resp, 1))) as img:
        assert (img.format, img.size) == ("WEBP", (1536, 1024))


def test_transparent_background_has_alpha(server):
    resp = generate(server, background="transparent")
    assert resp.json()["background"] == "transparent"
    with Image.open(io.BytesIO(decode(resp))) as img:
        assert img.mode == "RGBA"
        low, high = img.getchannel("A").getextrema()
        assert (low, high) == (0, 255)


def test_safety_identifier_is_echoed(server):
    body = generate(server, safety_identifier="hash-of-phone", output_format="jpeg").json()
    assert body["safety_identifier"] == "hash-of-phone"


def test_draw_picture_is_deterministic_and_sized():
    a = draw_picture("a lighthouse", 1536, 1024)
    assert a.size == (1536, 1024)
    assert a.mode == "RGB"
    assert a.tobytes() == draw_picture("a lighthouse", 1536, 1024).tobytes()
    assert a.tobytes() != draw_picture("a lighthouse!", 1536, 1024).tobytes()
    # Even a 32,000-character prompt draws (the caption is cut short with an ellipsis).
    assert draw_picture("word " * 6400, 1024, 1024).size == (1024, 1024)
    assert len(encode_picture(a, "jpeg", 80)) > 50_000


def test_latency_is_simulated(server, config):
    config.latency_s = 0.3
    started = time.monotonic()
    assert generate(server, output_format="jpeg").status_code == 200
    assert time.monotonic() - started >= 0.3


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "code", "param"),
    [
        ({"response_format": "b64_json"}, 400, "unknown_parameter", "response_format"),
        ({"style": "vivid"}, 400, "unknown_parameter", "style"),
        ({"colour": "red"}, 400, "unknown_parameter", "colour"),
        ({"size": "512x512"}, 400, "invalid_value", "size"),  # [UNCONFIRMED] pixel floor
        ({"size": 1024}, 400, "invalid_type", "size"),
        ({"model": "dall-e-2"}, 404, "model_not_found", "model"),
        ({"model": "dall-e-3"}, 404, "model_not_found", "model"),
        ({"model": "gpt-image-1"}, 404, "model_not_found", "model"),
        ({"model": "gpt-image-1.5"}, 404, "model_not_found", "model"),
        ({"model": "gpt-image-9"}, 404, "model_not_found", "model"),
        ({"model": "omni-moderation-latest"}, 404, "model_not_found", "model"),
        ({"model": 15}, 400, "invalid_type", "model"),
        ({"model": None}, 400, "missing_required_parameter", "model"),
        ({"prompt": None}, 400, "missing_required_parameter", "prompt"),
        ({"prompt": ""}, 400, "invalid_value", "prompt"),
        ({"prompt": "x" * 32_001}, 400, "string_above_max_length", "prompt"),
        ({"prompt": 5}, 400, "invalid_type", "prompt"),
        ({"n": 0}, 400, "invalid_value", "n"),
        ({"n": 11}, 400, "invalid_value", "n"),
        ({"n": "2"}, 400, "invalid_type", "n"),
        ({"quality": "hd"}, 400, "invalid_value", "quality"),
        ({"quality": "xhigh", "model": "gpt-image-2"}, 400, "invalid_value", "quality"),
        ({"output_format": "bmp"}, 400, "invalid_value", "output_format"),
        ({"output_format": "gif"}, 400, "invalid_value", "output_format"),
        ({"output_compression": 101, "output_format": "jpeg"}, 400, "invalid_value", None),
        ({"output_compression": 80}, 400, "invalid_value", "output_compression"),  # png
        ({"background": "transparent", "output_format": "jpeg"}, 400, "invalid_value", None),
        ({"moderation": "off"}, 400, "invalid_value", "moderation"),
        ({"stream": True}, 400, "invalid_value", "stream"),
    ],
)
def test_validation_errors(server, changes, status, code, param):
    body = {"model": MODEL, "prompt": "a cat", **changes}
    body = {k: v for k, v in body.items() if v is not None}
    resp = requests.post(f"{server.url}/v1/images/generations", json=body, headers=AUTH)
    assert resp.status_code == status
    err = error_of(resp)
    assert err["code"] == code
    assert err["param"] == (param or next(iter(changes)))
    assert resp.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("model", "quality"),
    [
        ("gpt-image-2.5-sunburst", "xhigh"),
        ("gpt-image-2.5-flare-2026-09-08", "max"),
        ("gpt-image-2.6-sunburst", "max"),  # [UNCONFIRMED] for the 2.6 models
        ("gpt-image-2.6-flare", "xhigh"),
    ],
)
def test_extra_qualities_on_2_5_and_2_6_models(server, model, quality):
    resp = generate(server, model=model, quality=quality, output_format="jpeg")
    assert resp.status_code == 200
    body = resp.json()
    assert body["quality"] == quality
    assert body["usage"]["output_tokens"] == {"xhigh": 8320, "max": 16640}[quality]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": DEV_API_KEY}]
)
def test_bad_or_missing_key_is_401(server, headers):
    body = {"model": MODEL, "prompt": "a cat"}
    resp = requests.post(f"{server.url}/v1/images/generations", json=body, headers=headers)
    assert resp.status_code == 401
    err = error_of(resp)
    assert (err["code"], err["type"]) == ("invalid_api_key", "invalid_request_error")
    assert "sk-wrong" not in resp.text


def test_non_json_body_is_400(server):
    resp = requests.post(
        f"{server.url}/v1/images/generations",
        data="prompt=a cat",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400
    assert error_of(resp)["type"] == "invalid_request_error"
    array = requests.post(f"{server.url}/v1/images/generations", json=["a cat"], headers=AUTH)
    assert array.status_code == 400


def test_unknown_route_has_openai_error_shape(server):
    resp = requests.post(f"{server.url}/v1/images/variations", headers=AUTH)
    assert resp.status_code == 404
    assert "Invalid URL" in error_of(resp)["message"]


# ---- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "type_", "code"),
    [
        ("429", 429, "requests", "rate_limit_exceeded"),
        ("insufficient_quota", 429, "insufficient_quota", "insufficient_quota"),
        ("500", 500, "server_error", "server_error"),
        ("503", 503, "server_error", "server_is_overloaded"),
        ("moderation_blocked", 400, "image_generation_user_error", "moderation_blocked"),
        ("billing", 400, "image_generation_user_error", "billing_hard_limit_reached"),
    ],
)
def test_error_faults_fire_once(server, kind, status, type_, code):
    add_fault(server, kind=kind)
    resp = generate(server, output_format="jpeg")
    assert resp.status_code == status
    err = error_of(resp)
    assert (err["type"], err["code"]) == (type_, code)
    if kind == "429":
        assert resp.headers["retry-after"] == "1"
        assert resp.headers["x-ratelimit-reset-requests"] == "1s"
    if kind == "moderation_blocked":
        assert "safety system" in err["message"]
        assert err["moderation_details"] == {
            "moderation_stage": "input",
            "categories": ["violence"],
        }
    assert generate(server, output_format="jpeg").status_code == 200  # times defaults to 1


def test_times_counts_down_and_minus_one_lasts_until_cleared(server):
    add_fault(server, kind="500", times=2)
    codes = [generate(server, output_format="jpeg").status_code for _ in range(3)]
    assert codes == [500, 500, 200]

    add_fault(server, kind="503", times=-1)
    assert [generate(server, n=1).status_code for _ in range(3)] == [503] * 3
    assert requests.get(f"{server.url}/__dev/faults").json()[0]["times"] == -1
    requests.delete(f"{server.url}/__dev/faults")
    assert requests.get(f"{server.url}/__dev/faults").json() == []
    assert generate(server, output_format="jpeg").status_code == 200


def test_faults_match_prompt_and_registration_order(server):
    add_fault(server, kind="billing", prompt_contains="dragon")
    add_fault(server, kind="500")
    add_fault(server, kind="503")
    listed = requests.get(f"{server.url}/__dev/faults").json()
    assert [f["kind"] for f in listed] == ["billing", "500", "503"]
    assert generate(server, prompt="a cat").status_code == 500  # billing skipped: no dragon
    assert generate(server, prompt="a dragon").status_code == 400  # billing matches first
    assert generate(server, prompt="a dragon").status_code == 503
    assert generate(server, prompt="a dragon", output_format="jpeg").status_code == 200


def test_timeout_fault_answers_late(server):
    add_fault(server, kind="timeout", delay_s=1.0)
    with pytest.raises(requests.ReadTimeout):
        generate(server, timeout=0.3)
    add_fault(server, kind="timeout", delay_s=0.3)
    started = time.monotonic()
    resp = generate(server, output_format="jpeg")
    assert resp.status_code == 200
    assert time.monotonic() - started >= 0.3
    assert resp.json()["data"][0]["b64_json"]


def test_garbage_fault_is_not_json(server):
    add_fault(server, kind="garbage")
    resp = generate(server)
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.text)


def test_bad_base64_fault(server):
    add_fault(server, kind="bad_base64")
    resp = generate(server)
    assert resp.status_code == 200
    b64 = resp.json()["data"][0]["b64_json"]
    with pytest.raises(binascii.Error):
        base64.b64decode(b64)  # lenient mode drops the junk characters and still fails
    with pytest.raises(binascii.Error):
        base64.b64decode(b64, validate=True)


def test_not_an_image_fault(server):
    add_fault(server, kind="not_an_image")
    data = decode(generate(server))
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    "fault", [{"kind": "teapot"}, {"kind": "500", "times": 0}, {"kind": "500", "times": "2"}]
)
def test_bad_fault_definitions_are_refused(server, fault):
    assert requests.post(f"{server.url}/__dev/faults", json=fault).status_code == 400


def test_flagged_prompt_is_blocked_by_the_images_endpoint(server):
    resp = generate(server, prompt="a gore scene")
    assert resp.status_code == 400
    err = error_of(resp)
    assert err["code"] == "moderation_blocked"
    assert err["moderation_details"]["categories"] == ["violence/graphic"]


# ---- request log and reset ------------------------------------------------------------------


def test_request_log_keeps_bodies_but_never_the_key(server):
    generate(server, output_format="jpeg", output_compression=80)
    add_fault(server, kind="429")
    generate(server, prompt="second")
    resp = requests.get(f"{server.url}/__dev/requests")
    log = resp.json()
    assert [(e["method"], e["path"], e["status"], e["fault"]) for e in log] == [
        ("POST", "/v1/images/generations", 200, None),
        ("POST", "/v1/images/generations", 429, "429"),
    ]
    assert log[0]["json"]["output_compression"] == 80
    assert log[1]["json"]["prompt"] == "second"
    assert "Content-Type" in log[0]["headers"]
    assert all(k.lower() != "authorization" for e in log for k in e["headers"])
    assert DEV_API_KEY not in resp.text
    assert isinstance(log[0]["time"], float)


def test_reset_clears_faults_and_log(server):
    add_fault(server, kind="500", times=-1)
    generate(server)
    requests.post(f"{server.url}/__dev/reset")
    assert requests.get(f"{server.url}/__dev/faults").json() == []
    assert requests.get(f"{server.url}/__dev/requests").json() == []


# ---- moderations ----------------------------------------------------------------------------


def moderate(server: RunningServer, **body: Any) -> requests.Response:
    return requests.post(f"{server.url}/v1/moderations", json=body, headers=AUTH)


def test_moderation_unflagged_full_shape(server):
    resp = moderate(server, model="omni-moderation-latest", input="a watercolour of a fox")
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"].startswith("modr-")
    assert body["model"] == "omni-moderation-2024-09-26"
    (result,) = body["results"]
    assert result["flagged"] is False
    for key in ("categories", "category_scores", "category_applied_input_types"):
        assert list(result[key]) == list(MODERATION_CATEGORIES)
    assert not any(result["categories"].values())
    assert all(0 <= s < 0.01 for s in result["category_scores"].values())
    assert all(v == ["text"] for v in result["category_applied_input_types"].values())


def test_moderation_flagged_and_list_input(server):
    resp = moderate(server, input=["a MURDER mystery poster", "a sunny meadow"])
    flagged, clean = resp.json()["results"]
    assert flagged["flagged"] is True
    assert flagged["categories"]["violence"] is True
    assert flagged["category_scores"]["violence"] > 0.9
    assert clean["flagged"] is False
    again = moderate(server, input="a MURDER mystery poster").json()["results"][0]
    assert again["category_scores"] == flagged["category_scores"]  # deterministic


def test_moderation_subcategory_and_multimodal_input(server):
    parts = [
        {"type": "text", "text": "so much gore"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    (result,) = moderate(server, input=parts).json()["results"]
    assert result["categories"]["violence/graphic"] is True
    assert result["categories"]["violence"] is True  # the parent category is flagged too
    assert result["category_applied_input_types"]["sexual"] == ["text", "image"]
    assert result["category_applied_input_types"]["hate"] == ["text"]


def test_moderation_errors(server):
    assert moderate(server, model="omni-moderation-latest").status_code == 400
    assert moderate(server, model=MODEL, input="x").status_code == 404
    no_key = requests.post(f"{server.url}/v1/moderations", json={"input": "x"})
    assert no_key.status_code == 401


def test_flagged_words_are_configurable():
    cfg = OpenAIConfig(flagged_words=["broccoli"])
    client = create_app(cfg).test_client()
    veg = client.post("/v1/moderations", json={"input": "Broccoli soup"}, headers=AUTH).get_json()
    assert veg["results"][0]["categories"]["violence"] is True
    crime = client.post("/v1/moderations", json={"input": "a murder"}, headers=AUTH).get_json()
    assert crime["results"][0]["flagged"] is False


# ---- the official SDK -----------------------------------------------------------------------


@pytest.fixture
def sdk(server: RunningServer) -> Any:
    openai = pytest.importorskip("openai")
    # max_retries=0: the SDK would otherwise retry 429/5xx faults on its own.
    return openai.OpenAI(api_key=DEV_API_KEY, base_url=f"{server.url}/v1", max_retries=0)


@pytest.mark.parametrize("size", ["1024x1024", "1536x1024", "1024x1536"])
def test_sdk_generate(sdk, size):
    result = sdk.images.generate(
        model=MODEL,
        prompt="a lighthouse in a storm",
        size=size,
        quality="low",
        output_format="jpeg",
        output_compression=80,
    )
    assert (result.size, result.quality, result.output_format) == (size, "low", "jpeg")
    assert result.data[0].url is None
    assert result.data[0].revised_prompt is None
    expected_tokens = 272 if size == "1024x1024" else 408
    assert result.usage.output_tokens_details.image_tokens == expected_tokens
    with Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))) as img:
        assert (img.format, f"{img.width}x{img.height}") == ("JPEG", size)


def test_sdk_request_id_and_same_bytes(sdk):
    raw = sdk.images.with_raw_response.generate(
        model=MODEL, prompt="same", quality="low", output_format="jpeg", output_compression=80
    )
    assert raw.request_id.startswith("req_")
    first = raw.parse().data[0].b64_json
    again = sdk.images.generate(
        model=MODEL, prompt="same", quality="low", output_format="jpeg", output_compression=80
    )
    assert again.data[0].b64_json == first


def test_sdk_errors(sdk, server):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.images.generate(model=MODEL, prompt="x", size="512x512")
    assert (bad.value.code, bad.value.param) == ("invalid_value", "size")
    with pytest.raises(openai.BadRequestError) as legacy:
        sdk.images.generate(model=MODEL, prompt="x", response_format="b64_json")
    assert legacy.value.code == "unknown_parameter"
    with pytest.raises(openai.NotFoundError) as retired:
        sdk.images.generate(model="dall-e-3", prompt="x")
    assert retired.value.code == "model_not_found"
    wrong_key = openai.OpenAI(api_key="sk-wrong", base_url=f"{server.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong_key.images.generate(model=MODEL, prompt="x")
    assert auth.value.code == "invalid_api_key"


def test_sdk_faults(sdk, server):
    openai = pytest.importorskip("openai")
    add_fault(server, kind="429")
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.images.generate(model=MODEL, prompt="x")
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1"

    add_fault(server, kind="moderation_blocked")
    with pytest.raises(openai.BadRequestError) as blocked:
        sdk.images.generate(model=MODEL, prompt="x")
    assert blocked.value.code == "moderation_blocked"
    assert blocked.value.body["moderation_details"]["moderation_stage"] == "input"

    add_fault(server, kind="timeout", delay_s=1.0)
    with pytest.raises(openai.APITimeoutError):
        sdk.images.generate(model=MODEL, prompt="x", timeout=0.3)

    # A non-JSON 200 is not an error to the SDK: it hands back the text instead of a model.
    add_fault(server, kind="garbage")
    result = sdk.images.generate(model=MODEL, prompt="x")
    assert isinstance(result, str)


def test_sdk_retries_a_429_by_itself(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key=DEV_API_KEY, base_url=f"{server.url}/v1", max_retries=1)
    add_fault(server, kind="429", retry_after_s=0)
    result = client.images.generate(model=MODEL, prompt="x", output_format="jpeg")
    assert result.data[0].b64_json
    statuses = [e["status"] for e in requests.get(f"{server.url}/__dev/requests").json()]
    assert statuses == [429, 200]


def test_sdk_moderation(sdk):
    flagged = sdk.moderations.create(model="omni-moderation-latest", input="a gory murder")
    assert flagged.results[0].flagged is True
    assert flagged.results[0].categories.violence is True
    clean = sdk.moderations.create(model="omni-moderation-latest", input="a kitten")
    assert clean.results[0].flagged is False
    assert clean.results[0].category_scores.harassment_threatening < 0.01


# ---- models and sizes, through the official SDK ---------------------------------------------


def assert_refused(exc: Any, code: str, param: str) -> None:
    """An APIStatusError carrying OpenAI's envelope for a request error."""
    assert (exc.code, exc.param) == (code, param)
    assert exc.body["type"] == "invalid_request_error"


def set_model(server: RunningServer, status: int = 200, **row: Any) -> dict[str, Any]:
    resp = requests.post(f"{server.url}/__dev/models", json=row)
    assert resp.status_code == status, resp.text
    return resp.json()  # type: ignore[no-any-return]


def dev_models(server: RunningServer) -> dict[str, Any]:
    return requests.get(f"{server.url}/__dev/models").json()  # type: ignore[no-any-return]


def jpeg(sdk: Any, model: str = MODEL, **params: Any) -> Any:
    params = {"prompt": "a lighthouse", "quality": "low", "output_format": "jpeg", **params}
    return sdk.images.generate(model=model, **params)


def test_sdk_lists_current_models_with_shutdown_dates(sdk, server):
    models = {m.id: m for m in sdk.models.list()}
    assert set(models) == CURRENT_IMAGE_MODELS | MODERATION_MODELS
    for model in models.values():
        assert (model.object, model.owned_by, model.shutdown_date) == ("model", "system", None)
        assert 1_600_000_000 < model.created < time.time()
    # The wire shape the SDK parses leniently: exactly the Model fields, in a list object.
    raw = requests.get(f"{server.url}/v1/models", headers=AUTH).json()
    assert set(raw) == {"object", "data"}
    assert raw["object"] == "list"
    assert all(
        list(m) == ["id", "object", "created", "owned_by", "shutdown_date"] for m in raw["data"]
    )


def test_sdk_retrieves_a_current_model(sdk):
    model = sdk.models.retrieve(MODEL)
    assert (model.id, model.object, model.shutdown_date) == (MODEL, "model", None)
    assert sdk.models.retrieve("omni-moderation-latest").id == "omni-moderation-latest"


@pytest.mark.parametrize("model", sorted(RETIRED_MODELS))
def test_sdk_retired_models_are_not_found(sdk, model):
    openai = pytest.importorskip("openai")
    date, replacement = RETIRED_MODELS[model]
    with pytest.raises(openai.NotFoundError) as retrieved:
        sdk.models.retrieve(model)
    assert_refused(retrieved.value, "model_not_found", "model")
    assert date in retrieved.value.message
    assert f"use {replacement} instead" in retrieved.value.message
    with pytest.raises(openai.NotFoundError) as generated:
        sdk.images.generate(model=model, prompt="x", size="1024x1024")
    assert_refused(generated.value, "model_not_found", "model")
    assert date in generated.value.message


def test_sdk_unknown_model_is_not_found(sdk):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.models.retrieve("gpt-image-9")
    assert_refused(unknown.value, "model_not_found", "model")
    assert "does not exist" in unknown.value.message


def test_models_endpoints_need_the_key(server):
    openai = pytest.importorskip("openai")
    wrong_key = openai.OpenAI(api_key="sk-wrong", base_url=f"{server.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as listed:
        wrong_key.models.list()
    assert listed.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong_key.models.retrieve(MODEL)
    assert requests.get(f"{server.url}/v1/models").status_code == 401


def test_announced_shutdown_is_listed_and_still_generates(sdk, config):
    openai = pytest.importorskip("openai")
    config.today = datetime.date(2026, 11, 30)  # the last day gpt-image-1.5 answers
    listed = {m.id: m.shutdown_date for m in sdk.models.list()}
    assert listed["gpt-image-1.5"] == listed["chatgpt-image-latest"] == "2026-12-01"
    assert "gpt-image-1" not in listed  # shut down on 2026-10-23
    assert sdk.models.retrieve("gpt-image-1.5").shutdown_date == "2026-12-01"
    result = jpeg(sdk, "gpt-image-1.5", size="1024x1536")
    assert result.size == "1024x1536"
    # The gpt-image-1 family makes only the classic sizes.
    with pytest.raises(openai.BadRequestError) as flexible:
        jpeg(sdk, "gpt-image-1.5", size="1536x864")
    assert_refused(flexible.value, "invalid_value", "size")

    config.today = datetime.date(2026, 12, 1)  # the shutdown date itself: gone
    assert "gpt-image-1.5" not in {m.id for m in sdk.models.list()}
    with pytest.raises(openai.NotFoundError) as gone:
        jpeg(sdk, "gpt-image-1.5", size="1024x1536")
    assert_refused(gone.value, "model_not_found", "model")


def test_default_model_retired_mid_run(sdk, server):
    openai = pytest.importorskip("openai")
    assert jpeg(sdk).data[0].b64_json
    before = datetime.datetime.now(datetime.UTC).date().isoformat()
    today = dev_models(server)["today"]  # the real date (UTC) unless config.today is set
    assert today in {before, datetime.datetime.now(datetime.UTC).date().isoformat()}
    row = set_model(server, id=MODEL, shutdown_date=today, replacement="gpt-image-2.6-sunburst")
    assert (row["shutdown_date"], row["served"], row["flexible_sizes"]) == (today, False, True)

    with pytest.raises(openai.NotFoundError) as retired:
        jpeg(sdk)
    assert_refused(retired.value, "model_not_found", "model")
    assert f"shut down on {today}; use gpt-image-2.6-sunburst" in retired.value.message
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve(MODEL)
    assert MODEL not in {m.id for m in sdk.models.list()}
    everything = {m["id"]: m for m in dev_models(server)["data"]}
    assert everything[MODEL]["served"] is False
    assert everything["gpt-image-1.5"]["served"] is False  # retired rows stay in the catalogue

    requests.post(f"{server.url}/__dev/reset")  # back to the built-in catalogue
    assert jpeg(sdk).data[0].b64_json
    assert sdk.models.retrieve(MODEL).shutdown_date is None


def test_future_shutdown_via_dev_models(sdk, server, config):
    openai = pytest.importorskip("openai")
    set_model(server, id="gpt-image-2", shutdown_date="2099-01-01", replacement=MODEL)
    assert sdk.models.retrieve("gpt-image-2").shutdown_date == "2099-01-01"
    assert jpeg(sdk, "gpt-image-2").data[0].b64_json  # announced, not yet shut down
    config.today = datetime.date(2099, 1, 1)
    with pytest.raises(openai.NotFoundError) as later:
        jpeg(sdk, "gpt-image-2")
    assert_refused(later.value, "model_not_found", "model")
    assert f"2099-01-01; use {MODEL} instead" in later.value.message
    assert jpeg(sdk).data[0].b64_json  # the other models are untouched


def test_config_shutdown_dates_and_dev_models_win_over_them(sdk, server, config):
    openai = pytest.importorskip("openai")
    config.shutdown_dates = {"gpt-image-1.5": None, MODEL: datetime.date(2026, 6, 1)}
    assert sdk.models.retrieve("gpt-image-1.5").shutdown_date is None
    assert jpeg(sdk, "gpt-image-1.5", size="1024x1024").size == "1024x1024"
    with pytest.raises(openai.NotFoundError) as moved:
        jpeg(sdk)
    assert_refused(moved.value, "model_not_found", "model")
    assert "2026-06-01" in moved.value.message
    set_model(server, id=MODEL, shutdown_date=None)
    assert jpeg(sdk).data[0].b64_json


def test_dev_added_classic_only_model(sdk, server):
    # No current model is classic-only, so the rule is shown on one added for the test.
    openai = pytest.importorskip("openai")
    row = set_model(server, 201, id="gpt-image-classic", shutdown_date=None, flexible_sizes=False)
    assert (row["kind"], row["flexible_sizes"], row["extra_qualities"]) == ("image", False, False)
    assert sdk.models.retrieve("gpt-image-classic").shutdown_date is None
    assert jpeg(sdk, "gpt-image-classic", size="1536x1024").size == "1536x1024"
    for size in ("1536x864", "1792x1024"):
        with pytest.raises(openai.BadRequestError) as refused:
            jpeg(sdk, "gpt-image-classic", size=size)
        assert_refused(refused.value, "invalid_value", "size")
        assert "'1024x1536'" in refused.value.message  # it names the sizes that do work
    with pytest.raises(openai.BadRequestError) as extra:
        jpeg(sdk, "gpt-image-classic", size="1024x1024", quality="xhigh")
    assert_refused(extra.value, "invalid_value", "quality")
    # An added model without flags behaves like gpt-image-2 and later: flexible sizes.
    set_model(server, 201, id="gpt-image-next", shutdown_date=None)
    assert jpeg(sdk, "gpt-image-next", size="1536x864").size == "1536x864"


@pytest.mark.parametrize(
    "row",
    [
        {"shutdown_date": None},
        {"id": "gpt-image-x"},  # the date is required, so a typo cannot un-retire a model
        {"id": "gpt-image-x", "shutdown": None},
        {"id": "gpt-image-x", "shutdown_date": "2026-13-01"},
        {"id": "gpt-image-x", "shutdown_date": "20261201"},
        {"id": "gpt-image-x", "shutdown_date": 20261201},
        {"id": "gpt-image-x", "shutdown_date": None, "flexible_sizes": "no"},
        {"id": "gpt-image-x", "shutdown_date": None, "replacement": ""},
        {"id": "has space", "shutdown_date": None},
        {"id": "", "shutdown_date": None},
    ],
)
def test_bad_dev_model_rows_are_refused(server, row):
    resp = requests.post(f"{server.url}/__dev/models", json=row)
    assert resp.status_code == 400
    assert resp.json()["error"]
    ids = {m["id"] for m in dev_models(server)["data"]}
    assert "gpt-image-x" not in ids
    assert "has space" not in ids


def test_retired_moderation_model_is_not_found(sdk, server):
    openai = pytest.importorskip("openai")
    set_model(server, id="text-moderation-stable", shutdown_date="2026-01-01")
    with pytest.raises(openai.NotFoundError) as retired:
        sdk.moderations.create(model="text-moderation-stable", input="a kitten")
    assert_refused(retired.value, "model_not_found", "model")
    assert sdk.moderations.create(model="text-moderation-latest", input="a kitten").results
    with pytest.raises(openai.NotFoundError) as not_moderation:
        sdk.moderations.create(model=MODEL, input="a kitten")
    assert_refused(not_moderation.value, "model_not_found", "model")


@pytest.mark.parametrize(
    ("model", "size", "tokens"),
    [
        ("gpt-image-2.6-flare", "3840x2160", 2152),  # the largest: 7.9x the pixels of 1024²
        ("gpt-image-2.6-flare", "2160x3840", 2152),
        ("gpt-image-2.6-sunburst", "1536x864", 345),  # [UNCONFIRMED] 2.6: flexible sizes
        ("gpt-image-2", "2448x816", 519),  # exactly 3:1
        ("gpt-image-2.5-flare", "1024x640", 170),  # exactly the [UNCONFIRMED] pixel floor
    ],
)
def test_sdk_flexible_size_is_rendered_exactly(sdk, model, size, tokens):
    result = jpeg(sdk, model, size=size)
    assert result.size == size
    assert result.usage.output_tokens_details.image_tokens == tokens
    with Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))) as img:
        assert (img.format, f"{img.width}x{img.height}") == ("JPEG", size)


def test_bigger_pictures_cost_more(sdk):
    tokens = [
        jpeg(sdk, size=size).usage.output_tokens
        for size in ("1024x640", "1024x1024", "1536x1024", "2560x1440", "3840x2160")
    ]
    assert tokens == sorted(set(tokens))
    assert tokens[1:3] == [272, 408]  # the classic sizes keep the per-quality table


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        ("1000x1000", "multiples of 16"),
        ("1536x1000", "multiples of 16"),
        ("3840x640", "aspect ratio"),
        ("640x3840", "aspect ratio"),
        ("4096x2304", "too large"),
        ("2176x3840", "too large"),  # the short edge is over 2160
        ("3856x2160", "too large"),
        ("1008x640", "too small"),  # [UNCONFIRMED] pixel floor
        ("512x512", "too small"),
        ("0x1024", "WIDTHxHEIGHT"),
        ("1536X864", "WIDTHxHEIGHT"),
        ("1024x1024x3", "WIDTHxHEIGHT"),
        ("big", "WIDTHxHEIGHT"),
    ],
)
def test_sdk_refuses_sizes_the_model_cannot_make(sdk, size, reason):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError) as refused:
        jpeg(sdk, size=size)
    assert_refused(refused.value, "invalid_value", "size")
    assert reason in refused.value.message


def test_sdk_extra_quality_refused_on_gpt_image_2(sdk):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError) as refused:
        jpeg(sdk, "gpt-image-2", quality="max")
    assert_refused(refused.value, "invalid_value", "quality")


def test_largest_picture_is_drawn_photo_like():
    # Its draw time is a benchmark figure (make bench), not an assertion.
    img = draw_picture("a mountain lake at dawn", 3840, 2160)
    data = encode_picture(img, "jpeg", 80)
    assert img.size == (3840, 2160)
    assert len(data) > 500_000  # grain keeps it photo-like at 4K too


# ---- edits ----------------------------------------------------------------------------------
#
# Input pictures are four flat quadrants, so an edit of one is easy to tell from an edit of
# its mirror image or from a generated landscape once all three are shrunk to 8x8.

QUADRANT_COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (240, 220, 40)]
EDIT_PROMPT = "make it look like a watercolour"


def quadrants(
    colours: list[tuple[int, int, int]], size: tuple[int, int] = (640, 480)
) -> Image.Image:
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    w, h = size
    for i, colour in enumerate(colours):
        x, y = (i % 2) * (w // 2), (i // 2) * (h // 2)
        draw.rectangle((x, y, x + w // 2 - 1, y + h // 2 - 1), fill=colour)
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def gif_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "GIF")
    return buf.getvalue()


PICTURE_A = png_bytes(quadrants(QUADRANT_COLOURS))
PICTURE_B = png_bytes(quadrants(QUADRANT_COLOURS[::-1]))
SMALL = png_bytes(Image.new("RGB", (64, 64), (90, 90, 200)))
# Served by the `pictures` server for image_url: name -> (body, Content-Type).
SERVED: dict[str, tuple[bytes, str]] = {
    "a.png": (PICTURE_A, "image/png"),
    "b.png": (PICTURE_B, "image/png"),
    "notes.txt": (b"devstack: no picture here\n", "text/plain"),
    "a.gif": (gif_bytes(quadrants(QUADRANT_COLOURS)), "image/gif"),
    "huge.png": (b"\x89PNG\r\n\x1a\n" + bytes(MAX_IMAGE_URL_BYTES), "image/png"),
}


@pytest.fixture(scope="module")
def pictures() -> Iterator[str]:
    """A web server for image_url: SERVED by name, 404 otherwise, `slow.png` after a pause."""
    app = flask.Flask("pictures")

    @app.get("/<name>")
    def picture(name: str) -> flask.Response:
        if name == "slow.png":
            time.sleep(1.0)
            name = "a.png"
        if name not in SERVED:
            flask.abort(404)
        body, content_type = SERVED[name]
        return flask.Response(body, content_type=content_type)

    running = serve_in_thread(app)
    yield running.url
    running.stop()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def upload(data: bytes = PICTURE_A, name: str = "a.png", media_type: str = "image/png") -> Any:
    return (name, data, media_type)


def sdk_edit(sdk: Any, image: Any = None, **params: Any) -> Any:
    params = {"model": MODEL, "prompt": EDIT_PROMPT, "quality": "low", **params}
    return sdk.images.edit(image=upload() if image is None else image, **params)


def edit_json(server: RunningServer, *images: dict[str, Any], **body: Any) -> requests.Response:
    """POST a JSON edit; a keyword set to None leaves that field out."""
    full = {"model": MODEL, "prompt": EDIT_PROMPT, "images": list(images), "quality": "low", **body}
    full = {k: v for k, v in full.items() if v is not None}
    url = f"{server.url}/v1/images/edits"
    return requests.post(url, json=full, headers=AUTH, timeout=10)


def picture_of(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
    img.load()
    return img


def distance(a: Image.Image, b: Image.Image) -> float:
    """Mean difference per channel (0-255) of the two pictures shrunk to 8x8."""
    small_a, small_b = (
        img.convert("RGB").resize((8, 8), Image.Resampling.BOX).tobytes() for img in (a, b)
    )
    return sum(abs(x - y) for x, y in zip(small_a, small_b, strict=True)) / len(small_a)


def request_log(server: RunningServer) -> list[dict[str, Any]]:
    return requests.get(f"{server.url}/__dev/requests").json()  # type: ignore[no-any-return]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_sdk_edit_success_shape(sdk: Any) -> None:
    result = sdk_edit(sdk, size="1024x1024", output_format="jpeg", output_compression=80)
    assert set(result.model_dump(exclude_none=True)) == {
        "created",
        "data",
        "background",
        "output_format",
        "quality",
        "size",
        "usage",
    }
    assert abs(result.created - time.time()) < 60
    assert (result.size, result.quality, result.output_format) == ("1024x1024", "low", "jpeg")
    assert result.background == "opaque"
    assert (result.data[0].url, result.data[0].revised_prompt) == (None, None)
    usage = result.usage
    details = usage.input_tokens_details
    assert details.image_tokens == input_image_tokens(640, 480) > 0
    assert usage.input_tokens == details.text_tokens + details.image_tokens
    assert usage.output_tokens == usage.output_tokens_details.image_tokens == 272
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    with picture_of(result.data[0].b64_json) as img:
        assert (img.format, img.size) == ("JPEG", (1024, 1024))


def test_edit_is_visibly_derived_from_its_input(sdk: Any) -> None:
    a, b = quadrants(QUADRANT_COLOURS), quadrants(QUADRANT_COLOURS[::-1])
    edit_of_a = picture_of(sdk_edit(sdk, upload(PICTURE_A)).data[0].b64_json)
    edit_of_b = picture_of(sdk_edit(sdk, upload(PICTURE_B)).data[0].b64_json)
    generated = picture_of(sdk.images.generate(model=MODEL, prompt=EDIT_PROMPT).data[0].b64_json)
    assert distance(edit_of_a, a) < 45 < distance(edit_of_a, b)
    assert distance(edit_of_b, b) < 45 < distance(edit_of_b, a)
    assert distance(generated, a) > 2 * distance(edit_of_a, a)  # a new picture is not an edit


def test_edit_answer_is_draw_edit_of_the_input(sdk: Any) -> None:
    first = sdk_edit(sdk, size="1536x1024", output_format="png").data[0].b64_json
    again = sdk_edit(sdk, size="1536x1024", output_format="png").data[0].b64_json
    assert first == again
    expected = draw_edit([quadrants(QUADRANT_COLOURS)], EDIT_PROMPT, 1536, 1024)
    assert picture_of(first).tobytes() == expected.tobytes()
    other_prompt = sdk_edit(sdk, prompt="make it blue", output_format="png").data[0].b64_json
    assert other_prompt != first


@pytest.mark.parametrize(
    ("input_size", "size"),
    [((640, 480), "1536x1024"), ((480, 640), "1024x1536"), ((500, 500), "1024x1024")],
)
def test_edit_auto_size_follows_the_first_input(
    sdk: Any, input_size: tuple[int, int], size: str
) -> None:
    picture = png_bytes(quadrants(QUADRANT_COLOURS, input_size))
    result = sdk_edit(sdk, upload(picture), size="auto", output_format="jpeg")
    assert result.size == size
    with picture_of(result.data[0].b64_json) as img:
        assert f"{img.width}x{img.height}" == size


def test_edit_input_tokens_grow_with_the_input_pixels(sdk: Any) -> None:
    def image_tokens(image: Any) -> int:
        result = sdk_edit(sdk, image, size="1024x1024", output_format="jpeg")
        return int(result.usage.input_tokens_details.image_tokens)

    small = image_tokens(upload(SMALL))
    large = image_tokens(upload(png_bytes(quadrants(QUADRANT_COLOURS, (1024, 1536)))))
    both = image_tokens([upload(SMALL), upload(PICTURE_A)])
    assert 0 < small < large
    assert both == small + image_tokens(upload(PICTURE_A))


def test_edit_of_several_pictures_is_logged_with_digests(sdk: Any, server: RunningServer) -> None:
    result = sdk_edit(sdk, [upload(PICTURE_A), upload(SMALL, "small.png")], n=2)
    assert len(result.data) == 2
    assert result.data[0].b64_json != result.data[1].b64_json  # n pictures differ
    (entry,) = request_log(server)
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/v1/images/edits", 200)
    assert entry["json"] is None  # a multipart body is described, not kept
    assert entry["form"] == {"model": MODEL, "n": "2", "prompt": EDIT_PROMPT, "quality": "low"}
    assert [
        (i["param"], i["source"], i["sha256"], i["width"], i["height"], i["format"])
        for i in entry["images"]
    ] == [
        ("image[0]", "upload", sha256(PICTURE_A), 640, 480, "png"),
        ("image[1]", "upload", sha256(SMALL), 64, 64, "png"),
    ]
    assert entry["images"][0]["bytes"] == len(PICTURE_A)
    assert entry["mask"] is None
    assert all(k.lower() != "authorization" for k in entry["headers"])


def test_json_edit_fetches_image_url_and_decodes_data_url(
    server: RunningServer, pictures: str
) -> None:
    resp = edit_json(
        server,
        {"image_url": f"{pictures}/a.png"},
        {"image_url": data_url(PICTURE_B)},
        output_format="jpeg",
        safety_identifier="hash-of-phone",
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["size"], body["safety_identifier"]) == ("1536x1024", "hash-of-phone")
    edited = picture_of(body["data"][0]["b64_json"])
    assert distance(edited, quadrants(QUADRANT_COLOURS)) < 45  # the first picture is edited
    (entry,) = request_log(server)
    assert [(i["param"], i["source"], i["url"], i["sha256"]) for i in entry["images"]] == [
        ("images[0].image_url", "image_url", f"{pictures}/a.png", sha256(PICTURE_A)),
        ("images[1].image_url", "data_url", None, sha256(PICTURE_B)),
    ]
    assert entry["images"][0]["content_type"] == "image/png"
    logged_url = entry["json"]["images"][1]["image_url"]
    assert logged_url.startswith("data:image/png;base64,")
    assert logged_url.endswith(f"...({len(data_url(PICTURE_B))} characters)")
    assert entry["form"] is None


def test_json_and_multipart_edits_draw_the_same_picture(sdk: Any, server: RunningServer) -> None:
    multipart = sdk_edit(sdk, size="1024x1024", output_format="png").data[0].b64_json
    resp = edit_json(server, {"image_url": data_url(PICTURE_A)}, size="1024x1024")
    assert resp.json()["data"][0]["b64_json"] == multipart


def test_edit_with_mask_changes_only_its_transparent_area(sdk: Any) -> None:
    grey = Image.new("RGB", (1024, 1024), (128, 128, 128))
    mask = Image.new("RGBA", (1024, 1024), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 512, 1024))  # edit the left half only
    result = sdk_edit(
        sdk, upload(png_bytes(grey)), mask=upload(png_bytes(mask), "mask.png"), size="1024x1024"
    )
    with picture_of(result.data[0].b64_json) as img:
        rgb = img.convert("RGB")
        assert rgb.getpixel((768, 200)) == (128, 128, 128)
        assert rgb.getpixel((256, 200)) != (128, 128, 128)


def test_edit_transparent_background_keeps_the_inputs_transparency(sdk: Any) -> None:
    picture = Image.new("RGBA", (1024, 1024), (200, 50, 50, 255))
    picture.paste((0, 0, 0, 0), (0, 0, 1024, 300))
    result = sdk_edit(sdk, upload(png_bytes(picture)), background="transparent", size="1024x1024")
    assert result.background == "transparent"
    with picture_of(result.data[0].b64_json) as img:
        assert img.mode == "RGBA"
        alpha = img.getchannel("A")
        assert (alpha.getpixel((512, 100)), alpha.getpixel((512, 600))) == (0, 255)


SDK_ERRORS = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError"}


@pytest.mark.parametrize(
    ("params", "status", "code", "param"),
    [
        ({"extra_body": {"colour": "red"}}, 400, "unknown_parameter", "colour"),
        ({"response_format": "b64_json"}, 400, "unknown_parameter", "response_format"),
        ({"size": "512x512"}, 400, "invalid_value", "size"),
        ({"quality": "standard"}, 400, "invalid_value", "quality"),
        ({"quality": "max", "model": "gpt-image-2"}, 400, "invalid_value", "quality"),
        ({"n": 11}, 400, "invalid_value", "n"),
        ({"output_compression": 80}, 400, "invalid_value", "output_compression"),  # png
        ({"input_fidelity": "medium"}, 400, "invalid_value", "input_fidelity"),
        ({"input_fidelity": "high", "model": "gpt-image-2"}, 400, "invalid_value", "input_fidelity"),
        ({"prompt": ""}, 400, "invalid_value", "prompt"),
        ({"model": "gpt-image-1"}, 404, "model_not_found", "model"),
        ({"model": "gpt-image-1.5"}, 404, "model_not_found", "model"),
        ({"model": "dall-e-2"}, 404, "model_not_found", "model"),
        ({"model": "gpt-image-9"}, 404, "model_not_found", "model"),
        ({"image": [upload()] * (MAX_INPUT_IMAGES + 1)}, 400, "array_above_max_length", "image"),
        ({"image": b"bare bytes have no type"}, 400, "unsupported_file_mimetype", "image"),
        ({"image": upload(SERVED["a.gif"][0], "a.gif", "image/gif")}, 400,
         "unsupported_file_mimetype", "image"),
        ({"image": upload(b"not a picture")}, 400, "invalid_image_format", "image"),
        ({"image": upload(SERVED["a.gif"][0])}, 400, "invalid_image_format", "image"),  # as png
        ({"image": upload(PICTURE_A[:200])}, 400, "invalid_image_format", "image"),  # truncated
        ({"image": [upload(), upload(b"junk")]}, 400, "invalid_image_format", "image[1]"),
        ({"mask": upload(SMALL, "mask.png")}, 400, "invalid_value", "mask"),  # no alpha
        ({"mask": upload(png_bytes(Image.new("RGBA", (64, 64))), "mask.png")}, 400,
         "invalid_value", "mask"),  # not the image's size
        ({"mask": upload(b"\x89PNG" + bytes(MAX_MASK_BYTES), "mask.png")}, 400,
         "invalid_image", "mask"),
        ({"markup": upload(png_bytes(Image.new("RGBA", (640, 480))), "markup.png")}, 400,
         "invalid_value", "markup"),
    ],
)  # fmt: skip
def test_sdk_edit_refusals(
    sdk: Any, params: dict[str, Any], status: int, code: str, param: str
) -> None:
    openai = pytest.importorskip("openai")
    with pytest.raises(getattr(openai, SDK_ERRORS[status])) as refused:
        sdk_edit(sdk, **params)
    assert_refused(refused.value, code, param)
    assert refused.value.status_code == status


def test_sdk_edit_needs_the_key(server: RunningServer) -> None:
    openai = pytest.importorskip("openai")
    wrong_key = openai.OpenAI(api_key="sk-wrong", base_url=f"{server.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        sdk_edit(wrong_key)
    assert auth.value.code == "invalid_api_key"
    assert request_log(server)[0]["images"] == []  # refused before any picture was read


@pytest.mark.parametrize(
    ("images", "changes", "code", "param", "message"),
    [
        (None, {"images": None}, "missing_required_parameter", "images", "'images'"),
        ([], {}, "empty_array", "images", "empty array"),
        ([{"image_url": data_url(SMALL)}] * 17, {}, "array_above_max_length", "images", "16"),
        ([{"file_id": "file-abc123"}], {}, "invalid_value", "images[0].file_id",
         "not supported by the devstack stand-in"),
        ([{"image_url": "https://x.test/a.png", "file_id": "file-abc123"}], {}, "invalid_value",
         "images[0]", "exactly one"),
        ([{"url": "https://x.test/a.png"}], {}, "unknown_parameter", "images[0].url", "'images[0].url'"),
        (["https://x.test/a.png"], {}, "invalid_type", "images[0]", "object"),
        ([{"image_url": "{pictures}/missing.png"}], {}, "invalid_image_url",
         "images[0].image_url", "Upstream status code: 404"),
        ([{"image_url": "http://127.0.0.1:1/a.png"}], {}, "invalid_image_url",
         "images[0].image_url", "Error while downloading http://127.0.0.1:1/a.png"),
        ([{"image_url": "ftp://x.test/a.png"}], {}, "invalid_image_url", "images[0].image_url",
         "http(s)"),
        ([{"image_url": "{pictures}/notes.txt"}], {}, "invalid_image_format",
         "images[0].image_url", "not a whole picture"),
        ([{"image_url": "{pictures}/a.gif"}], {}, "invalid_image_format", "images[0].image_url",
         "'png', 'jpeg', 'webp'"),
        ([{"image_url": "{pictures}/huge.png"}], {}, "invalid_image", "images[0].image_url",
         "20 MB"),
        ([{"image_url": data_url(b"hello", "text/plain")}], {}, "invalid_image_format",
         "images[0].image_url", "text/plain"),
        ([{"image_url": "data:image/png;base64,@@@@"}], {}, "invalid_image_url",
         "images[0].image_url", "base64"),
        ([{"image_url": data_url(PICTURE_A)}], {"image": data_url(PICTURE_A)},
         "unknown_parameter", "image", "Unknown parameter"),
        ([{"image_url": data_url(PICTURE_A)}], {"mask": {"image_url": data_url(SMALL)}},
         "invalid_value", "mask", "alpha channel"),
        ([{"image_url": data_url(PICTURE_A)}], {"input_fidelity": "max"}, "invalid_value",
         "input_fidelity", "'max'"),
        ([{"image_url": data_url(PICTURE_A)}], {"size": "1000x1000"}, "invalid_value", "size",
         "multiples of 16"),
    ],
)  # fmt: skip
def test_json_edit_refusals(
    server: RunningServer,
    pictures: str,
    images: list[Any] | None,
    changes: dict[str, Any],
    code: str,
    param: str,
    message: str,
) -> None:
    refs = [
        {k: v.replace("{pictures}", pictures) for k, v in ref.items()}
        if isinstance(ref, dict)
        else ref
        for ref in images or []
    ]
    resp = edit_json(server, *refs, **changes)
    assert resp.status_code == 400, resp.text
    err = error_of(resp)
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", code, param)
    assert message in err["message"]
    assert resp.headers["x-request-id"].startswith("req_")


def test_json_edit_of_a_retired_model_is_not_found(server: RunningServer) -> None:
    resp = edit_json(server, {"image_url": data_url(PICTURE_A)}, model="gpt-image-1.5")
    assert resp.status_code == 404
    err = error_of(resp)
    assert (err["code"], err["param"]) == ("model_not_found", "model")
    assert "2026-12-01" in err["message"]


def test_json_edit_image_url_timeout(
    server: RunningServer, pictures: str, config: OpenAIConfig
) -> None:
    config.image_fetch_timeout_s = 0.3
    started = time.monotonic()
    resp = edit_json(server, {"image_url": f"{pictures}/slow.png"})
    assert time.monotonic() - started < 0.9
    err = error_of(resp)
    assert (resp.status_code, err["code"]) == (400, "invalid_image_url")
    assert err["message"] == f"Timeout while downloading {pictures}/slow.png."


@pytest.mark.parametrize(
    ("form", "code", "param"),
    [
        ({"n": "two"}, "invalid_type", "n"),
        ({"stream": "yes"}, "invalid_value", "stream"),
        ({"image": "a.png"}, "invalid_type", "image"),
        ({"svg[model]": "x"}, "invalid_value", "svg"),
        ({"style": "vivid"}, "unknown_parameter", "style"),
    ],
)
def test_multipart_text_fields_are_typed(
    server: RunningServer, form: dict[str, str], code: str, param: str
) -> None:
    # Every field a part of its own (no file name: a text field), so the body is multipart.
    parts: dict[str, Any] = {"model": (None, MODEL), "prompt": (None, EDIT_PROMPT)}
    parts.update({key: (None, value) for key, value in form.items()})
    parts.setdefault("image", upload())
    url = f"{server.url}/v1/images/edits"
    resp = requests.post(url, files=parts, headers=AUTH, timeout=10)
    assert resp.status_code == 400
    err = error_of(resp)
    assert (err["code"], err["param"]) == (code, param)


def test_multipart_without_an_image_part(server: RunningServer) -> None:
    resp = requests.post(
        f"{server.url}/v1/images/edits",
        files={"prompt": (None, "x"), "model": (None, MODEL)},
        headers=AUTH,
        timeout=10,
    )
    err = error_of(resp)
    assert (resp.status_code, err["code"], err["param"]) == (
        400,
        "missing_required_parameter",
        "image",
    )


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("429", 429, "rate_limit_exceeded"),
        ("500", 500, "server_error"),
        ("moderation_blocked", 400, "moderation_blocked"),
        ("billing", 400, "billing_hard_limit_reached"),
    ],
)
def test_faults_apply_to_edits(
    sdk: Any, server: RunningServer, kind: str, status: int, code: str
) -> None:
    openai = pytest.importorskip("openai")
    add_fault(server, kind=kind, prompt_contains="watercolour")
    with pytest.raises(openai.APIStatusError) as failed:
        sdk_edit(sdk)
    assert (failed.value.status_code, failed.value.code) == (status, code)
    assert sdk_edit(sdk, output_format="jpeg").data[0].b64_json  # the fault fired once
    log = request_log(server)
    assert [(e["status"], e["fault"]) for e in log] == [(status, kind), (200, None)]
    assert log[0]["images"][0]["sha256"] == sha256(PICTURE_A)  # validated before the fault


def test_edit_faults_that_answer_200_and_the_latency(
    sdk: Any, server: RunningServer, config: OpenAIConfig
) -> None:
    add_fault(server, kind="not_an_image")
    with pytest.raises(UnidentifiedImageError):
        picture_of(sdk_edit(sdk).data[0].b64_json)
    add_fault(server, kind="garbage")
    assert isinstance(sdk_edit(sdk), str)  # the SDK hands back text it cannot parse
    config.latency_s = 0.3
    started = time.monotonic()
    assert sdk_edit(sdk, output_format="jpeg").data[0].b64_json
    assert time.monotonic() - started >= 0.3


def test_flagged_edit_prompt_is_blocked(sdk: Any) -> None:
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError) as blocked:
        sdk_edit(sdk, prompt="add some gore")
    assert blocked.value.code == "moderation_blocked"
    assert blocked.value.body["moderation_details"]["categories"] == ["violence/graphic"]


def test_draw_edit_is_deterministic_and_keeps_the_input() -> None:
    a = quadrants(QUADRANT_COLOURS)
    first = draw_edit([a], "a prompt", 1024, 1536)
    assert first.size == (1024, 1536)
    assert first.mode == "RGB"
    assert first.tobytes() == draw_edit([a], "a prompt", 1024, 1536).tobytes()
    assert first.tobytes() != draw_edit([a], "another prompt", 1024, 1536).tobytes()
    with_inset = draw_edit([a, quadrants(QUADRANT_COLOURS[::-1])], "a prompt", 1024, 1536)
    assert with_inset.tobytes() != first.tobytes()  # the other inputs show as insets
    assert distance(with_inset, first) < 10
    with pytest.raises(ValueError, match="at least one"):
        draw_edit([], "a prompt", 1024, 1024)
