"""What a text means in a conversation with the person's last picture: pure functions of the
command, their recent requests, a photo they sent, the styles and the settings. No I/O here;
channels.py gathers the facts and carries the answer out (tests/test_decisions_conversation.py
covers every branch).

Within FOLLOW_UP_MINUTES of their last delivered picture, words that are not a command change
that picture (an edit of its unframed original), AGAIN makes another take of it, UNDO sends
back the one before the last change, and a style name restyles it. A photo restyles the photo.
Each follow-up becomes its own request row (`kind`, `parent_id`, `source_path`), so limits,
the budget, retention, the sweep and exactly-once apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .intake import Command, IncomingCommand
from .records import RequestKind, RequestRecord, RequestStatus
from .store import PictureStore
from .styles import Style, StyleBook


@dataclass(frozen=True)
class PendingPhoto:
    """A photo someone sent without words, waiting for them to say what to do with it."""

    path: str
    received_at: datetime


@dataclass(frozen=True)
class Conversation:
    """What we know of one person and our number, at `now`."""

    recent: Sequence[RequestRecord]  # their latest requests, newest first
    pending_photo: PendingPhoto | None
    now: datetime
    window: timedelta  # FOLLOW_UP_MINUTES

    def last_picture(self) -> RequestRecord | None:
        """Their newest delivered picture, if it is recent enough to follow up on."""
        for record in self.recent:
            if record.has_picture:
                delivered = record.delivered_at or record.created_at
                if delivered is not None and delivered >= self.now - self.window:
                    return record
                return None
        return None

    def in_progress(self) -> bool:
        """A picture is still being made (newer than their last delivered one)."""
        for record in self.recent:
            if record.status is RequestStatus.DELIVERED:
                return False
            if not record.status.finished:
                return True
        return False

    def waiting_photo(self) -> PendingPhoto | None:
        """The photo they sent without words, if recent and newer than their last picture."""
        photo = self.pending_photo
        if photo is None or photo.received_at < self.now - self.window:
            return None
        last = self.last_picture()
        if last is not None and (last.delivered_at or self.now) > photo.received_at:
            return None
        return photo

    def find(self, request_id: str | None) -> RequestRecord | None:
        return next((r for r in self.recent if request_id and r.id == request_id), None)

    def asked_by(self, source_ref: str | None) -> RequestRecord | None:
        """The request Twilio's message or call `source_ref` already made, if any."""
        return next((r for r in self.recent if source_ref and r.source_ref == source_ref), None)


# --- what to do ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MakePicture:
    """Record and publish a request: a new picture, or a follow-up that needs the provider."""

    kind: RequestKind
    prompt: str  # what the model is asked (the caption shows it)
    parent: RequestRecord | None = None
    source_path: str | None = None  # the picture an edit starts from
    uses_pending_photo: bool = False


@dataclass(frozen=True)
class SendAgain:
    """UNDO: record a request for `picture` and send its stored picture again; no provider."""

    picture: RequestRecord


@dataclass(frozen=True)
class KeepPhoto:
    """A photo with no words: keep it and ask what to do with it."""

    path: str


class ReplyReason(StrEnum):
    USAGE = "usage"
    HELP = "help"
    STYLES = "styles"
    EMPTY_PROMPT = "empty_prompt"
    TOO_LONG = "too_long"
    NOTHING_TO_FOLLOW = "nothing_to_follow"  # AGAIN, UNDO or a style with no recent picture
    NOTHING_TO_UNDO = "nothing_to_undo"  # the last picture is the first of its line
    STILL_MAKING = "still_making"  # a follow-up while the last picture is still being made


@dataclass(frozen=True)
class Reply:
    """Only a reply: nothing is recorded or spent."""

    reason: ReplyReason
    length: int = 0  # for TOO_LONG


@dataclass(frozen=True)
class ShowGallery:
    """PICTURES (or NEWLINK: a new link, the old one stops working)."""

    new_link: bool


@dataclass(frozen=True)
class AnswerAgain:
    """Twilio sent the same message again: answer as the first time, do nothing new."""

    earlier: RequestRecord


TextDecision = MakePicture | SendAgain | KeepPhoto | Reply | AnswerAgain | ShowGallery


def decide_text(
    command: IncomingCommand,
    conversation: Conversation,
    styles: StyleBook,
    *,
    keyword: str,
    photo_path: str | None = None,
    source_ref: str | None = None,
) -> TextDecision:
    """What a text (and the photo stored from it, at `photo_path`) asks for. `source_ref` is
    Twilio's id of the message: one it sent before is answered as before.

    STOP and START are handled before this (they only change the opt-out list)."""
    if (earlier := conversation.asked_by(source_ref)) is not None:
        return AnswerAgain(earlier)
    if photo_path is not None:
        return _with_photo(command, photo_path, styles)
    if command.follow_up is not None:
        return _follow_up(command.follow_up, conversation, styles, keyword)
    match command.command:
        case Command.PROMPT:
            assert command.prompt is not None
            return MakePicture(RequestKind.NEW, styled_prompt(command.prompt, styles))
        case Command.HELP:
            return Reply(ReplyReason.HELP)
        case Command.STYLES:
            return Reply(ReplyReason.STYLES)
        case Command.EMPTY_PROMPT:
            return Reply(ReplyReason.EMPTY_PROMPT)
        case Command.TOO_LONG:
            return Reply(ReplyReason.TOO_LONG, command.length)
        case Command.AGAIN:
            return _again(conversation)
        case Command.UNDO:
            return _undo(conversation)
        case Command.PICTURES:
            return ShowGallery(new_link=False)
        case Command.NEW_LINK:
            return ShowGallery(new_link=True)
    return Reply(ReplyReason.USAGE)  # STOP/START never get here


def styled_prompt(prompt: str, styles: StyleBook) -> str:
    """ "watercolor: a fox" asks for a fox in the watercolor style; other text is as written."""
    name, colon, rest = prompt.partition(":")
    style = styles.find(name) if colon else None
    if style is None or not rest.strip():
        return prompt
    return style.draw_prompt(rest.strip())


def _instruction(text: str, styles: StyleBook) -> str:
    """The edit instruction for a reply: a style's, when the reply is just its name."""
    style: Style | None = styles.find(text)
    return style.edit_instruction() if style else text


def _with_photo(command: IncomingCommand, photo_path: str, styles: StyleBook) -> TextDecision:
    text = command.follow_up or (command.prompt if command.command is Command.PROMPT else None)
    if not text:
        return KeepPhoto(photo_path)
    return MakePicture(RequestKind.RESTYLE, _instruction(text, styles), source_path=photo_path)


def _follow_up(
    text: str, conversation: Conversation, styles: StyleBook, keyword: str
) -> TextDecision:
    if (photo := conversation.waiting_photo()) is not None:
        instruction = _instruction(text, styles)
        return MakePicture(
            RequestKind.RESTYLE, instruction, source_path=photo.path, uses_pending_photo=True
        )
    last = conversation.last_picture()
    if not keyword and (last is None or conversation.in_progress()):
        # No keyword: every text is a new prompt, unless it follows a picture.
        return MakePicture(RequestKind.NEW, styled_prompt(text, styles))
    if conversation.in_progress():
        return Reply(ReplyReason.STILL_MAKING)
    if last is None:
        if styles.find(text) is not None:
            return Reply(ReplyReason.NOTHING_TO_FOLLOW)
        return Reply(ReplyReason.USAGE)
    assert last.image_path is not None  # last_picture only returns delivered pictures
    return MakePicture(
        RequestKind.REFINE,
        _instruction(text, styles),
        parent=last,
        source_path=PictureStore.original_path_for(last.image_path),
    )


def _again(conversation: Conversation) -> TextDecision:
    if conversation.in_progress():
        return Reply(ReplyReason.STILL_MAKING)
    last = conversation.last_picture()
    if last is None:
        return Reply(ReplyReason.NOTHING_TO_FOLLOW)
    # Another take of what made the last picture: the same prompt, from the same source.
    return MakePicture(RequestKind.AGAIN, last.prompt, parent=last, source_path=last.source_path)


def _shown(record: RequestRecord, conversation: Conversation) -> RequestRecord | None:
    """The request whose picture `record` shows: an UNDO shows its parent's."""
    return conversation.find(record.parent_id) if record.kind is RequestKind.UNDO else record


def _undo(conversation: Conversation) -> TextDecision:
    if conversation.in_progress():
        return Reply(ReplyReason.STILL_MAKING)
    last = conversation.last_picture()
    if last is None:
        return Reply(ReplyReason.NOTHING_TO_FOLLOW)
    shown = _shown(last, conversation)
    changed = shown is not None and shown.kind in (RequestKind.REFINE, RequestKind.AGAIN)
    before = conversation.find(shown.parent_id) if shown is not None and changed else None
    if before is None or not before.has_picture:
        return Reply(ReplyReason.NOTHING_TO_UNDO)
    picture = _shown(before, conversation) if before.kind is RequestKind.UNDO else before
    if picture is None or not picture.has_picture:
        return Reply(ReplyReason.NOTHING_TO_UNDO)
    return SendAgain(picture)
