"""The catalogues: every language has every message, with the same placeholders and its own
plural categories; a missing or broken translation is caught (by the same check a new language
goes through); numbers and plurals follow each language's CLDR rules."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.catalogue import (
    CATALOGUES,
    LANGUAGES_DIR,
    REFERENCE_LANGUAGE,
    check_catalogue,
    check_catalogues,
    fold,
    language_named,
    language_of_country,
    load_catalogues,
    placeholders,
)
from shared.errors import ConfigError
from shared.intake import START_WORDS, STOP_WORDS
from shared.styles import DEFAULT_STYLES

LANGUAGES = list(CATALOGUES)
SAMPLE_VALUES = {
    "prompt": "x",
    "keyword": "DRAW",
    "link": "https://example.test/p/x",
    "length": "1,200",
    "style": "watercolor",
    "styles": "watercolor, oil",
    "languages": "en, es",
    "key": "2",
    "countries": "the US",
}


def test_six_languages_ship() -> None:
    assert LANGUAGES == ["en", "es", "fr", "de", "pt", "it"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_exists_in_every_language_with_its_placeholders(language: str) -> None:
    assert check_catalogue(CATALOGUES[language], CATALOGUES[REFERENCE_LANGUAGE]) == []


def test_the_catalogues_agree_with_each_other() -> None:
    """No key pressed, country, keyword or command word claimed by two languages (or two
    commands)."""
    assert check_catalogues(CATALOGUES.values()) == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_message_renders(language: str) -> None:
    book = CATALOGUES[language]
    for key, message in book.messages.items():
        if isinstance(message, str):
            text = book.text(key, **SAMPLE_VALUES)
        else:
            text = book.count(key, 1_000_000, **SAMPLE_VALUES)
        assert text.strip() and "{" not in text, (language, key)


def copy_of_catalogues(tmp_path: Path) -> Path:
    folder = tmp_path / "languages"
    shutil.copytree(LANGUAGES_DIR, folder)
    return folder


def edit(folder: Path, language: str, old: str, new: str) -> None:
    path = folder / f"{language}.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems_of(folder: Path) -> list[str]:
    return check_catalogues(load_catalogues(folder).values())


def line_of(folder: Path, language: str, key: str) -> str:
    path = folder / f"{language}.toml"
    return next(
        line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith(f"{key} ")
    )


def test_a_missing_translation_fails_the_check(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    edit(folder, "es", line_of(folder, "es", "caption") + "\n", "")
    assert problems_of(folder) == ["es: messages.caption is missing"]


def test_a_lost_or_invented_placeholder_fails_the_check(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    edit(folder, "fr", "{link}", "")
    edit(folder, "de", "{prompt}", "{promt}")
    problems = problems_of(folder)
    assert problems == [
        "fr: messages.gallery_link has ['NEWLINK'], wants ['NEWLINK', 'link']",
        "de: messages.caption has ['AGAIN', 'promt'], wants ['AGAIN', 'prompt']",
    ]


def test_a_missing_plural_category_fails_the_check(tmp_path: Path) -> None:
    """Spanish has a `many` form (1 000 000 de imágenes) that English does not."""
    folder = copy_of_catalogues(tmp_path)
    line = line_of(folder, "es", "limit_per_day")
    many = line[line.index("many = ") : line.index('", other')] + '", '
    edit(folder, "es", many, "")
    assert problems_of(folder) == ["es: messages.limit_per_day lacks ['many']"]


def test_a_message_english_does_not_have_fails_the_check(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    edit(folder, "it", "[messages]\n", '[messages]\nsurprise = "Sorpresa!"\n')
    assert problems_of(folder) == ["it: messages.surprise is not in en"]


def test_a_word_that_means_two_commands_fails_the_check(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    edit(folder, "pt", 'undo = ["', 'undo = ["OTRA", "')  # OTRA is Spanish for AGAIN
    assert problems_of(folder) == ["pt: OTRA means both again and undo"]


def test_a_menu_key_or_country_claimed_twice_fails_the_check(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    edit(folder, "it", 'menu_key = "6"', 'menu_key = "5"')
    edit(folder, "it", 'countries = ["IT"', 'countries = ["BR", "IT"')
    assert sorted(problems_of(folder)) == [
        "country BR is both it's and pt's",
        "menu key 5 is both it's and pt's",
    ]


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('gather_language = "es-US"', 'gather_language = "es"', "'es' is not a language-COUNTRY"),
        ('keyword = "DIBUJA"', 'keyword = "DIBUJA YA"', "the keyword must be one word"),
        ('menu_key = "2"', 'menu_key = "22"', "menu_key must be one digit"),
        ('help = ["AYUDA"]', "help = []", "words.help must be a list"),
        ("[words]", "[palabras]", "has no 'words'"),
    ],
)
def test_a_malformed_catalogue_is_refused_when_it_is_read(
    tmp_path: Path, old: str, new: str, problem: str
) -> None:
    folder = copy_of_catalogues(tmp_path)
    edit(folder, "es", old, new)
    with pytest.raises(ConfigError, match=problem):
        load_catalogues(folder)


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    (folder / "nl.toml").write_text("[language\nname = 'Nederlands'", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"nl\.toml cannot be read as TOML"):
        load_catalogues(folder)


def test_without_english_there_is_nothing_to_check_against(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    (folder / "en.toml").unlink()
    assert problems_of(folder) == ["there is no en.toml to check the others against"]


def test_twilios_keywords_and_the_language_keywords_are_no_command_words() -> None:
    reserved = STOP_WORDS | START_WORDS | {book.words.keyword for book in CATALOGUES.values()}
    for book in CATALOGUES.values():
        for command, words in book.words.commands.items():
            clash = set(words) & reserved
            assert not clash, (book.code, command, clash)


@pytest.mark.parametrize(
    ("language", "count", "category"),
    [
        ("en", 1, "one"),
        ("en", 0, "other"),
        ("fr", 0, "one"),  # French counts zero as singular
        ("pt", 1, "one"),
        ("es", 1_000_000, "many"),  # "1 millón de imágenes"
        ("it", 2, "other"),
        ("de", 1_000_000, "other"),
    ],
)
def test_plurals_follow_each_languages_cldr_rule(language: str, count: int, category: str) -> None:
    assert CATALOGUES[language].plural_category(count) == category


def test_counts_are_written_as_each_language_writes_numbers() -> None:
    assert CATALOGUES["en"].count("limit_per_day", 1).startswith("You've had 1 picture today")
    assert "1,000 pictures" in CATALOGUES["en"].count("limit_per_day", 1000)
    assert "1.000" in CATALOGUES["de"].count("limit_per_day", 1000)
    assert "1\u202f000" in CATALOGUES["fr"].count("limit_per_day", 1000)


def test_command_words_are_compared_without_case_accents_or_punctuation() -> None:
    assert fold("¡Atrás!") == "ATRAS"
    assert fold("  noch   mal ") == "NOCH MAL"


@pytest.mark.parametrize(
    ("words", "code"),
    [("es", "es"), ("Español", "es"), ("espanol", "es"), ("SPANISH", "es"), ("Deutsch", "de")],
)
def test_a_language_is_named_by_code_own_name_or_english_name(words: str, code: str) -> None:
    assert language_named(words) == code


def test_an_unknown_name_or_country_names_no_language() -> None:
    assert language_named("klingon") is None
    assert language_of_country("JP") is None
    assert language_of_country(None) is None
    assert language_of_country("mx") == "es"


def test_the_shown_command_word_keeps_its_accents() -> None:
    """Messages write the first word as the catalogue does; matching folds it."""
    for book in CATALOGUES.values():
        for command in book.words.commands:
            assert fold(book.words.first(command)) == book.words.commands[command][0]


def test_placeholders_are_read_from_format_strings() -> None:
    assert placeholders("Ref {reference}: {prompt} {AGAIN}") == {"reference", "prompt", "AGAIN"}


def test_a_style_name_given_to_two_styles_fails_the_check(tmp_path: Path) -> None:
    folder = copy_of_catalogues(tmp_path)
    edit(folder, "fr", 'oil = "huile"', 'oil = "acuarela"')  # Spanish for watercolor
    assert problems_of(folder) == ["fr: the style name acuarela is both watercolor and oil"]


@pytest.mark.parametrize(
    ("said", "style"),
    [("acuarela", "watercolor"), ("Óleo", "oil"), ("OLBILD", "oil"), ("fumetto", "comic")],
)
def test_a_style_is_found_by_its_name_in_any_language(said: str, style: str) -> None:
    found = DEFAULT_STYLES.find(said)
    assert found is not None and found.name == style


def test_every_shipped_style_has_a_name_in_every_language_but_english() -> None:
    for book in CATALOGUES.values():
        if book.code != REFERENCE_LANGUAGE:
            assert set(book.style_names) == set(DEFAULT_STYLES.names), book.code
