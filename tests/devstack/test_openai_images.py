"""The OpenAI Images/Moderations stand-in, over plain HTTP and through the official SDK."""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from PIL import Image, UnidentifiedImageError

from devstack.openai_images import (
    DEV_API_KEY,
    MODERATION_CATEGORIES,
    OpenAIConfig,
    create_app,
    draw_picture,
    encode_picture,
)
from devstack.serving import RunningServer, serve_in_thread

MODEL = "gpt-image-1.5"
AUTH = {"Authorization": f"Bearer {DEV_API_KEY}"}


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
        ({"size": "512x512"}, 400, "invalid_value", "size"),
        ({"size": "1792x1024"}, 400, "invalid_value", "size"),
        ({"model": "dall-e-2"}, 404, "model_not_found", "model"),
        ({"model": "dall-e-3"}, 404, "model_not_found", "model"),
        ({"model": "gpt-image-1"}, 404, "model_not_found", "model"),
        ({"model": "gpt-image-9"}, 404, "model_not_found", "model"),
        ({"model": None}, 400, "missing_required_parameter", "model"),
        ({"prompt": None}, 400, "missing_required_parameter", "prompt"),
        ({"prompt": ""}, 400, "invalid_value", "prompt"),
        ({"prompt": "x" * 32_001}, 400, "string_above_max_length", "prompt"),
        ({"prompt": 5}, 400, "invalid_type", "prompt"),
        ({"n": 0}, 400, "invalid_value", "n"),
        ({"n": 11}, 400, "invalid_value", "n"),
        ({"n": "2"}, 400, "invalid_type", "n"),
        ({"quality": "hd"}, 400, "invalid_value", "quality"),
        ({"quality": "xhigh"}, 400, "invalid_value", "quality"),  # only the 2.5 models
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


def test_extra_qualities_on_2_5_models(server):
    resp = generate(server, model="gpt-image-2.5-sunburst", quality="xhigh", output_format="jpeg")
    assert resp.status_code == 200
    assert resp.json()["quality"] == "xhigh"


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
    assert moderate(server, model="gpt-image-1.5", input="x").status_code == 404
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
