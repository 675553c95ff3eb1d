"""Reading a text's language from its own words: each language's keyword and command words,
LANGUAGE <code>, and a call's words in the call's language. And the pure choice of the
language to answer in (person_language.py)."""

from __future__ import annotations

import pytest

from shared.catalogue import CATALOGUES
from shared.intake import Command, interpret_message, spoken_command
from shared.person_language import first_guess, reply_language, worth_remembering

LANGUAGES = list(CATALOGUES)


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_languages_keyword_is_a_prompt_in_that_language(language: str) -> None:
    keyword = CATALOGUES[language].words.keyword
    command = interpret_message(f"{keyword.lower()}: un zorro", "DRAW", 100)
    assert (command.command, command.prompt, command.languages) == (
        Command.PROMPT,
        "un zorro",
        (language,),
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_each_languages_command_words_are_commands_in_that_language(language: str) -> None:
    words = CATALOGUES[language].words
    expected = {
        "again": Command.AGAIN,
        "undo": Command.UNDO,
        "styles": Command.STYLES,
        "pictures": Command.PICTURES,
        "new_link": Command.NEW_LINK,
        "help": Command.HELP,
    }
    for name, command in expected.items():
        for word in words.commands[name]:
            read = interpret_message(f" {word.title()}! ", "DRAW", 100)
            assert read.command is command, (language, word)
            if word not in ("HELP", "INFO"):  # Twilio's own, in every language
                assert language in read.languages, (language, word)


def test_a_word_several_languages_share_names_all_of_them() -> None:
    read = interpret_message("galería", "DRAW", 100)
    assert read.command is Command.PICTURES
    assert {"es", "pt"} <= set(read.languages)


def test_sms_keyword_belongs_to_the_numbers_own_language() -> None:
    read = interpret_message("PINTA un gato", "PINTA", 100, default_language="it")
    assert (read.prompt, read.languages) == ("un gato", ("it",))


def test_without_a_keyword_a_languages_keyword_only_says_the_language() -> None:
    read = interpret_message("DIBUJA un zorro", "", 100)
    assert (read.command, read.prompt, read.languages) == (
        Command.PROMPT,
        "DIBUJA un zorro",
        ("es",),
    )
    plain = interpret_message("un zorro", "", 100)
    assert plain.languages == ()


def test_an_empty_or_long_prompt_after_a_keyword_keeps_its_language() -> None:
    assert interpret_message("ZEICHNE", "DRAW", 100).languages == ("de",)
    too_long = interpret_message("DESSINE " + "x" * 30, "DRAW", 20)
    assert (too_long.command, too_long.languages) == (Command.TOO_LONG, ("fr",))


@pytest.mark.parametrize(
    ("body", "chosen"),
    [
        ("LANGUAGE es", ("es",)),
        ("idioma Español", ("es",)),
        ("Langue: français", ("fr",)),
        ("SPRACHE de", ("de",)),
        ("Deutsch", ("de",)),
        ("italiano!", ("it",)),
        ("LANGUAGE klingon", ()),
        ("LANGUAGE", ()),
    ],
)
def test_language_sets_the_language_by_code_or_name(body: str, chosen: tuple[str, ...]) -> None:
    read = interpret_message(body, "DRAW", 100)
    assert (read.command, read.languages) == (Command.LANGUAGE, chosen)


def test_a_sentence_that_starts_with_a_language_name_is_no_command() -> None:
    read = interpret_message("DRAW english breakfast", "DRAW", 100)
    assert (read.command, read.prompt) == (Command.PROMPT, "english breakfast")
    assert interpret_message("english breakfast", "DRAW", 100).command is Command.HELP


def test_stop_words_stay_twilios_whatever_the_language() -> None:
    assert interpret_message("stop", "DRAW", 100).command is Command.STOP
    assert interpret_message("PARAR", "DRAW", 100).command is Command.HELP  # no opt-out word


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_callers_new_picture_words_are_read_in_the_calls_language(language: str) -> None:
    words = CATALOGUES[language].words
    for phrase in words.spoken_new:
        heard = spoken_command(f"{phrase.capitalize()} a lighthouse", language)
        assert (heard.command, heard.prompt) == (Command.PROMPT, "a lighthouse"), phrase
    again = spoken_command(words.commands["again"][0].lower(), language)
    assert again.command is Command.AGAIN
    change = spoken_command("make it blue", language)
    assert (change.command, change.follow_up, change.languages) == (
        Command.HELP,
        "make it blue",
        (language,),
    )


# --- the language to answer in ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("said", "remembered", "expected"),
    [
        ((), None, "en"),  # nothing known: the number's language
        ((), "de", "de"),  # what they chose before
        (("es",), "de", "es"),  # their words now
        (("es", "pt"), "pt", "pt"),  # a shared word keeps their choice
        (("es", "pt"), "de", "es"),
        (("xx",), None, "en"),  # not a language we have
        ((), "xx", "en"),  # a language since removed
    ],
)
def test_reply_language(said: tuple[str, ...], remembered: str | None, expected: str) -> None:
    assert reply_language(said, remembered, "en") == expected


def test_a_language_is_remembered_only_when_words_chose_a_new_one() -> None:
    assert worth_remembering("es", ("es",), None)
    assert worth_remembering("es", ("es", "pt"), "de")
    assert not worth_remembering("es", ("es",), "es")
    assert not worth_remembering("de", (), None)
    assert not worth_remembering("pt", ("es",), "pt")


@pytest.mark.parametrize(
    ("remembered", "country", "expected"),
    [
        ("it", "MX", "it"),  # chosen before beats the country
        (None, "MX", "es"),
        (None, "BR", "pt"),
        (None, "JP", "fr"),  # a country no catalogue lists: the number's language
        (None, None, "fr"),
        ("xx", "DE", "de"),
    ],
)
def test_a_callers_first_guess(remembered: str | None, country: str | None, expected: str) -> None:
    assert first_guess(remembered, country, "fr") == expected
