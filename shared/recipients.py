"""Whether we may send a picture to a phone number. Pure functions: text in, `RecipientCheck` out.

Every picture we send is paid for, and SMS pumping makes that the attack: someone has us text
numbers "controlled by a specific mobile network operator" and takes "a share of the generated
revenue" [DOC twilio.com/docs/messaging/guides/preventing-messaging-fraud], at its worst
premium-rate numbers. So a number must parse, be one libphonenumber (`phonenumbers`) knows, be a
personal phone (`_PHONE_KINDS`), and be in one of the allowed countries: the country list does
most of the work, as pumping uses ordinary mobiles abroad too. A refusal's reason is a plain
enum; the caller maps it to an `errors.py` type and shows `explain()` to the person.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

from .records import WHATSAPP_PREFIX

# "MMS with Twilio is currently supported in the US and Canada" [DOC twilio.com/docs/glossary/
# what-is-mms]; elsewhere Twilio sends an SMS with a link instead, at that country's SMS price.
DEFAULT_ALLOWED_COUNTRIES = ("US", "CA")

# The kinds of number we send to. libphonenumber cannot tell a US or Canadian mobile from a
# landline (number portability mixes them in every exchange), so every ordinary NANP number is
# FIXED_LINE_OR_MOBILE; refusing it would refuse everyone. Elsewhere MOBILE is what MMS reaches.
# Everything else is refused, as NOT_MOBILE unless it is in `_PAID_BY_US_KINDS`:
# - FIXED_LINE: only plans that keep landlines apart have it (+44 20..., not +1), so it is
#   certainly a landline; MMS cannot reach one.
# - TOLL_FREE (+1 800/833/844/855/866/877/888): a business line. If it takes texts at all, it is
#   a texting platform, not someone who called us; no caller loses a picture [INFERRED].
# - VOIP: libphonenumber uses it only for non-geographic ranges (+1 600 in Canada, +44 56);
#   US VoIP numbers such as Google Voice are FIXED_LINE_OR_MOBILE and still accepted.
# - PERSONAL_NUMBER: "follow-me" numbers that forward to another line. UK 070 is a fraud range
#   ("an estimated minimum of 20% of 070 calls involved some form of fraudulent activity" [3P:
#   ofcom.org.uk, 2019-10-01]); NANP 5XX (+1 500, 521-533, ...) is non-geographic. Twilio's
#   magic +1 500 555 0006 is one of these, see below.
# - PAGER (+44 76), UAN (one number for a whole company, +44 03, +1 310-xxxx), VOICEMAIL (a
#   mailbox's direct number, +49 177 99...): no handset that shows a picture behind any of them.
# - UNKNOWN: libphonenumber calls a number valid exactly when its kind is known
#   (`is_valid_number_for_region`), so UNKNOWN is NOT_VALID and needs no reason of its own.
_PHONE_KINDS = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
# The recipient's operator charges more than a text costs and shares it with the line's owner:
# exactly what SMS pumping wants. In the UK, libphonenumber files 084x and 087x (often called
# "shared cost") under PREMIUM_RATE; SHARED_COST is e.g. Australia's 1300 or Germany's 0180.
_PAID_BY_US_KINDS = frozenset({PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST})

# Test numbers, which libphonenumber refuses or files as personal numbers: the whole +1 555
# area code, which our tests and the local stack use (phonenumbers 9.0 marks all of it invalid;
# that it is unassigned is [INFERRED]), and +1 500 555 0000-0009, where Twilio's "magic" numbers
# for test credentials live (+15005550006 as From [DOC twilio.com/docs/messaging/tutorials/
# automate-testing]; the To numbers that simulate failures are [UNCONFIRMED] beyond that block).
# They reach nobody, so they pass only with `allow_test_numbers`, never in production. Note that
# 555-01xx in a real area code (+1 212 555 0123, fiction's range) is valid to libphonenumber.
_TEST_NATIONAL_NUMBER = re.compile(r"555[0-9]{7}|500555000[0-9]")
# libphonenumber's main region for +1; test numbers count as American for the country check.
_TEST_NUMBER_REGION = "US"

# How explain() names the countries most likely to be allowed; others by their region code.
_COUNTRY_NAMES = {"US": "the US", "CA": "Canada", "GB": "the UK", "PR": "Puerto Rico"}


class RecipientProblem(StrEnum):
    """Why we will not send to a number (the caller maps these to `errors.py` types)."""

    NOT_A_NUMBER = "not_a_number"  # no phone number to read, or one spelled with letters
    NOT_VALID = "not_valid"  # no such number in its country's numbering plan
    PREMIUM_OR_SHARED = "premium_or_shared"  # premium-rate or shared-cost: pumping's targets
    COUNTRY_NOT_ALLOWED = "country_not_allowed"  # outside the allowed countries
    NOT_MOBILE = "not_mobile"  # toll-free, landline, pager, ...: not a phone MMS reaches


@dataclass(frozen=True)
class RecipientCheck:
    """The number in E.164 (with `whatsapp:` when it came with one), its region code, and what
    is wrong with it, if anything. `address` is None when nothing parsed; `region` is None then
    and when the number is not valid."""

    address: str | None
    problem: RecipientProblem | None
    region: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _is_test_number(number: phonenumbers.PhoneNumber) -> bool:
    return (
        number.country_code == 1
        and not number.extension
        and _TEST_NATIONAL_NUMBER.fullmatch(str(number.national_number)) is not None
    )


def _unknown_regions(regions: Iterable[str]) -> list[str]:
    return [region for region in regions if region not in phonenumbers.SUPPORTED_REGIONS]


def check_recipient(
    text: str,
    *,
    allowed_countries: Collection[str],
    default_region: str | None = None,
    allow_test_numbers: bool = False,
) -> RecipientCheck:
    """Whether we may send to `text`, and its E.164 form.

    `text` is E.164 or a human spelling ("+1 212 555 0123", "(212) 555-0123"); a national one
    needs `default_region`. Region codes are upper case, as `parse_country_list` gives them.
    `allow_test_numbers` also accepts Twilio's test numbers (+1 555..., +1 500 555 000x) as
    American: for the local stack only. Premium, foreign and other invalid numbers stay refused.

    Raises:
        ValueError: `default_region` or an allowed country is no region phonenumbers knows
            (a configuration mistake, not the sender's).
    """
    default = [] if default_region is None else [default_region]
    if unknown := _unknown_regions([*allowed_countries, *default]):
        raise ValueError(f"not a region code phonenumbers knows: {', '.join(unknown)}")
    spelled = text.strip()
    prefix = WHATSAPP_PREFIX if spelled.startswith(WHATSAPP_PREFIX) else ""
    spelled = spelled.removeprefix(prefix)
    # phonenumbers reads letters as keypad digits (1-800-FLOWERS) and skips words around a
    # number ("call 212..."); an address is digits and punctuation, so a letter means a typo or
    # a prefix we do not know ("WhatsApp:", "tel:"), which must not silently become a text.
    if any(ch.isalpha() for ch in spelled):
        return RecipientCheck(None, RecipientProblem.NOT_A_NUMBER, None)
    try:
        number = phonenumbers.parse(spelled, default_region)
    except NumberParseException:
        return RecipientCheck(None, RecipientProblem.NOT_A_NUMBER, None)
    address = prefix + phonenumbers.format_number(number, PhoneNumberFormat.E164)

    def outcome(problem: RecipientProblem | None, region: str | None) -> RecipientCheck:
        return RecipientCheck(address, problem, region)

    if allow_test_numbers and _is_test_number(number):
        allowed = _TEST_NUMBER_REGION in allowed_countries
        problem = None if allowed else RecipientProblem.COUNTRY_NOT_ALLOWED
        return outcome(problem, _TEST_NUMBER_REGION)
    if not phonenumbers.is_valid_number(number):
        return outcome(RecipientProblem.NOT_VALID, None)
    kind = phonenumbers.number_type(number)
    # A NANP number's region is its own country (+1 876 is JM, +1 787 PR), not "+1": the
    # "one ring" scams use Caribbean area codes because they look domestic [3P: fcc.gov,
    # "'One Ring' Phone Scam"]. NANP-wide ranges (+1 800, +1 900, +1 5XX) come back as "US".
    region = phonenumbers.region_code_for_number(number)
    # Premium before country, so the log names the pumping attempt wherever it points.
    if kind in _PAID_BY_US_KINDS:
        return outcome(RecipientProblem.PREMIUM_OR_SHARED, region)
    if region not in allowed_countries:
        return outcome(RecipientProblem.COUNTRY_NOT_ALLOWED, region)
    # An extension ("#5", ",5") sits behind a switchboard, which is no mobile.
    if kind not in _PHONE_KINDS or number.extension:
        return outcome(RecipientProblem.NOT_MOBILE, region)
    return outcome(None, region)


def normalise(text: str, default_region: str | None) -> str | None:
    """A human spelling of a valid number ("(212) 555-0123", "+1 212 555 0123") in E.164,
    keeping a whatsapp: prefix; None for anything else (then the caller's own check says what
    is wrong with it). Says nothing of whether we may send to it."""
    spelled = text.strip()
    prefix = WHATSAPP_PREFIX if spelled.startswith(WHATSAPP_PREFIX) else ""
    spelled = spelled.removeprefix(prefix)
    if any(ch.isalpha() for ch in spelled):
        return None
    try:
        number = phonenumbers.parse(spelled, default_region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return prefix + phonenumbers.format_number(number, PhoneNumberFormat.E164)


def country_list(allowed_countries: Iterable[str]) -> str:
    """ "the US", "the US and Canada", "the US, Canada and the UK", in the order given."""
    names = [_COUNTRY_NAMES.get(code, code) for code in dict.fromkeys(allowed_countries)]
    if len(names) < 2:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def explain(problem: RecipientProblem, allowed_countries: Collection[str]) -> str:
    """One sentence for the person who asked, naming the allowed countries where it helps."""
    countries = country_list(allowed_countries)
    if problem is RecipientProblem.NOT_A_NUMBER:
        return "That is not a phone number: write it with its country code, like +1 212 555 0123."
    if problem is RecipientProblem.NOT_VALID:
        return "That number does not exist: check its digits and its country code."
    if problem is RecipientProblem.PREMIUM_OR_SHARED:
        return "We do not send pictures to premium-rate or shared-cost numbers."
    if not countries:
        return "We cannot send pictures to any country at the moment."
    if problem is RecipientProblem.COUNTRY_NOT_ALLOWED:
        return f"We can only send pictures to mobile numbers in {countries}."
    return f"That is not a mobile number: we can only send pictures to mobiles in {countries}."


def parse_country_list(text: str) -> tuple[str, ...]:
    """The setting ALLOWED_COUNTRIES ("US,CA"; any case, commas or spaces) as region codes, in
    order and without repeats.

    Raises:
        ValueError: it names no country, or a code phonenumbers does not know (named).
    """
    codes = tuple(dict.fromkeys(code.upper() for code in re.split(r"[,\s]+", text) if code))
    if not codes:
        raise ValueError("ALLOWED_COUNTRIES names no country: give region codes like US,CA")
    if unknown := _unknown_regions(codes):
        # ISO 3166 and libphonenumber call the United Kingdom GB; UK is the usual slip.
        hint = " (the United Kingdom is GB)" if "UK" in unknown else ""
        raise ValueError(
            f"ALLOWED_COUNTRIES: {', '.join(unknown)} is not a region code phonenumbers"
            f" knows{hint}; give two-letter codes like US,CA"
        )
    return codes
