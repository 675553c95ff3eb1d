"""The languages Picture Line speaks: one data file per language in `shared/languages/`.

Each file (`en.toml`, `es.toml`, ...) holds everything said in that language:

- `[language]`: its name in itself, the key a caller presses to choose it, the countries whose
  callers hear it first, and how Twilio speaks and hears it (a `<Say>` voice and language, a
  `<Gather>` speech language);
- `[words]`: the keyword (DRAW, DIBUJA...) and the whole-message commands (HELP, AGAIN, ...);
- `[messages]`: every sentence, as a Python format string. `{prompt}`, `{link}`... are the
  message's own values; `{AGAIN}`, `{UNDO}`, `{STYLES}`, `{NEWLINK}`, `{LANGUAGE}` are this
  language's first word for that command. A message that counts something is a table of CLDR
  plural categories (`one`, `many`, `other`...), chosen by `{count}` with Babel's plural rules.

English (`en`) is the reference: `check_catalogue` says what another language lacks or gets
wrong (a missing message, a placeholder lost or invented, a plural category missing), and the
tests run it on every file. Adding a language is adding its file (then `make flow`).
"""

from __future__ import annotations

import re
import string
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import ConfigError

LANGUAGES_DIR = Path(__file__).with_name("languages")
# The reference catalogue, and the language of anything with no person behind it.
REFERENCE_LANGUAGE = "en"
_CODE = re.compile(r"[a-z]{2,3}")
# Twilio wants a full BCP-47 tag for <Gather> and <Say>: "en" is refused, "en-US" taken
# [DOC twilio.com/docs/api/errors/13512, 13331].
_LOCALE_TAG = re.compile(r"[a-z]{2,3}-[A-Z]{2}")
_COUNTRY = re.compile(r"[A-Z]{2}")
# The commands whose words a language lists; `{AGAIN}` etc. in a message is the first word.
COMMAND_WORDS = ("help", "again", "undo", "styles", "pictures", "new_link", "language")
_WORD_PLACEHOLDERS = {
    "HELP": "help",
    "AGAIN": "again",
    "UNDO": "undo",
    "STYLES": "styles",
    "PICTURES": "pictures",
    "NEWLINK": "new_link",
    "LANGUAGE": "language",
}


def fold(text: str) -> str:
    """`text` as command words are compared: upper case, accents gone, one space between
    words ("¡Atrás!" → "ATRAS")."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[\W_]+", " ", bare).split()).upper()


@dataclass(frozen=True)
class Speech:
    """How Twilio speaks (`<Say>` voice and language) and hears (`<Gather>` language)."""

    voice: str  # "Polly.Joanna"
    voice_language: str  # "en-US"
    gather_language: str  # "en-US"


@dataclass(frozen=True)
class Words:
    keyword: str  # "DRAW"
    commands: Mapping[str, tuple[str, ...]]  # "again" -> ("AGAIN", "ANOTHER", ...), folded
    shown: Mapping[str, str]  # "undo" -> "ZURÜCK": the first word, as messages write it
    spoken_new: tuple[str, ...]  # on a call, what starts a new picture ("new picture of")
    hints_picture: str  # speech hints for a new picture's description
    hints_change: str  # speech hints for a change

    def first(self, command: str) -> str:
        return self.shown[command]


@dataclass(frozen=True)
class Phrasebook:
    """Everything one language says, and how to say numbers in it."""

    code: str
    name: str  # in itself: "English", "Español"
    english_name: str  # "Spanish"
    menu_key: str  # the key a caller presses for it
    countries: frozenset[str]
    speech: Speech
    words: Words
    messages: Mapping[str, str | Mapping[str, str]] = field(repr=False)
    # The style presets' names in this language ("watercolor" -> "acuarela"); a style it
    # does not name (an operator's own) keeps its name.
    style_names: Mapping[str, str] = field(default_factory=dict, repr=False)

    def style_name(self, name: str) -> str:
        return self.style_names.get(name, name)

    def text(self, key: str, /, **values: object) -> str:
        """Message `key`, its placeholders filled with `values` and this language's words."""
        template = self.messages[key]
        if not isinstance(template, str):
            raise KeyError(f"{key} counts something: use count()")
        return template.format_map(self._values(values))

    def count(self, key: str, count: int, /, **values: object) -> str:
        """Message `key` in the plural form `count` takes here, `{count}` written as numbers
        are written here (1,000 / 1.000 / 1 000)."""
        forms = self.messages[key]
        if isinstance(forms, str):
            raise KeyError(f"{key} does not count anything: use text()")
        form = forms.get(self.plural_category(count), forms["other"])
        return form.format_map(self._values({**values, "count": self.number(count)}))

    def number(self, value: int | float) -> str:
        from babel.numbers import format_decimal  # loaded on first use, not at start

        return str(format_decimal(value, locale=self.code))

    def plural_category(self, count: int) -> str:
        return str(self._plural_rule(count))

    @cached_property
    def _plural_rule(self) -> Any:
        from babel.core import Locale

        return Locale.parse(self.code).plural_form

    def plural_categories(self) -> frozenset[str]:
        """The CLDR categories this language's plural rule can choose ("other" always)."""
        return frozenset(self._plural_rule.tags) | {"other"}

    def _values(self, values: Mapping[str, object]) -> dict[str, object]:
        words = {name: self.words.first(command) for name, command in _WORD_PLACEHOLDERS.items()}
        return {**words, **values}


def _read(path: Path) -> Phrasebook:
    """One catalogue file, or `ConfigError` saying what is wrong with its shape."""
    code = path.stem
    if not _CODE.fullmatch(code):
        raise ConfigError(f"{path.name}: name a catalogue by its language code, e.g. es.toml")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path.name} cannot be read as TOML: {exc}") from exc
    try:
        about, words, messages = data["language"], data["words"], data["messages"]
        speech = Speech(
            voice=str(about["voice"]),
            voice_language=str(about["voice_language"]),
            gather_language=str(about["gather_language"]),
        )
        commands = {name: _word_list(words[name], f"words.{name}") for name in COMMAND_WORDS}
        book = Phrasebook(
            code=code,
            name=str(about["name"]),
            english_name=str(about["english_name"]),
            menu_key=str(about["menu_key"]),
            countries=frozenset(str(country) for country in about["countries"]),
            speech=speech,
            words=Words(
                keyword=fold(str(words["keyword"])),
                commands=commands,
                shown={name: str(words[name][0]).upper() for name in COMMAND_WORDS},
                spoken_new=tuple(str(phrase) for phrase in words["spoken_new"]),
                hints_picture=str(words["hints_picture"]),
                hints_change=str(words["hints_change"]),
            ),
            messages=_messages(messages, path.name),
            style_names=_style_names(data.get("styles", {}), path.name),
        )
    except KeyError as exc:
        raise ConfigError(f"{path.name} has no {exc.args[0]!r}") from exc
    _check_shape(book, path.name)
    return book


def _word_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise ConfigError(f"{where} must be a list of at least one word")
    return tuple(fold(word) for word in value)


def _messages(table: Any, name: str) -> dict[str, str | Mapping[str, str]]:
    messages: dict[str, str | Mapping[str, str]] = {}
    for key, value in table.items():
        if isinstance(value, str):
            messages[key] = value
        elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            messages[key] = dict(value)
        else:
            raise ConfigError(f"{name}: messages.{key} must be text or a table of plural forms")
    return messages


def _style_names(table: Any, name: str) -> dict[str, str]:
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigError(f"{name}: [styles] maps a style's name to its name in this language")
    return {str(style): local.strip().lower() for style, local in table.items()}


def _check_shape(book: Phrasebook, name: str) -> None:
    speech = book.speech
    for tag in (speech.voice_language, speech.gather_language):
        if not _LOCALE_TAG.fullmatch(tag):
            raise ConfigError(f"{name}: {tag!r} is not a language-COUNTRY tag like en-US")
    if not book.menu_key.isdigit() or len(book.menu_key) != 1:
        raise ConfigError(f"{name}: menu_key must be one digit")
    if not all(_COUNTRY.fullmatch(country) for country in book.countries):
        raise ConfigError(f"{name}: countries are ISO 3166 codes like US")
    if not book.words.keyword.isalpha() or " " in book.words.keyword:
        raise ConfigError(f"{name}: the keyword must be one word")


def placeholders(template: str) -> frozenset[str]:
    return frozenset(
        field_name for _, field_name, _, _ in string.Formatter().parse(template) if field_name
    )


def check_catalogue(book: Phrasebook, reference: Phrasebook) -> list[str]:
    """What `book` lacks or gets wrong against the reference language's catalogue: every
    message present, each with the reference's placeholders (no more, no fewer), and a
    counting message with every plural category its language has."""
    problems: list[str] = []
    for key, wanted in reference.messages.items():
        have = book.messages.get(key)
        if have is None:
            problems.append(f"{book.code}: messages.{key} is missing")
            continue
        if isinstance(wanted, str) != isinstance(have, str):
            problems.append(f"{book.code}: messages.{key} must be like {reference.code}'s")
            continue
        wanted_names = placeholders(wanted if isinstance(wanted, str) else wanted["other"])
        forms = {"": have} if isinstance(have, str) else dict(have)
        if not isinstance(have, str):
            categories = book.plural_categories()
            if missing := categories - forms.keys():
                problems.append(f"{book.code}: messages.{key} lacks {sorted(missing)}")
            if extra := forms.keys() - categories:
                problems.append(f"{book.code}: messages.{key} has no use for {sorted(extra)}")
        for category, form in forms.items():
            where = f"messages.{key}" + (f".{category}" if category else "")
            names = placeholders(form)
            if names != wanted_names:
                problems.append(
                    f"{book.code}: {where} has {sorted(names)}, wants {sorted(wanted_names)}"
                )
    problems += [
        f"{book.code}: messages.{key} is not in {reference.code}"
        for key in book.messages.keys() - reference.messages.keys()
    ]
    return problems


def check_catalogues(books: Iterable[Phrasebook]) -> list[str]:
    """Every problem of a set of catalogues: each against English, and between them (a key
    pressed for two languages, a country or a command word claimed by two)."""
    books = list(books)
    by_code = {book.code: book for book in books}
    reference = by_code.get(REFERENCE_LANGUAGE)
    if reference is None:
        return [f"there is no {REFERENCE_LANGUAGE}.toml to check the others against"]
    problems = [problem for book in books for problem in check_catalogue(book, reference)]
    problems += _clashes("menu key", ((b.menu_key, b.code) for b in books))
    problems += _clashes("country", ((c, b.code) for b in books for c in b.countries))
    problems += _clashes("keyword", ((b.words.keyword, b.code) for b in books))
    named: dict[str, str] = {}
    for book in books:
        for style, local in book.style_names.items():
            if (first := named.setdefault(fold(local), style)) != style:
                problems.append(f"{book.code}: the style name {local} is both {first} and {style}")
    meanings: dict[str, str] = {}
    for book in books:
        for command, words in book.words.commands.items():
            for word in words:
                if (meaning := meanings.setdefault(word, command)) != command:
                    problems.append(f"{book.code}: {word} means both {meaning} and {command}")
    return problems


def _clashes(what: str, pairs: Iterable[tuple[str, str]]) -> list[str]:
    owner: dict[str, str] = {}
    problems = []
    for value, code in pairs:
        if (first := owner.setdefault(value, code)) != code:
            problems.append(f"{what} {value} is both {first}'s and {code}'s")
    return problems


def load_catalogues(directory: Path = LANGUAGES_DIR) -> dict[str, Phrasebook]:
    """Every `<code>.toml` in `directory`, English first, then by menu key."""
    books = [_read(path) for path in sorted(directory.glob("*.toml"))]
    books.sort(key=lambda book: (book.code != REFERENCE_LANGUAGE, book.menu_key))
    return {book.code: book for book in books}


# The catalogues that ship with the code, read once per instance (six small files).
CATALOGUES = load_catalogues()


def phrasebook(code: str | None) -> Phrasebook:
    """The catalogue for `code`, or the reference language's for an unknown or empty one."""
    return CATALOGUES.get(code or "") or CATALOGUES[REFERENCE_LANGUAGE]


def is_language(code: str) -> bool:
    return code in CATALOGUES


def language_named(words: str) -> str | None:
    """The code of the language `words` names: its code ("es"), its name in itself
    ("español", any case or accents) or its English name ("Spanish")."""
    return _LANGUAGE_NAMES.get(fold(words))


_LANGUAGE_NAMES = {
    name: book.code
    for book in CATALOGUES.values()
    for name in (book.code.upper(), fold(book.name), fold(book.english_name))
}


def style_aliases() -> dict[str, str]:
    """Every language's name for a style preset, folded, to the preset's own name."""
    return {
        fold(local): style
        for book in CATALOGUES.values()
        for style, local in book.style_names.items()
    }


def language_of_country(country: str | None) -> str | None:
    """The language whose catalogue lists `country` (ISO 3166, as Twilio's FromCountry)."""
    wanted = (country or "").strip().upper()
    return next((b.code for b in CATALOGUES.values() if wanted in b.countries), None)
