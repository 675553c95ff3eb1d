"""Which language to answer a person in. Pure: the facts in, a catalogue code out.

A person's language is what their own words say (the keyword they wrote, a command word, the
call's menu), else what they chose before for our number, else the number's DEFAULT_LANGUAGE.
A word several languages share (GALERIA) keeps the one they chose before, if it is among them.
"""

from __future__ import annotations

from .catalogue import is_language, language_of_country


def reply_language(said: tuple[str, ...], remembered: str | None, default: str) -> str:
    """The language of the answer to words in the languages `said` (most likely first)."""
    known = tuple(code for code in said if is_language(code))
    if remembered in known:
        return remembered
    if known:
        return known[0]
    return remembered if remembered and is_language(remembered) else default


def worth_remembering(language: str, said: tuple[str, ...], remembered: str | None) -> bool:
    """Whether to keep `language` as the person's: their words chose it, and it is new."""
    return bool(said) and language in said and language != remembered


def first_guess(remembered: str | None, country: str | None, default: str) -> str:
    """The language a caller hears first: the one they chose before, else their country's
    (Twilio's FromCountry), else the number's."""
    if remembered and is_language(remembered):
        return remembered
    return language_of_country(country) or default
