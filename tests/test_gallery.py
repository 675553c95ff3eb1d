"""The private gallery (`gallery/`): the link PICTURES texts opens the person's pictures; a
wrong or replaced token gets 404; delete removes a picture and its prompt for good."""

from __future__ import annotations

import re

import pytest
import requests

from devstack.stack_client import StackClient, drawn, text_reply
from shared.store import PictureStore

pytestmark = pytest.mark.stack
LINK = re.compile(r"http://127\.0\.0\.1:\d+/p/[A-Za-z0-9_-]{43}")


def link_in(reply: str) -> str:
    found = LINK.search(reply)
    assert found, reply
    return found.group(0)


def stored(stack: StackClient, path: str) -> int:
    url = f"{stack.env['SUPABASE_URL']}/storage/v1/object/public/pictures/{path}"
    return requests.get(url, timeout=10).status_code


def test_pictures_texts_a_private_link_that_shows_them(stack: StackClient, caller: str) -> None:
    picture = drawn(stack, caller, "a <b>bold</b> heron & friends")
    link = link_in(text_reply(stack, caller, "PICTURES"))
    assert link_in(text_reply(stack, caller, "pictures")) == link  # the same link each time
    page = requests.get(link, timeout=10)
    assert page.status_code == 200
    assert "a &lt;b&gt;bold&lt;/b&gt; heron &amp; friends" in page.text  # escaped
    assert "<b>bold</b>" not in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "script-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    preview = re.search(r'<img src="([^"]+)"', page.text)
    assert preview and "/storage/v1/object/sign/" in preview.group(1)
    assert requests.get(preview.group(1).replace("&amp;", "&"), timeout=10).status_code == 200
    original = requests.get(f"{link}/original/{picture['id']}", timeout=10)
    assert original.status_code == 200 and original.headers["Content-Type"] == "image/jpeg"


def test_a_wrong_or_replaced_link_is_not_found(stack: StackClient, caller: str) -> None:
    drawn(stack, caller, "a lantern")
    old = link_in(text_reply(stack, caller, "PICTURES"))
    assert requests.get(old[:-1] + ("A" if old[-1] != "A" else "B"), timeout=10).status_code == 404
    new = link_in(text_reply(stack, caller, "NEWLINK"))
    assert new != old
    assert requests.get(old, timeout=10).status_code == 404
    assert requests.get(new, timeout=10).status_code == 200
    assert requests.get(f"{stack.env['GALLERY_URL']}/anything", timeout=10).status_code == 404


def test_delete_removes_the_picture_and_its_prompt(stack: StackClient, caller: str) -> None:
    picture = drawn(stack, caller, "a secret garden")
    link = link_in(text_reply(stack, caller, "PICTURES"))
    url = f"{link}/delete/{picture['id']}"
    assert requests.post(url, timeout=10).status_code == 403  # not from the gallery page
    forged = requests.post(url, headers={"Origin": "https://evil.example"}, timeout=10)
    assert forged.status_code == 403
    origin = stack.env["GALLERY_URL"]
    done = requests.post(url, headers={"Origin": origin}, timeout=10, allow_redirects=False)
    assert done.status_code == 303 and done.headers["Location"] == link
    row = stack.row(str(picture["id"]))
    assert row["prompt"] == "(deleted)" and row["deleted_at"] is not None
    assert "a secret garden" not in requests.get(link, timeout=10).text
    assert stored(stack, picture["image_path"]) != 200
    assert stored(stack, PictureStore.original_path_for(picture["image_path"])) != 200
    # A deleted picture is not followed up on.
    assert "Text DRAW followed by" in text_reply(stack, caller, "make it night")


def test_another_persons_picture_cannot_be_deleted(stack: StackClient, caller: str) -> None:
    mine = drawn(stack, caller, "a teapot")
    other = "+15552009999"
    link = link_in(text_reply(stack, other, "PICTURES"))
    origin = stack.env["GALLERY_URL"]
    requests.post(f"{link}/delete/{mine['id']}", headers={"Origin": origin}, timeout=10)
    assert stack.row(str(mine["id"]))["deleted_at"] is None


def test_a_picture_that_never_reaches_the_phone_is_texted_as_a_link(
    stack: StackClient, caller: str
) -> None:
    # Twilio cannot fetch the picture, so the MMS fails after it was accepted (11200).
    stack.fault(
        "supabase",
        service="storage",
        kind="503",
        times=-1,
        method="GET",
        path_contains="/object/public/",
    )
    row = stack.wait_finished(stack.submit("a lost parcel", to=caller).json()["request_id"])
    stack.stack.wait_idle(15)
    assert stack.row(row["id"])["handset_status"] == "failed"
    stack.clear_faults()
    texts = [m for m in stack.messages_to(caller) if "couldn't reach your phone" in m["body"]]
    assert len(texts) == 1 and not texts[0]["media"]
    link = link_in(texts[0]["body"])
    page = requests.get(link, timeout=10)
    assert page.status_code == 200 and "a lost parcel" in page.text
    assert stack.row(row["id"])["link_sent_at"] is not None


def test_an_original_is_only_for_its_owner_and_pages_take_only_their_methods(
    stack: StackClient, caller: str
) -> None:
    mine = drawn(stack, caller, "a private pear")
    other = link_in(text_reply(stack, "+15552009998", "PICTURES"))
    assert requests.get(f"{other}/original/{mine['id']}", timeout=10).status_code == 404
    link = link_in(text_reply(stack, caller, "PICTURES"))
    assert requests.post(link, timeout=10).status_code == 405
    assert requests.get(f"{link}/delete/{mine['id']}", timeout=10).status_code == 405


def test_a_picture_whose_file_is_gone_is_left_out_and_the_rest_still_show(
    stack: StackClient, caller: str
) -> None:
    kept = drawn(stack, caller, "a picture that stays")
    lost = drawn(stack, caller, "a picture whose file is gone")
    stack.sql(
        "update public.requests set image_path = 'gone/' || media_token || '.jpg' where id = %s",
        lost["id"],
    )
    page = requests.get(link_in(text_reply(stack, caller, "PICTURES")), timeout=10)
    assert page.status_code == 200
    assert "a picture that stays" in page.text
    assert "a picture whose file is gone" not in page.text
    assert str(kept["id"]) in page.text


def test_when_storage_signs_nothing_the_gallery_is_a_503(stack: StackClient, caller: str) -> None:
    drawn(stack, caller, "a picture behind an outage")
    link = link_in(text_reply(stack, caller, "PICTURES"))
    stack.fault("supabase", service="storage", kind="503", times=-1, path_contains="/sign/")
    assert requests.get(link, timeout=10).status_code == 503
