"""Whatever size the provider makes (up to 3840x2160 on the 2.x models), the MMS is
carrier-safe: a framed JPEG of at most MMS_MAX_BYTES whose long edge is at most MMS_MAX_EDGE.
The full-resolution original, unframed, is kept in Storage beside it."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
import requests
from PIL import Image

from devstack.stack_client import StackClient, age, run_sweep
from shared.framing import INK
from shared.store import PictureStore

pytestmark = pytest.mark.stack


@pytest.fixture
def paid_plan(stack: StackClient) -> Iterator[None]:
    stack.qstash_config(plan="payg")
    yield
    stack.qstash_config(plan="free")


def stored(stack: StackClient, path: str) -> requests.Response:
    url = f"{stack.env['SUPABASE_URL']}/storage/v1/object/public/pictures/{path}"
    return requests.get(url, timeout=10)


@pytest.mark.parametrize(("size", "mms"), [("1024x1024", (1024, 1024)), ("3840x2160", (1536, 864))])
def test_the_mms_is_carrier_safe_and_the_original_is_kept(
    stack: StackClient,
    caller: str,
    paid_plan: None,
    function_setting: Callable[[str, str], None],
    size: str,
    mms: tuple[int, int],
) -> None:
    function_setting("IMAGE_SIZE", size)
    function_setting("QSTASH_MAX_MESSAGE_BYTES", "10000000")
    row = stack.wait_finished(stack.submit(f"a harbour at {size}", to=caller).json()["request_id"])
    assert row["status"] == "delivered", row["failure_detail"]
    [message] = stack.messages_to(caller)
    sent = message["media"][0]
    assert sent["size"] <= 600_000
    assert Image.open(sent["path"]).size == mms

    original = stored(stack, PictureStore.original_path_for(row["image_path"]))
    assert original.status_code == 200
    assert original.headers["Content-Type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(original.content))
    assert picture.size == tuple(int(n) for n in size.split("x"))
    assert len(original.content) == row["original_bytes"]
    # Unframed: its corner is the picture, not the frame's ink.
    corner = picture.convert("RGB").getpixel((1, 1))
    assert not all(abs(a - b) <= 12 for a, b in zip(corner, INK, strict=True))  # type: ignore[arg-type]


def test_the_sweep_deletes_the_original_with_the_picture(stack: StackClient, caller: str) -> None:
    row = stack.wait_finished(stack.submit("a short-lived owl", to=caller).json()["request_id"])
    original = PictureStore.original_path_for(row["image_path"])
    assert stored(stack, original).status_code == 200
    age(stack, str(row["id"]), 31 * 24 * 60)
    run_sweep(stack)
    assert stored(stack, original).status_code in (400, 404)
    assert stored(stack, row["image_path"]).status_code in (400, 404)
