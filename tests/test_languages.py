"""Texts in every language, end to end on the local stack: the keyword of a language sets the
language of the reply, the picture's caption and a failure notice; the language is remembered
for a follow-up without a keyword; LANGUAGE <code> sets it by hand; the gallery page speaks it;
the sweep tells a stuck request's person in its language (test_sweep.py: crash recovery finds
a caption in the request's language). Parametrized over the catalogues, so
a seventh language is covered by adding its file."""

from __future__ import annotations

import re
from collections.abc import Callable
from xml.etree import ElementTree

import pytest
from markupsafe import escape  # as the pages escape text (Jinja)

from devstack.call import send_text
from devstack.stack_client import (
    StackClient,
    age,
    latest_request,
    pictures_to,
    queued_row,
    run_sweep,
    signed_post,
)
from devstack.stack_client import (
    text_reply as twiml_reply,
)
from devstack.vendor_calls import prompt_in as vendor_prompt_in
from shared import replies
from shared.catalogue import CATALOGUES, phrasebook
from shared.records import FailureReason, RequestKind, reference_for
from shared.styles import DEFAULT_STYLES

pytestmark = pytest.mark.stack
LANGUAGES = list(CATALOGUES)


def prompt_in(language: str, tag: str = "") -> str:
    return f"{vendor_prompt_in(language)} {tag}".strip()


def text_reply(stack: StackClient, caller: str, body: str, **form: str) -> str:
    """The words of our TwiML answer to `caller` texting `body` ("" for no message)."""
    answer = ElementTree.fromstring(twiml_reply(stack, caller, body, **form))  # noqa: S314 - ours
    return "".join(message.text or "" for message in answer.iter("Message"))


def keyword_of(language: str) -> str:
    return phrasebook(language).words.keyword


def requested(stack: StackClient, caller: str) -> dict[str, object]:
    row = latest_request(stack, caller)
    assert row is not None
    return row


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_text_with_a_languages_keyword_is_answered_and_captioned_in_it(
    stack: StackClient, caller: str, language: str
) -> None:
    prompt = prompt_in(language)
    reply = text_reply(stack, caller, f"{keyword_of(language)} {prompt}")
    row = requested(stack, caller)
    reference = reference_for(str(row["id"]))
    assert reply == replies.accepted_by_text(prompt, reference, language)
    assert (row["prompt"], row["language"]) == (prompt, language)  # drawn from as written
    done = stack.wait_finished(str(row["id"]))
    assert done["status"] == "delivered"
    [picture] = pictures_to(stack, caller)
    assert picture["body"] == replies.picture_caption(prompt, reference, language)


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_failure_notice_is_written_in_the_language_of_the_request(
    stack: StackClient, caller: str, language: str
) -> None:
    prompt = prompt_in(language, f"refused {language}")
    stack.fault("openai", kind="moderation_blocked", times=-1, prompt_contains=prompt)
    text_reply(stack, caller, f"{keyword_of(language)} {prompt}")
    row = stack.wait_finished(str(requested(stack, caller)["id"]))
    assert (row["status"], row["failure_reason"]) == ("failed", "refused")
    notice = stack.messages_to(caller)[-1]
    expected = replies.failure_notice(
        FailureReason.REFUSED, prompt, reference_for(str(row["id"])), language
    )
    assert notice["body"] == expected
    assert not notice.get("media")


def test_a_follow_up_without_a_keyword_is_answered_in_the_remembered_language(
    stack: StackClient, caller: str
) -> None:
    text_reply(stack, caller, f"DIBUJA {prompt_in('es')}")
    stack.wait_finished(str(requested(stack, caller)["id"]))
    reply = text_reply(stack, caller, "hazlo de noche")
    change = requested(stack, caller)
    reference = reference_for(str(change["id"]))
    assert reply == replies.accepted_follow_up(
        RequestKind.REFINE, "hazlo de noche", reference, "es"
    )
    assert (change["kind"], change["language"]) == ("refine", "es")
    done = stack.wait_finished(str(change["id"]))
    assert pictures_to(stack, caller)[-1]["body"] == replies.picture_caption(
        "hazlo de noche", reference, "es"
    )
    assert done["status"] == "delivered"
    # A command word of the language keeps it; Twilio's own HELP keyword says nothing about it.
    help_es = replies.help_text("DIBUJA", DEFAULT_STYLES, "es")
    assert text_reply(stack, caller, "ayuda") == help_es
    assert text_reply(stack, caller, "HELP") == help_es


def test_language_code_sets_the_language_by_hand_and_a_keyword_changes_it_again(
    stack: StackClient, caller: str
) -> None:
    assert text_reply(stack, caller, "LANGUAGE fr") == replies.language_set("fr")
    assert text_reply(stack, caller, "STYLES") == replies.styles_list(
        "DESSINE", DEFAULT_STYLES, "fr"
    )
    assert text_reply(stack, caller, "Sprache Deutsch") == replies.language_set("de")
    assert text_reply(stack, caller, "LANGUAGE xx") == replies.language_unknown("de")
    text_reply(stack, caller, f"DISEGNA {prompt_in('it')}")
    row = requested(stack, caller)
    assert row["language"] == "it"
    stack.wait_finished(str(row["id"]))
    # The last language their words chose is theirs: a change without a keyword is Italian.
    reply = text_reply(stack, caller, "di notte")
    change = requested(stack, caller)
    assert change["language"] == "it"
    reference = reference_for(str(change["id"]))
    assert reply == replies.accepted_follow_up(RequestKind.REFINE, "di notte", reference, "it")


def test_the_language_is_remembered_per_pair_of_numbers(stack: StackClient, caller: str) -> None:
    text_reply(stack, caller, "IDIOMA español")
    rows = stack.sql(
        "select address, sender, language from public.person_languages where address = %s", caller
    )
    assert rows == [{"address": caller, "sender": stack.env["DEMO_FROM"], "language": "es"}]
    # Another number of ours has not heard from them: it answers in its own language.
    other = text_reply(stack, caller, "HELP", To="+15005550009")
    assert other == replies.help_text("DRAW", DEFAULT_STYLES, "en")


def test_the_gallery_page_speaks_its_owners_language(stack: StackClient, caller: str) -> None:
    text_reply(stack, caller, f"DESENHE {prompt_in('pt')}")
    stack.wait_finished(str(requested(stack, caller)["id"]))
    reply = text_reply(stack, caller, "MINHAS IMAGENS")
    link = re.search(r"https?://\S+", reply)
    assert link is not None, reply
    assert reply == replies.gallery_link(link[0], new=False, language="pt")
    page = stack.http.get(link[0], timeout=10)
    assert page.status_code == 200
    book = phrasebook("pt")
    assert '<html lang="pt">' in page.text
    for key in ("page_title", "page_intro", "page_download", "page_delete"):
        assert escape(book.text(key)) in page.text, key
    assert escape(prompt_in("pt")) in page.text


def test_an_operator_may_choose_the_language_of_one_picture(
    stack: StackClient, caller: str
) -> None:
    body = {"to": caller, "from": stack.env["DEMO_FROM"], "prompt": "un chat", "language": "fr"}
    headers = {"X-Operator-Key": stack.env["OPERATOR_KEY"]}
    answer = stack.http.post(stack.env["GENERATE_URL"], json=body, headers=headers, timeout=10)
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    stack.wait_finished(request_id)
    [picture] = pictures_to(stack, caller)
    assert picture["body"] == replies.picture_caption("un chat", reference_for(request_id), "fr")
    # The operator's choice is not the person's: nothing is remembered for them.
    assert stack.sql("select 1 from public.person_languages where address = %s", caller) == []
    wrong = stack.http.post(
        stack.env["GENERATE_URL"], json={**body, "language": "xx"}, headers=headers, timeout=10
    )
    assert wrong.status_code == 400
    assert "'language' must be one of en, es" in wrong.json()["error"]


def test_the_sweeps_failure_notice_is_in_the_requests_language(
    stack: StackClient, caller: str
) -> None:
    request_id = queued_row(stack, caller, "ein verlorener Drachen")
    stack.sql("update public.requests set language = 'de' where id = %s", request_id)
    age(stack, request_id, 90)
    run_sweep(stack)
    row = stack.row(request_id)
    assert row["status"] == "failed"
    [notice] = stack.messages_to(caller)
    expected = replies.failure_notice(
        FailureReason(row["failure_reason"]),
        "ein verlorener Drachen",
        reference_for(request_id),
        "de",
    )
    assert notice["body"] == expected


def test_a_number_whose_language_is_spanish_answers_a_new_texter_in_spanish(
    stack: StackClient, caller: str, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("DEFAULT_LANGUAGE", "es")
    assert text_reply(stack, caller, "hola") == replies.usage("DIBUJA", "es")
    assert text_reply(stack, caller, "HELP") == replies.help_text("DIBUJA", DEFAULT_STYLES, "es")
    # A keyword of another language still wins, and is remembered.
    text_reply(stack, caller, f"DRAW {prompt_in('en')}")
    assert requested(stack, caller)["language"] == "en"
    assert text_reply(stack, caller, "STYLES") == replies.styles_list("DRAW", DEFAULT_STYLES, "en")


def test_a_language_that_cannot_be_read_costs_only_the_choice_of_language(
    stack: StackClient, caller: str
) -> None:
    """Supabase failing on the person's language: the text is still taken, answered in the
    language its own words say."""
    stack.fault("supabase", service="rest", kind="503", times=-1, path_contains="person_languages")
    prompt = prompt_in("fr", "sans langue")
    reply = text_reply(stack, caller, f"DESSINE {prompt}")
    row = requested(stack, caller)
    assert row["language"] == "fr"
    assert reply == replies.accepted_by_text(prompt, reference_for(str(row["id"])), "fr")
    assert stack.wait_finished(str(row["id"]))["status"] == "delivered"


def test_the_wall_speaks_the_numbers_language(
    stack: StackClient, function_setting: Callable[[str, str], None]
) -> None:
    function_setting("WALL", "on")
    function_setting("DEFAULT_LANGUAGE", "it")
    page = stack.http.get(f"{stack.env['GALLERY_URL']}/wall", timeout=10)
    assert page.status_code == 200
    assert '<html lang="it">' in page.text
    assert escape(phrasebook("it").text("wall_tagline")) in page.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_text_through_the_studio_flow_is_answered_in_its_language(
    stack: StackClient, caller: str, language: str
) -> None:
    prompt = prompt_in(language, "studio")
    execution = send_text(stack.env, f"{keyword_of(language)} {prompt}", caller)
    assert execution.status == "ended", execution.error
    row = requested(stack, caller)
    # Studio's send-message widget sent the reply: Twilio holds it as a message to the texter.
    [sent] = [m for m in stack.messages_to(caller) if not m["media"]]
    assert sent["body"] == replies.accepted_by_text(prompt, reference_for(str(row["id"])), language)


def test_styles_are_named_and_chosen_in_the_persons_language(
    stack: StackClient, caller: str
) -> None:
    book = phrasebook("es")
    assert text_reply(stack, caller, "ESTILOS") == replies.styles_list(
        "DIBUJA", DEFAULT_STYLES, "es"
    )
    text_reply(stack, caller, "DIBUJA acuarela: un faro")
    first = requested(stack, caller)
    watercolor = DEFAULT_STYLES.find("watercolor")
    assert watercolor is not None
    assert first["prompt"] == watercolor.draw_prompt("un faro")
    stack.wait_finished(str(first["id"]))
    text_reply(stack, caller, book.style_name("oil").upper())  # "ÓLEO": restyle the last one
    change = requested(stack, caller)
    oil = DEFAULT_STYLES.find("oil")
    assert oil is not None
    assert (change["kind"], change["prompt"]) == ("refine", oil.edit_instruction())


def test_a_language_that_cannot_be_remembered_still_answers_in_it(
    stack: StackClient, caller: str
) -> None:
    """Only the write fails: the reply is in the words' language, nothing is kept."""
    stack.fault(
        "supabase",
        service="rest",
        kind="503",
        times=-1,
        method="POST",
        path_contains="person_languages",
    )
    assert text_reply(stack, caller, "LANGUAGE pt") == replies.language_set("pt")
    stack.clear_faults()
    assert stack.sql("select 1 from public.person_languages where address = %s", caller) == []


def test_a_callers_first_guess_survives_a_store_that_cannot_be_read(
    stack: StackClient, caller: str
) -> None:
    lookup = {"lookup": "1", "to": caller, "from": stack.env["DEMO_FROM"], "country": "MX"}
    assert signed_post(stack, lookup).json()["language"] == "es"
    stack.fault("supabase", service="rest", kind="503", times=-1, path_contains="requests")
    answer = signed_post(stack, lookup).json()
    assert (answer["language"], answer["has_picture"]) == ("es", False)
    assert signed_post(stack, {**lookup, "country": ""}).json()["language"] == "en"
