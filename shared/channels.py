"""The ways a person asks for a picture by phone, turned into one `PictureRequest`.

- A Twilio Studio flow (voice: the caller's words; messaging: the text) posts a signed form to
  `generate` and reads our JSON answer (`accepted`, `message`) to say or text it.
- Twilio's incoming-message webhook (SMS and WhatsApp) posts a signed form and gets TwiML back.
Both end in `accept_picture_request`; the picture goes back to whoever called or wrote, from
the number they contacted.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from . import logs, replies
from .accept import accept_picture_request
from .acceptance_decisions import Acceptance, earlier_failed, refusal_reply
from .conversation import (
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
)
from .deadline import Deadline
from .errors import (
    BadRequest,
    EmptyPrompt,
    HiddenNumber,
    PhotoRefused,
    PromptTooLong,
    UpstreamError,
)
from .gallery_access import gallery_link_for
from .intake import (
    Command,
    IncomingMedia,
    PictureRequest,
    caller_attested,
    check_pair,
    interpret_message,
    parse_address,
    parse_studio_request,
    spoken_command,
    studio_media,
    twilio_sid,
    webhook_media,
)
from .person_language import first_guess, reply_language, worth_remembering
from .photos import fetch_media, prepare_photo
from .records import (
    WHATSAPP_PREFIX,
    Channel,
    OptOutSource,
    RequestKind,
    RequestRecord,
    RequestStatus,
)
from .services import Services
from .settings import Settings, VoiceCallerCheck
from .store import PictureStore

# A photo is fetched while Twilio waits for our answer (its webhook allows 15 s [DOC]).
PHOTO_FETCH_TIMEOUT_S = 5.0


# The flow's fields for a call's follow-up: `lookup` asks whether the caller has a picture to
# change; `follow_up=1` says the words are a change (or "again", or "new ...").
LOOKUP_FIELD = "lookup"
FOLLOW_UP_FIELD = "follow_up"
# The call's language (the flow's branch: the lookup's first guess, or the caller's menu
# choice), and the caller's country for that first guess: {{trigger.call.FromCountry}}, the
# ISO code Twilio adds to an inbound call from the caller's number [DOC voice webhook
# parameters]. Twilio may leave it empty (a number it cannot place); the guess then is
# DEFAULT_LANGUAGE.
LANGUAGE_FIELD = "language"
COUNTRY_FIELD = "country"


@dataclass(frozen=True)
class StudioAnswer:
    """What the Studio flow reads back from `generate` (as `widgets.<name>.parsed`)."""

    accepted: bool
    message: str
    request_id: str | None = None
    has_picture: bool | None = None  # for the flow's lookup: offer a change on the call
    language: str | None = None  # for the flow's lookup: the language to greet the caller in

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"accepted": self.accepted, "message": self.message}
        if self.request_id:
            body["request_id"] = self.request_id
        if self.has_picture is not None:
            body["has_picture"] = self.has_picture
        if self.language is not None:
            body["language"] = self.language
        return body


# The fields that say a form comes from our Studio flow (studio/flow.json) rather than from
# Twilio's message webhook: a call's words, a text's body, or the call's first lookup.
STUDIO_FIELDS = frozenset({"prompt", "body", LOOKUP_FIELD})


def is_studio_form(form: Mapping[str, str]) -> bool:
    return any(field in form for field in STUDIO_FIELDS)


def answer_studio(
    form: Mapping[str, str], services: Services, deadline: Deadline | None = None
) -> StudioAnswer:
    """Handle a Studio flow's request: `prompt` from a call, or `body` from a message.

    Problems the person can fix come back as a message for the flow to say or text; outages
    raise, so the flow takes its `failed` branch and apologises.
    """
    if LOOKUP_FIELD in form:
        return _lookup(form, services)
    settings = services.settings
    if "body" in form:
        try:
            sender = parse_address(form.get("to"), "to")
        except HiddenNumber:
            return StudioAnswer(False, replies.hidden_number(settings.default_language))
        return _answer_text(
            sender=sender,
            ours=parse_address(form.get("from"), "from"),
            body=form.get("body", ""),
            source_ref=twilio_sid(form.get("source_ref")),
            opt_out_type=None,
            services=services,
            deadline=deadline,
            media=studio_media(form),
        )
    # The flow's branch says the call's language; the words come back in it.
    spoken_in = (form.get(LANGUAGE_FIELD, ""),)
    call_language = reply_language(spoken_in, None, settings.default_language)
    try:
        request = parse_studio_request(form, settings.max_prompt_chars)
    except HiddenNumber:
        return StudioAnswer(False, replies.hidden_number(call_language))
    except EmptyPrompt:
        return StudioAnswer(False, replies.empty_prompt("", call_language))
    except PromptTooLong as exc:
        limit = settings.max_prompt_chars
        return StudioAnswer(False, replies.prompt_too_long(exc.length, limit, call_language))
    said = spoken_in if request.channel is Channel.VOICE else ()
    language = settle_language(request.recipient, request.sender, said, services)
    request = replace(request, language=language)
    if not caller_trusted(request, settings.voice_caller_check):
        # Nothing recorded, nothing spent: texting proves the number better than a call.
        logs.info("caller ID not attested", verdict=request.caller_verdict or "none")
        keyword = replies.keyword_in(language, settings)
        return StudioAnswer(False, replies.text_us_instead(keyword, language))
    if form.get(FOLLOW_UP_FIELD) == "1":
        return _spoken_follow_up(request, services, deadline)
    accepted = accept_picture_request(request, services, deadline)
    if accepted.outcome is Acceptance.OPTED_OUT:
        return StudioAnswer(False, replies.opted_out_by_voice(language))
    if refusal := refusal_reply(accepted, settings, language):
        return StudioAnswer(False, refusal)
    if earlier_failed(accepted):
        return StudioAnswer(False, replies.earlier_request_failed(language), accepted.request_id)
    return StudioAnswer(True, replies.accepted_by_voice(language), accepted.request_id)


def _lookup(form: Mapping[str, str], services: Services) -> StudioAnswer:
    """The flow's first question on a call: has this caller a picture to change? A hidden or
    untrusted caller has none (the flow then asks for a new one, and the usual checks apply)."""
    default = services.settings.default_language
    country = form.get(COUNTRY_FIELD)
    guess = first_guess(None, country, default)
    try:
        caller = parse_address(form.get("to"), "to")
        ours = parse_address(form.get("from"), "from")
        check_pair(caller, ours)
    except BadRequest:
        return StudioAnswer(True, "", has_picture=False, language=guess)
    try:
        conversation = read_conversation(caller, ours, services)
        remembered = services.store.language_for(caller, ours)
    except UpstreamError as exc:
        logs.warning("could not read the conversation for a call", error=exc.message)
        return StudioAnswer(True, "", has_picture=False, language=guess)
    has_picture = conversation.last_picture() is not None and not conversation.in_progress()
    language = first_guess(remembered, country, default)
    return StudioAnswer(True, "", has_picture=has_picture, language=language)


def _spoken_follow_up(
    request: PictureRequest, services: Services, deadline: Deadline | None
) -> StudioAnswer:
    """A caller who had a picture said a change, "again", or "new" and a new picture."""
    settings = services.settings
    language = request.language
    try:
        conversation = read_conversation(request.recipient, request.sender, services)
    except UpstreamError:
        return StudioAnswer(False, replies.cannot_take_request(language))
    command = spoken_command(request.prompt, language)
    decision = decide_text(
        command,
        conversation,
        settings.styles,
        keyword=settings.sms_keyword,
        source_ref=request.source_ref,
    )
    if isinstance(decision, AnswerAgain):
        earlier = decision.earlier
        if earlier.status is RequestStatus.FAILED:
            return StudioAnswer(False, replies.earlier_request_failed(language), earlier.id)
        return StudioAnswer(True, replies.accepted_by_voice(language), earlier.id)
    if isinstance(decision, Reply | KeepPhoto | ShowGallery):
        message = reply_for(decision, settings, language) if isinstance(decision, Reply) else ""
        return StudioAnswer(False, message)
    follow_up = picture_request_for(
        decision, request.recipient, request.sender, Channel.VOICE, request.source_ref, language
    )
    follow_up = replace(follow_up, caller_verdict=request.caller_verdict)
    accepted = accept_picture_request(follow_up, services, deadline)
    if accepted.outcome is Acceptance.OPTED_OUT:
        return StudioAnswer(False, replies.opted_out_by_voice(language))
    if refusal := refusal_reply(accepted, settings, language):
        return StudioAnswer(False, refusal)
    if earlier_failed(accepted):
        return StudioAnswer(False, replies.earlier_request_failed(language), accepted.request_id)
    return StudioAnswer(True, replies.accepted_by_voice(language), accepted.request_id)


def answer_incoming_message(
    form: Mapping[str, str], services: Services, deadline: Deadline | None = None
) -> str | None:
    """Handle Twilio's incoming-message webhook; return the reply text (None: no reply)."""
    try:
        sender = parse_address(form.get("From"), "From")
    except HiddenNumber:
        return replies.hidden_number(services.settings.default_language)
    answer = _answer_text(
        sender=sender,
        ours=parse_address(form.get("To"), "To"),
        body=form.get("Body", ""),
        source_ref=twilio_sid(form.get("MessageSid")),
        opt_out_type=form.get("OptOutType") or None,
        services=services,
        deadline=deadline,
        media=webhook_media(form),
    )
    return answer.message or None


def _answer_text(
    *,
    sender: str,
    ours: str,
    body: str,
    source_ref: str | None,
    opt_out_type: str | None,
    services: Services,
    deadline: Deadline | None = None,
    media: IncomingMedia | None = None,
) -> StudioAnswer:
    """A text message from `sender` to our number `ours`: a prompt, a keyword, a follow-up to
    their last picture (conversation.py), or a photo to restyle."""
    check_pair(sender, ours)
    settings = services.settings
    command = interpret_message(
        body,
        settings.sms_keyword,
        settings.max_prompt_chars,
        opt_out_type,
        default_language=settings.default_language,
    )
    logs.info("incoming message", command=command.command.value, sender=sender)
    if command.command in (Command.STOP, Command.START):
        # Twilio itself confirms STOP/START to the person; we only remember it.
        stop = command.command is Command.STOP
        services.store.set_opt_out(sender, ours, opted_out=stop, source=OptOutSource.KEYWORD)
        if stop:
            stop_waiting_requests(sender, ours, services)
        return StudioAnswer(False, "")
    language = settle_language(sender, ours, command.languages, services)
    if command.command is Command.LANGUAGE:
        if not command.languages:
            return StudioAnswer(False, replies.language_unknown(language))
        return StudioAnswer(False, replies.language_set(language))
    photo_path: str | None = None
    try:
        if media is not None:
            photo_path = store_photo(media, source_ref, services)
        conversation = read_conversation(sender, ours, services)
    except PhotoRefused as exc:
        logs.info("photo refused", problem=exc.problem.value)
        return StudioAnswer(False, replies.photo_refused(exc.problem, language))
    except UpstreamError as exc:
        logs.error("could not read the conversation", error=exc.message, detail=exc.detail)
        return StudioAnswer(False, replies.cannot_take_request(language))
    decision = decide_text(
        command,
        conversation,
        settings.styles,
        keyword=settings.sms_keyword,
        photo_path=photo_path,
        source_ref=source_ref,
    )
    if isinstance(decision, AnswerAgain):
        return answer_again(decision.earlier)
    if isinstance(decision, Reply):
        return StudioAnswer(False, reply_for(decision, settings, language))
    if isinstance(decision, ShowGallery):
        link = send_gallery_link(sender, ours, decision.new_link, services, language)
        return StudioAnswer(False, link)
    if isinstance(decision, KeepPhoto):
        if services.store.is_opted_out(sender, ours):
            return StudioAnswer(False, "")  # Twilio would refuse any reply
        if replaced := services.store.keep_photo(sender, ours, decision.path):
            services.pictures.remove([replaced])
        return StudioAnswer(False, replies.photo_received(language))
    channel = Channel.WHATSAPP if sender.startswith(WHATSAPP_PREFIX) else Channel.SMS
    request = picture_request_for(decision, sender, ours, channel, source_ref, language)
    try:
        accepted = accept_picture_request(request, services, deadline)
    except UpstreamError:
        # Recorded as failed (or never recorded); the person is told right here.
        return StudioAnswer(False, replies.cannot_take_request(language))
    if accepted.outcome is Acceptance.OPTED_OUT:
        return StudioAnswer(False, "")  # Twilio would refuse any reply; they must text START
    if refusal := refusal_reply(accepted, settings, language):
        return StudioAnswer(False, refusal)
    if earlier_failed(accepted):
        return StudioAnswer(False, replies.earlier_request_failed(language), accepted.request_id)
    if isinstance(decision, MakePicture) and decision.uses_pending_photo:
        services.store.forget_photo(sender, ours)
    if request.kind is RequestKind.UNDO:
        return StudioAnswer(True, "", accepted.request_id)  # the picture itself is the answer
    reference = accepted.reference or ""
    reply = replies.accepted_follow_up(request.kind, request.prompt, reference, language)
    return StudioAnswer(True, reply, accepted.request_id)


def settle_language(
    address: str, ours: str, said: tuple[str, ...], services: Services, *, remember: bool = True
) -> str:
    """The language to answer this person in (person_language.py), remembered for our
    number when their words chose a new one (and `remember`). Supabase failing costs only
    the choice: the answer is then in the language their words say, or the number's."""
    default = services.settings.default_language
    try:
        remembered = services.store.language_for(address, ours)
    except UpstreamError as exc:
        logs.warning("could not read the person's language", error=exc.message)
        return reply_language(said, None, default)
    language = reply_language(said, remembered, default)
    if remember and worth_remembering(language, said, remembered):
        try:
            services.store.remember_language(address, ours, language)
        except UpstreamError as exc:
            logs.warning("could not remember the person's language", error=exc.message)
    return language


def send_gallery_link(
    address: str, ours: str, new_link: bool, services: Services, language: str
) -> str:
    """The words with the person's private gallery link (NEWLINK: a new one)."""
    link = gallery_link_for(address, ours, services, new_link=new_link)
    if not link:
        return replies.no_gallery(language)
    return replies.gallery_link(link, new=new_link, language=language)


def answer_again(earlier: RequestRecord) -> StudioAnswer:
    """The answer to a message Twilio sent twice, as the first one was answered."""
    logs.info("Twilio sent this message again; answering as before", status=earlier.status)
    if earlier.status is RequestStatus.FAILED:
        return StudioAnswer(False, replies.earlier_request_failed(earlier.language), earlier.id)
    if earlier.kind is RequestKind.UNDO:
        return StudioAnswer(True, "", earlier.id)
    reply = replies.accepted_follow_up(
        earlier.kind, earlier.prompt, earlier.reference, earlier.language
    )
    return StudioAnswer(True, reply, earlier.id)


def picture_request_for(
    decision: MakePicture | SendAgain,
    sender: str,
    ours: str,
    channel: Channel,
    source_ref: str | None,
    language: str,
) -> PictureRequest:
    """The request a conversation's decision records (an UNDO resends a stored picture)."""
    if isinstance(decision, SendAgain):
        picture = decision.picture
        return PictureRequest(
            sender,
            ours,
            picture.prompt,
            channel,
            source_ref,
            kind=RequestKind.UNDO,
            parent_id=picture.id,
            source_path=picture.source_path,
            resend_path=picture.image_path,
            language=language,
        )
    return PictureRequest(
        sender,
        ours,
        decision.prompt,
        channel,
        source_ref,
        kind=decision.kind,
        parent_id=decision.parent.id if decision.parent else None,
        source_path=decision.source_path,
        language=language,
    )


# Enough of a person's history to find the picture before their last few changes.
CONVERSATION_ROWS = 50


def read_conversation(address: str, ours: str, services: Services) -> Conversation:
    settings = services.settings
    pending = services.store.pending_photo(address, ours)
    return Conversation(
        recent=services.store.recent_for(address, ours, CONVERSATION_ROWS),
        pending_photo=PendingPhoto(*pending) if pending else None,
        now=datetime.now(UTC),
        window=timedelta(minutes=settings.follow_up_minutes),
    )


def reply_for(reply: Reply, settings: Settings, language: str) -> str:
    """The words for a text that needs only a reply, in the person's language."""
    keyword = replies.keyword_in(language, settings)
    match reply.reason:
        case ReplyReason.HELP:
            return replies.help_text(keyword, settings.styles, language)
        case ReplyReason.STYLES:
            return replies.styles_list(keyword, settings.styles, language)
        case ReplyReason.EMPTY_PROMPT:
            return replies.empty_prompt(keyword, language)
        case ReplyReason.TOO_LONG:
            return replies.prompt_too_long(reply.length, settings.max_prompt_chars, language)
        case ReplyReason.NOTHING_TO_FOLLOW:
            return replies.nothing_to_follow(keyword, language)
        case ReplyReason.NOTHING_TO_UNDO:
            return replies.nothing_to_undo(language)
        case ReplyReason.STILL_MAKING:
            return replies.still_making(language)
    return replies.usage(keyword, language)


def store_photo(media: IncomingMedia, source_ref: str | None, services: Services) -> str:
    """Fetch a person's photo from Twilio, clean it (EXIF and GPS gone, scaled down) and keep
    it in Storage; its path, or `PhotoRefused`. The same message always gets the same path,
    so Twilio sending it twice stores one photo."""
    settings = services.settings
    fetched = fetch_media(
        media.url,
        session=services.http,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.secret("TWILIO_AUTH_TOKEN").reveal(),
        stand_in_base_url=settings.twilio_api_base_url,
        max_bytes=settings.photo_max_bytes,
        timeout_s=PHOTO_FETCH_TIMEOUT_S,
    )
    photo = prepare_photo(fetched.data, fetched.content_type, max_edge=settings.photo_max_edge)
    seed = source_ref or uuid.uuid4().hex
    token = hashlib.sha256(f"photo:{seed}:{media.url}".encode()).hexdigest()[:32]
    path = PictureStore.photo_path(token)
    services.pictures.upload(path, photo.jpeg)
    return path


def caller_trusted(request: PictureRequest, check: VoiceCallerCheck) -> bool:
    """Whether a picture may go to the number this request came from. A caller ID can be
    spoofed; a text's sender cannot be as easily (and a text gets a reply first)."""
    if request.channel is not Channel.VOICE or check is VoiceCallerCheck.OFF:
        return True
    return caller_attested(request.caller_verdict)


def stop_waiting_requests(address: str, ours: str, services: Services) -> None:
    """A STOP ends the person's requests still waiting for their picture, and cancels their
    generations where QStash has not run them yet (that still saves the picture's price)."""
    message_ids = services.store.fail_waiting(address, ours, "the person replied STOP")
    cancelled = sum(services.publisher.cancel(message) for message in message_ids if message)
    if message_ids:
        logs.info("STOP ended waiting requests", ended=len(message_ids), cancelled=cancelled)
