"""Every branch of shared/conversation.py: what a text means next to the person's last picture.
Pure functions, so no stack: these run in `make test-fast`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from shared.conversation import (
    AnswerAgain,
    Conversation,
    KeepPhoto,
    MakePicture,
    PendingPhoto,
    Reply,
    ReplyReason,
    SendAgain,
    ShowGallery,
    decide_text,
    styled_prompt,
)
from shared.intake import Command, IncomingCommand, interpret_message
from shared.records import RequestKind, RequestRecord, RequestStatus
from shared.styles import DEFAULT_STYLES, Style, StyleBook

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=30)
STYLES = StyleBook((Style("watercolor", "a watercolor"), Style("oil", "an oil painting")))
_ids = iter(range(1, 10_000))


def row(
    kind: RequestKind = RequestKind.NEW,
    *,
    status: RequestStatus = RequestStatus.DELIVERED,
    minutes_ago: int = 5,
    parent: RequestRecord | None = None,
    prompt: str = "a fox",
    source_path: str | None = None,
) -> RequestRecord:
    number = next(_ids)
    when = NOW - timedelta(minutes=minutes_ago)
    delivered = status is RequestStatus.DELIVERED
    return RequestRecord(
        id=f"00000000-0000-0000-0000-{number:012d}",
        status=status,
        recipient="+15552000001",
        sender="+15550001111",
        prompt=prompt,
        media_token=f"t{number}",
        image_path=f"2026/12/01/t{number}.jpg" if delivered else None,
        created_at=when - timedelta(minutes=1),
        delivered_at=when if delivered else None,
        kind=kind,
        parent_id=parent.id if parent else None,
        source_path=source_path,
    )


def talk(*recent: RequestRecord, photo: PendingPhoto | None = None) -> Conversation:
    """`recent` oldest first, as a person lived them; the store gives them newest first."""
    return Conversation(tuple(reversed(recent)), photo, NOW, WINDOW)


def text(body: str, keyword: str = "DRAW") -> IncomingCommand:
    return interpret_message(body, keyword, 1000)


def decide(body: str, conversation: Conversation, keyword: str = "DRAW", **kw: str) -> object:
    return decide_text(text(body, keyword), conversation, STYLES, keyword=keyword, **kw)


def original_of(record: RequestRecord) -> str:
    assert record.image_path is not None
    return record.image_path.removesuffix(".jpg") + "-original.jpg"


# --- new pictures and replies -----------------------------------------------------------------


def test_draw_is_a_new_picture_even_after_one() -> None:
    assert decide("DRAW a cat", talk(row())) == MakePicture(RequestKind.NEW, "a cat")


def test_draw_with_a_style_name_draws_in_that_style() -> None:
    decision = decide("DRAW watercolor: a cat", talk())
    assert decision == MakePicture(RequestKind.NEW, "a cat, as a watercolor")


@pytest.mark.parametrize(
    ("prompt", "styled"),
    [
        ("oil: a boat", "a boat, as an oil painting"),
        ("OIL : a boat", "a boat, as an oil painting"),
        ("note: a boat", "note: a boat"),  # not a style: the words as written
        ("oil:", "oil:"),  # a style and nothing to draw
        ("a boat", "a boat"),
    ],
)
def test_styled_prompt(prompt: str, styled: str) -> None:
    assert styled_prompt(prompt, STYLES) == styled


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("HELP", ReplyReason.HELP),
        ("styles", ReplyReason.STYLES),
        ("DRAW", ReplyReason.EMPTY_PROMPT),
        ("DRAW " + "x" * 1001, ReplyReason.TOO_LONG),
    ],
)
def test_commands_that_only_reply(body: str, reason: ReplyReason) -> None:
    decision = decide(body, talk(row()))
    assert isinstance(decision, Reply) and decision.reason is reason


def test_too_long_says_how_long() -> None:
    assert decide("DRAW " + "x" * 1001, talk()) == Reply(ReplyReason.TOO_LONG, 1001)


def test_words_without_a_picture_get_the_usage_text() -> None:
    assert decide("make it bluer", talk()) == Reply(ReplyReason.USAGE)


def test_an_unknown_command_gets_the_usage_text() -> None:
    assert decide_text(IncomingCommand(Command.STOP), talk(), STYLES, keyword="DRAW") == Reply(
        ReplyReason.USAGE
    )


# --- refine ------------------------------------------------------------------------------------


def test_words_after_a_picture_refine_its_original() -> None:
    last = row()
    decision = decide("make it night", talk(last))
    assert decision == MakePicture(
        RequestKind.REFINE, "make it night", parent=last, source_path=original_of(last)
    )


def test_a_style_name_after_a_picture_restyles_it() -> None:
    last = row()
    decision = decide("watercolor", talk(last))
    assert isinstance(decision, MakePicture) and decision.kind is RequestKind.REFINE
    assert decision.prompt == STYLES.styles[0].edit_instruction()


def test_a_style_name_with_no_picture_has_nothing_to_follow() -> None:
    assert decide("watercolor", talk()) == Reply(ReplyReason.NOTHING_TO_FOLLOW)


def test_a_picture_older_than_the_window_is_not_followed() -> None:
    assert decide("make it night", talk(row(minutes_ago=31))) == Reply(ReplyReason.USAGE)


def test_the_newest_delivered_picture_is_followed_past_a_failure() -> None:
    last = row()
    decision = decide("make it night", talk(last, row(status=RequestStatus.FAILED)))
    assert isinstance(decision, MakePicture) and decision.parent == last


def test_a_failed_last_request_with_nothing_delivered_has_nothing_to_follow() -> None:
    failed = row(status=RequestStatus.FAILED, minutes_ago=1)
    assert decide("again", talk(failed)) == Reply(ReplyReason.NOTHING_TO_FOLLOW)


def test_a_follow_up_while_a_picture_is_being_made_waits() -> None:
    making = row(status=RequestStatus.QUEUED, minutes_ago=0)
    for body in ("make it night", "again", "undo"):
        assert decide(body, talk(row(), making)) == Reply(ReplyReason.STILL_MAKING)


def test_a_delivered_row_without_a_picture_is_not_followed() -> None:
    odd = replace(row(), image_path=None)
    assert decide("make it night", talk(odd)) == Reply(ReplyReason.USAGE)


# --- no keyword ---------------------------------------------------------------------------------


def test_without_a_keyword_words_are_a_new_picture_unless_they_follow_one() -> None:
    assert decide("a cat", talk(), keyword="") == MakePicture(RequestKind.NEW, "a cat")
    last = row()
    refine = decide("a cat", talk(last), keyword="")
    assert isinstance(refine, MakePicture) and refine.kind is RequestKind.REFINE
    making = talk(last, row(status=RequestStatus.QUEUED, minutes_ago=0))
    assert decide("a cat", making, keyword="") == MakePicture(RequestKind.NEW, "a cat")


# --- again ---------------------------------------------------------------------------------------


def test_again_makes_another_take_of_the_same_prompt() -> None:
    last = row(prompt="a fox in the snow")
    assert decide("AGAIN", talk(last)) == MakePicture(
        RequestKind.AGAIN, "a fox in the snow", parent=last
    )


def test_again_after_an_edit_edits_the_same_source_again() -> None:
    first = row()
    edit = row(RequestKind.REFINE, parent=first, prompt="at night", source_path="a-original.jpg")
    decision = decide("one more", talk(first, edit))
    assert decision == MakePicture(
        RequestKind.AGAIN, "at night", parent=edit, source_path="a-original.jpg"
    )


def test_again_with_no_picture_has_nothing_to_follow() -> None:
    assert decide("again", talk()) == Reply(ReplyReason.NOTHING_TO_FOLLOW)


# --- undo ----------------------------------------------------------------------------------------


def test_undo_sends_back_the_picture_before_the_last_change() -> None:
    first = row(minutes_ago=10)
    changed = row(RequestKind.REFINE, parent=first, source_path=original_of(first))
    assert decide("undo", talk(first, changed)) == SendAgain(first)


def test_undo_after_another_take_goes_back_to_the_first_take() -> None:
    first = row(minutes_ago=10)
    take = row(RequestKind.AGAIN, parent=first)
    assert decide("back", talk(first, take)) == SendAgain(first)


def test_undo_twice_walks_back_through_the_changes() -> None:
    first = row(minutes_ago=20)
    second = row(RequestKind.REFINE, parent=first, minutes_ago=15, source_path="s")
    third = row(RequestKind.REFINE, parent=second, minutes_ago=10, source_path="s")
    undone = row(RequestKind.UNDO, parent=second, minutes_ago=5)  # shows `second` again
    assert decide("undo", talk(first, second, third, undone)) == SendAgain(first)


def test_undo_through_a_refinement_of_an_undo_shows_the_undone_picture() -> None:
    first = row(minutes_ago=20)
    second = row(RequestKind.REFINE, parent=first, minutes_ago=15, source_path="s")
    undone = row(RequestKind.UNDO, parent=first, minutes_ago=10)  # shows `first` again
    third = row(RequestKind.REFINE, parent=undone, minutes_ago=5, source_path="s")
    assert decide("undo", talk(first, second, undone, third)) == SendAgain(first)


@pytest.mark.parametrize(
    "history",
    [
        lambda: [row()],  # a first picture: nothing before it
        lambda: [row(RequestKind.RESTYLE, source_path="photos/p.jpg")],  # their photo's first
    ],
)
def test_undo_of_a_first_picture_has_nothing_to_undo(history: object) -> None:
    assert callable(history)
    assert decide("undo", talk(*history())) == Reply(ReplyReason.NOTHING_TO_UNDO)


def test_undo_when_the_earlier_picture_is_gone_has_nothing_to_undo() -> None:
    first = row(minutes_ago=10)
    changed = row(RequestKind.REFINE, parent=first, source_path="s")
    assert decide("undo", talk(changed)) == Reply(ReplyReason.NOTHING_TO_UNDO)  # not in recent
    failed = row(status=RequestStatus.FAILED, minutes_ago=10)
    after_failure = row(RequestKind.AGAIN, parent=failed)
    assert decide("undo", talk(failed, after_failure)) == Reply(ReplyReason.NOTHING_TO_UNDO)


def test_undo_back_to_an_undo_whose_picture_is_gone_has_nothing_to_undo() -> None:
    first = row(minutes_ago=20)
    undone = row(RequestKind.UNDO, parent=first, minutes_ago=10)
    changed = row(RequestKind.REFINE, parent=undone, minutes_ago=5, source_path="s")
    # `first` has left the recent rows: the undo's picture cannot be found.
    assert decide("undo", talk(undone, changed)) == Reply(ReplyReason.NOTHING_TO_UNDO)


def test_undo_of_an_undo_whose_own_picture_is_gone_has_nothing_to_undo() -> None:
    first = row(minutes_ago=20)
    undone = row(RequestKind.UNDO, parent=first, minutes_ago=5)
    assert decide("undo", talk(undone)) == Reply(ReplyReason.NOTHING_TO_UNDO)


def test_undo_with_no_picture_has_nothing_to_follow() -> None:
    assert decide("undo", talk()) == Reply(ReplyReason.NOTHING_TO_FOLLOW)


# --- photos --------------------------------------------------------------------------------------


def test_a_photo_with_words_is_restyled_as_they_say() -> None:
    decision = decide("make me a superhero", talk(row()), photo_path="photos/p.jpg")
    assert decision == MakePicture(
        RequestKind.RESTYLE, "make me a superhero", source_path="photos/p.jpg"
    )


def test_a_photo_with_draw_words_or_a_style_name_is_restyled() -> None:
    draw = decide("DRAW as a knight", talk(), photo_path="photos/p.jpg")
    assert isinstance(draw, MakePicture) and draw.prompt == "as a knight"
    styled = decide("oil", talk(), photo_path="photos/p.jpg")
    assert isinstance(styled, MakePicture) and styled.prompt == STYLES.styles[1].edit_instruction()


@pytest.mark.parametrize("body", ["", "help", "again"])
def test_a_photo_without_words_is_kept_and_asked_about(body: str) -> None:
    assert decide(body, talk(), photo_path="photos/p.jpg") == KeepPhoto("photos/p.jpg")


def test_words_after_a_waiting_photo_restyle_the_photo() -> None:
    photo = PendingPhoto("photos/p.jpg", NOW - timedelta(minutes=2))
    decision = decide("as a watercolor", talk(row(minutes_ago=5), photo=photo))
    assert decision == MakePicture(
        RequestKind.RESTYLE,
        "as a watercolor",
        source_path="photos/p.jpg",
        uses_pending_photo=True,
    )


def test_a_waiting_photo_older_than_the_last_picture_is_not_used() -> None:
    photo = PendingPhoto("photos/p.jpg", NOW - timedelta(minutes=10))
    decision = decide("make it night", talk(row(minutes_ago=5), photo=photo))
    assert isinstance(decision, MakePicture) and decision.kind is RequestKind.REFINE


def test_a_waiting_photo_past_the_window_is_not_used() -> None:
    photo = PendingPhoto("photos/p.jpg", NOW - timedelta(minutes=31))
    assert decide("make it night", talk(photo=photo)) == Reply(ReplyReason.USAGE)


def test_a_waiting_photo_with_no_picture_since_is_used() -> None:
    photo = PendingPhoto("photos/p.jpg", NOW - timedelta(minutes=1))
    decision = decide("oil", talk(photo=photo))
    assert isinstance(decision, MakePicture) and decision.uses_pending_photo


def test_the_shipped_styles_load_and_each_reads_as_a_phrase() -> None:
    assert len(DEFAULT_STYLES.names) >= 5
    for style in DEFAULT_STYLES.styles:
        assert style.draw_prompt("a fox").startswith("a fox, as ")
        assert style.look in style.edit_instruction()


def test_a_message_twilio_sent_before_is_answered_as_before() -> None:
    earlier = replace(row(RequestKind.REFINE, source_path="s"), source_ref="SM" + "1" * 32)
    decision = decide_text(
        text("make it night"), talk(earlier), STYLES, keyword="DRAW", source_ref="SM" + "1" * 32
    )
    assert decision == AnswerAgain(earlier)


def test_a_deleted_picture_is_not_followed_nor_undone_to() -> None:
    deleted = replace(row(minutes_ago=10), deleted_at=NOW)
    assert decide("make it night", talk(deleted)) == Reply(ReplyReason.USAGE)
    changed = row(RequestKind.REFINE, parent=deleted, source_path="s")
    assert decide("undo", talk(deleted, changed)) == Reply(ReplyReason.NOTHING_TO_UNDO)


@pytest.mark.parametrize(
    ("body", "new_link"), [("PICTURES", False), ("my pictures", False), ("NEWLINK", True)]
)
def test_pictures_and_newlink_show_the_gallery(body: str, new_link: bool) -> None:
    assert decide(body, talk()) == ShowGallery(new_link)
