"""Talking to your picture, end to end on the local stack: a reply changes the last picture
(an edit of its unframed original), AGAIN makes another take, UNDO sends the one before back,
styles, and a photo of your own restyled. Each follow-up is its own request, with the same
guarantees: signed requests, limits, exactly one MMS."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable
from typing import Any

import pytest
import requests
from PIL import Image

from devstack.serving import serve_in_thread
from devstack.stack_client import (
    StackClient,
    drawn,
    latest_request,
    signed_post,
    text_in,
    text_reply,
)
from devstack.vendor_calls import incoming_text, reply_text, studio_call
from shared.store import PictureStore

pytestmark = pytest.mark.stack


# --- helpers ---------------------------------------------------------------------------------


def delivered(stack: StackClient, caller: str) -> dict[str, Any]:
    """The caller's newest request, once it has ended delivered."""
    row = latest_request(stack, caller)
    assert row is not None
    done = stack.wait_finished(str(row["id"]))
    assert done["status"] == "delivered", done
    return done


def stored(stack: StackClient, path: str) -> bytes:
    url = f"{stack.env['SUPABASE_URL']}/storage/v1/object/public/pictures/{path}"
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200, path
    return reply.content


def edits(stack: StackClient) -> list[dict[str, Any]]:
    base = stack.env["OPENAI_BASE_URL"].removesuffix("/v1")
    log = stack.http.get(f"{base}/__dev/requests", timeout=5).json()
    return [entry for entry in log if str(entry.get("path", "")).endswith("/images/edits")]


def provider_calls(stack: StackClient) -> int:
    base = stack.env["OPENAI_BASE_URL"].removesuffix("/v1")
    log = stack.http.get(f"{base}/__dev/requests", timeout=5).json()
    return sum(1 for entry in log if "/images/" in str(entry.get("path", "")))


def edit_of(stack: StackClient, instruction: str) -> dict[str, Any]:
    [entry] = [e for e in edits(stack) if instruction in str((e.get("json") or {}).get("prompt"))]
    return entry


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rows(stack: StackClient, caller: str) -> list[dict[str, Any]]:
    return stack.sql(
        "select * from public.requests where recipient = %s order by created_at", caller
    )


def jpeg(color: tuple[int, int, int] = (200, 40, 40), exif: bytes | None = None) -> bytes:
    out = io.BytesIO()
    picture = Image.new("RGB", (800, 600), color)
    if exif is None:
        picture.save(out, "JPEG")
    else:
        picture.save(out, "JPEG", exif=exif)
    return out.getvalue()


def gps_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 22.0, 12.0)
    gps[3] = "E"
    gps[4] = (4.0, 53.0, 0.0)
    return exif.tobytes()


def send_photo(
    stack: StackClient, caller: str, body: str, data: bytes, content_type: str = "image/jpeg"
) -> dict[str, Any]:
    """An MMS with a picture, as Twilio delivers it: media behind Basic auth, a signed webhook."""
    answer = requests.post(
        f"{stack.env['TWILIO_API_BASE_URL']}/__dev/inbound",
        json={
            "from": caller,
            "to": stack.env["DEMO_FROM"],
            "body": body,
            "media": [{"content_type": content_type, "data_b64": base64.b64encode(data).decode()}],
            "url": stack.env["GENERATE_URL"],
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    assert result["webhook_status"] == 200
    return result


def replies_in(answer: dict[str, Any]) -> str:
    return " ".join(str(reply.get("body")) for reply in answer["replies"])


# --- refine, again, undo ----------------------------------------------------------------------


def test_a_reply_refines_the_last_picture_from_its_original(
    stack: StackClient, caller: str
) -> None:
    first = drawn(stack, caller, "a fox in the snow")
    reply = text_reply(stack, caller, "make it night")
    assert "Changing your picture" in reply
    second = delivered(stack, caller)
    assert (second["kind"], second["parent_id"]) == ("refine", first["id"])
    original = PictureStore.original_path_for(first["image_path"])
    assert second["source_path"] == original
    [picture] = edit_of(stack, "make it night")["images"]
    assert picture["sha256"] == sha256(stored(stack, original))  # the unframed original
    assert len([m for m in stack.messages_to(caller) if m["media"]]) == 2
    assert "Reply to change it" in stack.messages_to(caller)[-1]["body"]
    # Its input picture is billed, so the budget counts more for an edit than for a new one.
    assert second["estimated_cost_usd"] > first["estimated_cost_usd"]


def test_again_makes_another_take_and_undo_sends_the_first_back_for_free(
    stack: StackClient, caller: str
) -> None:
    first = drawn(stack, caller, "a heron in a teacup")
    assert "Another take" in text_reply(stack, caller, "again")
    take = delivered(stack, caller)
    assert (take["kind"], take["prompt"], take["source_path"]) == (
        "again",
        "a heron in a teacup",
        None,
    )
    assert len(stack.generations("a heron in a teacup")) == 2
    calls = provider_calls(stack)
    assert "<Message>" not in text_reply(stack, caller, "UNDO")  # the picture itself is the answer
    undone = delivered(stack, caller)
    assert (undone["kind"], undone["parent_id"]) == ("undo", first["id"])
    assert provider_calls(stack) == calls  # nothing was made
    last = stack.messages_to(caller)[-1]
    assert last["media"] and first["image_path"] in str(last["media"])


def test_undo_with_nothing_before_says_so(stack: StackClient, caller: str) -> None:
    drawn(stack, caller, "a fox in the snow")
    assert "nothing to undo" in text_reply(stack, caller, "undo")
    assert len(rows(stack, caller)) == 1


@pytest.mark.parametrize("body", ["again", "undo", "watercolor"])
def test_a_follow_up_with_no_picture_gets_a_clear_reply(
    stack: StackClient, caller: str, body: str
) -> None:
    assert "no recent picture" in text_reply(stack, caller, body)
    assert rows(stack, caller) == []


def test_words_after_an_expired_picture_get_the_usage_text(stack: StackClient, caller: str) -> None:
    first = drawn(stack, caller, "a fox in the snow")
    stack.sql(
        "update public.requests set delivered_at = now() - interval '2 hours' where id = %s",
        first["id"],
    )
    assert "Text DRAW followed by" in text_reply(stack, caller, "make it night")
    assert len(rows(stack, caller)) == 1


def test_a_follow_up_after_a_failed_picture_has_nothing_to_follow(
    stack: StackClient, caller: str
) -> None:
    stack.fault("openai", kind="moderation_blocked", times=1)
    text_reply(stack, caller, "DRAW a fox")
    row = latest_request(stack, caller)
    assert row is not None and stack.wait_finished(str(row["id"]))["status"] == "failed"
    assert "no recent picture" in text_reply(stack, caller, "again")


# --- styles ------------------------------------------------------------------------------------


def test_styles_are_listed_and_applied_to_new_and_last_pictures(
    stack: StackClient, caller: str
) -> None:
    assert "watercolor" in text_reply(stack, caller, "STYLES")
    text_reply(stack, caller, "DRAW watercolor: a heron")
    first = delivered(stack, caller)
    assert "watercolor painting" in first["prompt"]
    assert len(stack.generations("a heron, as a soft watercolor")) == 1
    text_reply(stack, caller, "comic")
    restyled = delivered(stack, caller)
    assert restyled["kind"] == "refine" and "comic-book" in restyled["prompt"]
    assert edit_of(stack, "comic-book")


def test_help_explains_all_of_it_in_one_message(stack: StackClient, caller: str) -> None:
    help_text = text_reply(stack, caller, "HELP")
    for word in ("DRAW", "AGAIN", "UNDO", "STYLES", "photo", "STOP"):
        assert word in help_text


# --- the same guarantees ---------------------------------------------------------------------


def test_limits_apply_to_follow_ups(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("LIMIT_PER_NUMBER_HOUR", "1")
    drawn(stack, caller, "a fox in the snow")
    calls = provider_calls(stack)
    assert "1 picture in the last hour" in text_reply(stack, caller, "make it night")
    assert "1 picture in the last hour" in text_reply(stack, caller, "again")
    assert provider_calls(stack) == calls
    assert len(rows(stack, caller)) == 1


def test_one_mms_per_follow_up_under_duplicate_callbacks(stack: StackClient, caller: str) -> None:
    drawn(stack, caller, "a fox in the snow")
    stack.qstash_config(duplicate_deliveries=3)
    text_reply(stack, caller, "make it snow harder")
    refined = delivered(stack, caller)
    stack.stack.wait_idle(10)
    pictures = [m for m in stack.messages_to(caller) if m["media"]]
    assert len(pictures) == 2
    assert pictures[-1]["sid"] == refined["message_sid"]


def test_twilio_resending_a_follow_up_makes_one_request(stack: StackClient, caller: str) -> None:
    drawn(stack, caller, "a fox in the snow")
    form = incoming_text(caller, "make it night")
    first = reply_text(signed_post(stack, form))
    again = reply_text(signed_post(stack, form))
    assert "Changing your picture" in first and "Changing your picture" in again
    delivered(stack, caller)
    assert len(rows(stack, caller)) == 2


# --- through Studio: texts and calls -----------------------------------------------------------


def test_a_studio_text_refines_the_last_picture(stack: StackClient, caller: str) -> None:
    text_in(stack, caller, "DRAW a windmill", "studio")
    first = delivered(stack, caller)
    text_in(stack, caller, "make it sunset", "studio")
    second = delivered(stack, caller)
    assert (second["kind"], second["parent_id"]) == ("refine", first["id"])


def test_a_caller_with_a_picture_is_offered_a_change(stack: StackClient, caller: str) -> None:
    lookup = {"lookup": "1", "to": caller, "from": stack.env["DEMO_FROM"]}
    assert signed_post(stack, lookup).json()["has_picture"] is False
    first = drawn(stack, caller, "a fox in the snow")
    assert signed_post(stack, lookup).json()["has_picture"] is True
    answer = signed_post(stack, studio_call(caller, "make it night", follow_up="1")).json()
    assert answer["accepted"] is True
    second = delivered(stack, caller)
    assert (second["kind"], second["channel"], second["parent_id"]) == (
        "refine",
        "voice",
        first["id"],
    )
    signed_post(stack, studio_call(caller, "again", follow_up="1"))
    assert delivered(stack, caller)["kind"] == "again"
    signed_post(stack, studio_call(caller, "new picture of a castle", follow_up="1"))
    castle = delivered(stack, caller)
    assert (castle["kind"], castle["prompt"]) == ("new", "a castle")


# --- your own photo ------------------------------------------------------------------------------


def test_a_photo_with_words_is_restyled_without_its_exif(stack: StackClient, caller: str) -> None:
    answer = send_photo(stack, caller, "as a watercolor", jpeg(exif=gps_exif()))
    assert "on its way back" in replies_in(answer)
    restyled = delivered(stack, caller)
    assert restyled["kind"] == "restyle" and restyled["source_path"].startswith("photos/")
    kept = stored(stack, restyled["source_path"])
    assert b"Exif" not in kept and b"GPS" not in kept and b"PhoneMaker" not in kept
    assert not Image.open(io.BytesIO(kept)).getexif()
    [picture] = edit_of(stack, "as a watercolor")["images"]
    assert picture["sha256"] == sha256(kept)


def test_a_photo_without_words_waits_for_what_to_do(stack: StackClient, caller: str) -> None:
    answer = send_photo(stack, caller, "", jpeg((20, 160, 60)))
    assert "Got your photo" in replies_in(answer)
    assert rows(stack, caller) == []
    [waiting] = stack.sql("select * from public.pending_photos where address = %s", caller)
    text_reply(stack, caller, "make me a superhero")
    restyled = delivered(stack, caller)
    assert (restyled["kind"], restyled["source_path"]) == ("restyle", waiting["path"])
    assert stack.sql("select * from public.pending_photos where address = %s", caller) == []


def test_a_heic_photo_is_converted(stack: StackClient, caller: str) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 90, 200)).save(out, "HEIF")
    send_photo(stack, caller, "as an oil painting", out.getvalue(), "image/heic")
    restyled = delivered(stack, caller)
    kept = stored(stack, restyled["source_path"])
    assert Image.open(io.BytesIO(kept)).format == "JPEG"


def test_a_file_that_is_not_a_picture_is_refused(stack: StackClient, caller: str) -> None:
    answer = send_photo(stack, caller, "as a watercolor", b"%PDF-1.7 not a picture", "image/jpeg")
    assert "isn't a picture" in replies_in(answer)
    assert rows(stack, caller) == []


def test_an_oversized_photo_is_refused(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("PHOTO_MAX_BYTES", "100000")
    noise = Image.effect_noise((1400, 1400), 120).convert("RGB")
    out = io.BytesIO()
    noise.save(out, "JPEG", quality=95)
    assert len(out.getvalue()) > 100_000
    answer = send_photo(stack, caller, "as a watercolor", out.getvalue())
    assert "too large" in replies_in(answer)
    assert rows(stack, caller) == []


def test_media_on_a_foreign_host_is_never_fetched(stack: StackClient, caller: str) -> None:
    fetched: list[str] = []

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        fetched.append(str(environ.get("HTTP_AUTHORIZATION", "")))
        start("200 OK", [("Content-Type", "image/jpeg")])
        return [jpeg()]

    server = serve_in_thread(app)
    try:
        foreign = f"{server.url}/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
        form = {"NumMedia": "1", "MediaUrl0": foreign, "MediaContentType0": "image/jpeg"}
        reply = text_reply(stack, caller, "as a watercolor", **form)
    finally:
        server.stop()
    assert "couldn't open that picture" in reply
    assert fetched == []
    assert rows(stack, caller) == []


def test_a_photo_sent_through_the_studio_flow_is_restyled(stack: StackClient, caller: str) -> None:
    """The flow passes the message's first attachment as `media_url` / `media_type`."""

    def quiet(environ: dict[str, Any], start: Callable[..., Any]) -> list[bytes]:
        start("200 OK", [("Content-Type", "text/xml")])
        return [b"<Response/>"]

    server = serve_in_thread(quiet)  # the webhook of a number pointed at the Studio flow
    try:
        inbound = requests.post(
            f"{stack.env['TWILIO_API_BASE_URL']}/__dev/inbound",
            json={
                "from": caller,
                "to": stack.env["DEMO_FROM"],
                "body": "",
                "media": [
                    {"content_type": "image/jpeg", "data_b64": base64.b64encode(jpeg()).decode()}
                ],
                "url": server.url,
            },
            timeout=30,
        ).json()
    finally:
        server.stop()
    [media_url] = inbound["media_urls"]
    form = {
        "body": "as a pop-art poster",
        "to": caller,
        "from": stack.env["DEMO_FROM"],
        "channel": "message",
        "source_ref": inbound["inbound_sid"],
        "media_url": media_url,
        "media_type": "image/jpeg",
    }
    answer = signed_post(stack, form).json()
    assert answer["accepted"] is True and "on its way back" in answer["message"]
    restyled = delivered(stack, caller)
    assert restyled["kind"] == "restyle" and restyled["source_path"].startswith("photos/")
