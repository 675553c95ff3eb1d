"""The ways a person asks for a picture by phone, turned into one `PictureRequest`.

- A Twilio Studio flow (voice: the caller's words; messaging: the text) posts a signed form to
  `generate` and reads our JSON answer (`accepted`, `message`) to say or text it.
- Twilio's incoming-message webhook (SMS and WhatsApp) posts a signed form and gets TwiML back.
Both end in `accept_picture_request`; the picture goes back to whoever called or wrote, from
the number they contacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import logs, replies
from .accept import accept_picture_request
from .acceptance_decisions import Acceptance, earlier_failed, refusal_reply
from .deadline import Deadline
from .errors import EmptyPrompt, HiddenNumber, PromptTooLong, UpstreamError
from .intake import (
    Command,
    PictureRequest,
    caller_attested,
    check_pair,
    interpret_message,
    parse_address,
    parse_studio_request,
    twilio_sid,
)
from .records import WHATSAPP_PREFIX, Channel, OptOutSource
from .services import Services
from .settings import VoiceCallerCheck


@dataclass(frozen=True)
class StudioAnswer:
    """What the Studio flow reads back from `generate` (as `widgets.<name>.parsed`)."""

    accepted: bool
    message: str
    request_id: str | None = None

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"accepted": self.accepted, "message": self.message}
        if self.request_id:
            body["request_id"] = self.request_id
        return body


def answer_studio(
    form: Mapping[str, str], services: Services, deadline: Deadline | None = None
) -> StudioAnswer:
    """Handle a Studio flow's request: `prompt` from a call, or `body` from a message.

    Problems the person can fix come back as a message for the flow to say or text; outages
    raise, so the flow takes its `failed` branch and apologises.
    """
    if "body" in form:
        try:
            sender = parse_address(form.get("to"), "to")
        except HiddenNumber:
            return StudioAnswer(False, replies.hidden_number())
        return _answer_text(
            sender=sender,
            ours=parse_address(form.get("from"), "from"),
            body=form.get("body", ""),
            source_ref=twilio_sid(form.get("source_ref")),
            opt_out_type=None,
            services=services,
            deadline=deadline,
        )
    settings = services.settings
    try:
        request = parse_studio_request(form, settings.max_prompt_chars)
    except HiddenNumber:
        return StudioAnswer(False, replies.hidden_number())
    except EmptyPrompt:
        return StudioAnswer(False, replies.empty_prompt(""))
    except PromptTooLong as exc:
        return StudioAnswer(False, replies.prompt_too_long(exc.length, settings.max_prompt_chars))
    if not caller_trusted(request, settings.voice_caller_check):
        # Nothing recorded, nothing spent: texting proves the number better than a call.
        logs.info("caller ID not attested", verdict=request.caller_verdict or "none")
        return StudioAnswer(False, replies.text_us_instead(settings.sms_keyword))
    accepted = accept_picture_request(request, services, deadline)
    if accepted.outcome is Acceptance.OPTED_OUT:
        return StudioAnswer(False, replies.opted_out_by_voice())
    if refusal := refusal_reply(accepted, settings):
        return StudioAnswer(False, refusal)
    if earlier_failed(accepted):
        return StudioAnswer(False, replies.earlier_request_failed(), accepted.request_id)
    return StudioAnswer(True, replies.accepted_by_voice(), accepted.request_id)


def answer_incoming_message(
    form: Mapping[str, str], services: Services, deadline: Deadline | None = None
) -> str | None:
    """Handle Twilio's incoming-message webhook; return the reply text (None: no reply)."""
    try:
        sender = parse_address(form.get("From"), "From")
    except HiddenNumber:
        return replies.hidden_number()
    answer = _answer_text(
        sender=sender,
        ours=parse_address(form.get("To"), "To"),
        body=form.get("Body", ""),
        source_ref=twilio_sid(form.get("MessageSid")),
        opt_out_type=form.get("OptOutType") or None,
        services=services,
        deadline=deadline,
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
) -> StudioAnswer:
    """A text message from `sender` to our number `ours`: a prompt, a keyword, or neither."""
    check_pair(sender, ours)
    settings = services.settings
    command = interpret_message(body, settings.sms_keyword, settings.max_prompt_chars, opt_out_type)
    logs.info("incoming message", command=command.command.value, sender=sender)
    if command.command in (Command.STOP, Command.START):
        # Twilio itself confirms STOP/START to the person; we only remember it.
        stop = command.command is Command.STOP
        services.store.set_opt_out(sender, ours, opted_out=stop, source=OptOutSource.KEYWORD)
        if stop:
            stop_waiting_requests(sender, ours, services)
        return StudioAnswer(False, "")
    if command.command is Command.HELP:
        return StudioAnswer(False, replies.usage(settings.sms_keyword))
    if command.command is Command.EMPTY_PROMPT:
        return StudioAnswer(False, replies.empty_prompt(settings.sms_keyword))
    if command.command is Command.TOO_LONG:
        limit = settings.max_prompt_chars
        return StudioAnswer(False, replies.prompt_too_long(command.length, limit))

    assert command.prompt is not None
    channel = Channel.WHATSAPP if sender.startswith(WHATSAPP_PREFIX) else Channel.SMS
    request = PictureRequest(sender, ours, command.prompt, channel, source_ref)
    try:
        accepted = accept_picture_request(request, services, deadline)
    except UpstreamError:
        # Recorded as failed (or never recorded); the person is told right here.
        return StudioAnswer(False, replies.cannot_take_request())
    if accepted.outcome is Acceptance.OPTED_OUT:
        return StudioAnswer(False, "")  # Twilio would refuse any reply; they must text START
    if refusal := refusal_reply(accepted, settings):
        return StudioAnswer(False, refusal)
    if earlier_failed(accepted):
        return StudioAnswer(False, replies.earlier_request_failed(), accepted.request_id)
    reply = replies.accepted_by_text(command.prompt, accepted.reference or "")
    return StudioAnswer(True, reply, accepted.request_id)


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
