from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from shared.recipients import (
    DEFAULT_ALLOWED_COUNTRIES,
    RecipientCheck,
    RecipientProblem,
    check_recipient,
    explain,
    parse_country_list,
)

US_CA = DEFAULT_ALLOWED_COUNTRIES


def example(region: str, kind: int) -> str:
    """libphonenumber's own example number of that kind, in E.164."""
    number = phonenumbers.example_number_for_type(region, kind)
    assert number is not None, (region, kind)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def test_default_allowed_countries_are_the_us_and_canada() -> None:
    assert DEFAULT_ALLOWED_COUNTRIES == ("US", "CA")


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("+12125550123", "US"),
        ("+15017122661", "US"),  # Twilio's docs' example "To"
        (example("US", PhoneNumberType.MOBILE), "US"),
        ("+14165550123", "CA"),  # Toronto
        ("+16045550123", "CA"),  # Vancouver
        (example("CA", PhoneNumberType.MOBILE), "CA"),
    ],
)
def test_check_recipient_accepts_us_and_canadian_numbers(text: str, region: str) -> None:
    assert check_recipient(text, allowed_countries=US_CA) == RecipientCheck(text, None, region)


def test_check_recipient_accepts_nanp_numbers_as_fixed_line_or_mobile() -> None:
    # Why FIXED_LINE_OR_MOBILE must be accepted: it is what every US and Canadian number is.
    for region in US_CA:
        number = phonenumbers.parse(example(region, PhoneNumberType.MOBILE))
        assert phonenumbers.number_type(number) == PhoneNumberType.FIXED_LINE_OR_MOBILE
        assert check_recipient(example(region, PhoneNumberType.MOBILE), allowed_countries=US_CA).ok


def test_check_recipient_refuses_a_uk_mobile_unless_gb_is_allowed() -> None:
    refused = check_recipient("+447400123456", allowed_countries=US_CA)
    assert refused == RecipientCheck("+447400123456", RecipientProblem.COUNTRY_NOT_ALLOWED, "GB")
    assert not refused.ok
    accepted = check_recipient("+447400123456", allowed_countries=("US", "CA", "GB"))
    assert accepted == RecipientCheck("+447400123456", None, "GB")
    assert accepted.ok


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("+18762101234", "JM"),  # Jamaica: +1, but abroad
        ("+12423591234", "BS"),  # the Bahamas
        ("+17875550123", "PR"),  # Puerto Rico has a region of its own
        ("+447911123456", "GG"),  # a Guernsey mobile is not "GB"
    ],
)
def test_check_recipient_refuses_other_regions_sharing_a_calling_code(
    text: str, region: str
) -> None:
    allowed = ("US", "CA", "GB")
    assert check_recipient(text, allowed_countries=allowed) == RecipientCheck(
        text, RecipientProblem.COUNTRY_NOT_ALLOWED, region
    )
    assert check_recipient(text, allowed_countries=(*allowed, region)).ok


@pytest.mark.parametrize(
    ("text", "region"),
    [
        (example("US", PhoneNumberType.PREMIUM_RATE), "US"),  # +1 900
        ("+19005550123", "US"),
        (example("CA", PhoneNumberType.PREMIUM_RATE), "US"),  # +1 900 is NANP-wide: "US"
        (example("GB", PhoneNumberType.PREMIUM_RATE), "GB"),  # +44 90x
        ("+449091234567", "GB"),
        ("+448451234567", "GB"),  # UK 0845: PREMIUM_RATE to libphonenumber
        ("+448712345678", "GB"),  # UK 0871
        (example("DE", PhoneNumberType.PREMIUM_RATE), "DE"),
    ],
)
def test_check_recipient_refuses_premium_rate_numbers(text: str, region: str) -> None:
    assert phonenumbers.number_type(phonenumbers.parse(text)) == PhoneNumberType.PREMIUM_RATE
    for allowed in (US_CA, (*US_CA, region)):
        assert check_recipient(text, allowed_countries=allowed) == RecipientCheck(
            text, RecipientProblem.PREMIUM_OR_SHARED, region
        )


@pytest.mark.parametrize("region", ["AU", "DE", "FR"])  # 1300, 0180, 0884
def test_check_recipient_refuses_shared_cost_numbers(region: str) -> None:
    text = example(region, PhoneNumberType.SHARED_COST)
    assert phonenumbers.number_type(phonenumbers.parse(text)) == PhoneNumberType.SHARED_COST
    assert check_recipient(text, allowed_countries=(region,)) == RecipientCheck(
        text, RecipientProblem.PREMIUM_OR_SHARED, region
    )


# NANP-wide ranges (+1 800, +1 5XX) belong to no one country; phonenumbers calls them "US".
@pytest.mark.parametrize(
    ("region", "kind", "found_in"),
    [
        ("US", PhoneNumberType.TOLL_FREE, "US"),  # +1 800
        ("CA", PhoneNumberType.TOLL_FREE, "US"),
        ("US", PhoneNumberType.PERSONAL_NUMBER, "US"),  # +1 500
        ("CA", PhoneNumberType.PERSONAL_NUMBER, "US"),  # +1 521
        ("CA", PhoneNumberType.VOIP, "CA"),  # +1 600
        ("CA", PhoneNumberType.UAN, "CA"),  # 310-xxxx
        ("GB", PhoneNumberType.FIXED_LINE, "GB"),
        ("GB", PhoneNumberType.PERSONAL_NUMBER, "GB"),  # 070
        ("GB", PhoneNumberType.PAGER, "GB"),  # 076
        ("GB", PhoneNumberType.UAN, "GB"),  # 055
        ("GB", PhoneNumberType.VOIP, "GB"),  # 056
        ("DE", PhoneNumberType.VOICEMAIL, "DE"),
        ("AU", PhoneNumberType.TOLL_FREE, "AU"),
    ],
)
def test_check_recipient_refuses_numbers_that_are_not_mobiles(
    region: str, kind: int, found_in: str
) -> None:
    text = example(region, kind)
    assert phonenumbers.number_type(phonenumbers.parse(text)) == kind
    assert check_recipient(text, allowed_countries=(*US_CA, region)) == RecipientCheck(
        text, RecipientProblem.NOT_MOBILE, found_in
    )


def test_check_recipient_accepts_a_mobile_where_the_plan_keeps_mobiles_apart() -> None:
    text = example("DE", PhoneNumberType.MOBILE)
    assert check_recipient(text, allowed_countries=("DE",)) == RecipientCheck(text, None, "DE")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+1 212 555 0123#5", RecipientCheck("+12125550123", RecipientProblem.NOT_MOBILE, "US")),
        ("212-555-0123,5", RecipientCheck("+12125550123", RecipientProblem.NOT_MOBILE, "US")),
        ("+12125550123;ext=5", RecipientCheck(None, RecipientProblem.NOT_A_NUMBER, None)),
    ],
)
def test_check_recipient_refuses_a_number_with_an_extension(
    text: str, expected: RecipientCheck
) -> None:
    assert check_recipient(text, allowed_countries=US_CA, default_region="US") == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "+",
        "abc",
        "anonymous",
        "call me on 212 555 0123",
        "1-800-FLOWERS",  # phonenumbers would read the letters as keypad digits
        "WhatsApp:+12125550123",  # not Twilio's spelling: must not quietly become an SMS
        "tel:+12125550123",
        "+1 212 555 0123 ext 5",
        "whatsapp:",
        "2125550123",  # national, and no default region to read it in
        "+1 212 555 0123 / +1 212 555 0124",
    ],
)
def test_check_recipient_refuses_what_is_not_a_number(text: str) -> None:
    assert check_recipient(text, allowed_countries=US_CA) == RecipientCheck(
        None, RecipientProblem.NOT_A_NUMBER, None
    )


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("+15552001034", "+15552001034"),  # Twilio's docs' fictional numbers: area code 555
        ("+15551230001", "+15551230001"),
        ("+1 212 555 01234", "+121255501234"),  # a digit too many
        ("+1 976 234 5678", "+19762345678"),  # no such area code
        ("+447700900123", "+447700900123"),  # Ofcom's drama range
        ("+266696687", "+266696687"),  # Twilio's stand-in for a withheld caller ID
        ("12", "+112"),
    ],
)
def test_check_recipient_refuses_numbers_that_are_not_valid(text: str, address: str) -> None:
    check = check_recipient(text, allowed_countries=US_CA, default_region="US")
    assert check == RecipientCheck(address, RecipientProblem.NOT_VALID, None)


@pytest.mark.parametrize(
    ("text", "default_region"),
    [
        ("+12125550123", None),
        ("+1 212 555 0123", None),
        ("+1 (212) 555-0123", None),
        ("  +1-212-555-0123\n", None),
        ("+1\u00a0212\u2011555\u20110123", None),  # no-break space, non-breaking hyphens
        ("\uff0b\uff11 \uff12\uff11\uff12 \uff15\uff15\uff15 \uff10\uff11\uff12\uff13", None),
        ("(212) 555-0123", "US"),
        ("212-555-0123", "US"),
        ("212.555.0123", "US"),
        ("2125550123", "US"),
        ("1 212 555 0123", "US"),
        ("1-212-555-0123", "US"),
        ("011 1 212 555 0123", "US"),  # the US international prefix is 011
        ("001 212 555 0123", "GB"),  # 00 is, where the default region dials 00
        ("(212) 555-0123", "CA"),  # the default region only supplies the +1
    ],
)
def test_check_recipient_normalises_human_spellings_to_e164(
    text: str, default_region: str | None
) -> None:
    check = check_recipient(text, allowed_countries=US_CA, default_region=default_region)
    assert check == RecipientCheck("+12125550123", None, "US")


def test_check_recipient_reads_001_in_the_us_as_a_national_number() -> None:
    # phonenumbers knows only 011 as the US international prefix, so "001 ..." is no number.
    check = check_recipient("001 212 555 0123", allowed_countries=US_CA, default_region="US")
    assert check == RecipientCheck("+10012125550123", RecipientProblem.NOT_VALID, None)


def test_check_recipient_reads_a_national_number_in_the_default_region() -> None:
    check = check_recipient("07400 123456", allowed_countries=("GB",), default_region="GB")
    assert check == RecipientCheck("+447400123456", None, "GB")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("whatsapp:+12125550123", RecipientCheck("whatsapp:+12125550123", None, "US")),
        ("whatsapp:+1 (212) 555-0123", RecipientCheck("whatsapp:+12125550123", None, "US")),
        (" whatsapp:212-555-0123 ", RecipientCheck("whatsapp:+12125550123", None, "US")),
        (
            "whatsapp:+447400123456",
            RecipientCheck("whatsapp:+447400123456", RecipientProblem.COUNTRY_NOT_ALLOWED, "GB"),
        ),
        (
            "whatsapp:+19005550123",
            RecipientCheck("whatsapp:+19005550123", RecipientProblem.PREMIUM_OR_SHARED, "US"),
        ),
    ],
)
def test_check_recipient_keeps_the_whatsapp_prefix(text: str, expected: RecipientCheck) -> None:
    assert check_recipient(text, allowed_countries=US_CA, default_region="US") == expected


@pytest.mark.parametrize(
    ("text", "strict_problem"),
    [
        ("+15552001034", RecipientProblem.NOT_VALID),
        ("+15551230001", RecipientProblem.NOT_VALID),
        ("+15550000000", RecipientProblem.NOT_VALID),
        ("+15559999999", RecipientProblem.NOT_VALID),
        ("+15005550006", RecipientProblem.NOT_MOBILE),  # a PERSONAL_NUMBER to libphonenumber
        ("+15005550001", RecipientProblem.NOT_MOBILE),
        ("+15005550009", RecipientProblem.NOT_MOBILE),
    ],
)
def test_check_recipient_accepts_test_numbers_only_when_asked(
    text: str, strict_problem: RecipientProblem
) -> None:
    strict = check_recipient(text, allowed_countries=US_CA)
    assert strict.problem is strict_problem
    relaxed = check_recipient(text, allowed_countries=US_CA, allow_test_numbers=True)
    assert relaxed == RecipientCheck(text, None, "US")
    with_prefix = check_recipient(
        f"whatsapp:{text}", allowed_countries=US_CA, allow_test_numbers=True
    )
    assert with_prefix == RecipientCheck(f"whatsapp:{text}", None, "US")


def test_check_recipient_reads_test_numbers_in_human_spellings() -> None:
    check = check_recipient(
        "(555) 123-0001", allowed_countries=US_CA, default_region="US", allow_test_numbers=True
    )
    assert check == RecipientCheck("+15551230001", None, "US")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("+19005550123", RecipientProblem.PREMIUM_OR_SHARED),
        ("+447400123456", RecipientProblem.COUNTRY_NOT_ALLOWED),
        ("+18762101234", RecipientProblem.COUNTRY_NOT_ALLOWED),
        ("+18005550123", RecipientProblem.NOT_MOBILE),
        ("+15005550010", RecipientProblem.NOT_MOBILE),  # past Twilio's magic block
        ("+15002345678", RecipientProblem.NOT_MOBILE),
        ("+1555123000", RecipientProblem.NOT_VALID),  # a digit short of a 555 number
        ("+155512300012", RecipientProblem.NOT_VALID),  # a digit too many
        ("+19762345678", RecipientProblem.NOT_VALID),
        ("+445551234567", RecipientProblem.COUNTRY_NOT_ALLOWED),  # UK 055, not a test number
        ("+15551230001#5", RecipientProblem.NOT_VALID),  # an extension is no test number
        ("anonymous", RecipientProblem.NOT_A_NUMBER),
    ],
)
def test_check_recipient_with_test_numbers_still_refuses_the_rest(
    text: str, problem: RecipientProblem
) -> None:
    check = check_recipient(text, allowed_countries=US_CA, allow_test_numbers=True)
    assert check.problem is problem


def test_check_recipient_counts_test_numbers_as_american() -> None:
    check = check_recipient("+15551230001", allowed_countries=("CA",), allow_test_numbers=True)
    assert check == RecipientCheck("+15551230001", RecipientProblem.COUNTRY_NOT_ALLOWED, "US")


@pytest.mark.parametrize(
    ("allowed", "default_region", "named"),
    [
        (("us", "ca"), None, "us, ca"),
        (("US", "UK"), None, "UK"),
        (("US", "001"), None, "001"),
        (US_CA, "XX", "XX"),
        (US_CA, "us", "us"),
    ],
)
def test_check_recipient_refuses_unknown_region_codes_in_its_configuration(
    allowed: tuple[str, ...], default_region: str | None, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        check_recipient("+12125550123", allowed_countries=allowed, default_region=default_region)


@pytest.mark.parametrize(
    ("problem", "allowed", "sentence"),
    [
        (
            RecipientProblem.COUNTRY_NOT_ALLOWED,
            US_CA,
            "We can only send pictures to mobile numbers in the US and Canada.",
        ),
        (
            RecipientProblem.COUNTRY_NOT_ALLOWED,
            ("CA",),
            "We can only send pictures to mobile numbers in Canada.",
        ),
        (
            RecipientProblem.COUNTRY_NOT_ALLOWED,
            ("US", "CA", "GB", "FR", "CA"),
            "We can only send pictures to mobile numbers in the US, Canada, the UK and FR.",
        ),
        (
            RecipientProblem.NOT_MOBILE,
            ("US",),
            "That is not a mobile number: we can only send pictures to mobiles in the US.",
        ),
        (
            RecipientProblem.COUNTRY_NOT_ALLOWED,
            (),
            "We cannot send pictures to any country at the moment.",
        ),
    ],
)
def test_explain_names_the_allowed_countries(
    problem: RecipientProblem, allowed: tuple[str, ...], sentence: str
) -> None:
    assert explain(problem, allowed) == sentence


@pytest.mark.parametrize("problem", list(RecipientProblem))
def test_explain_has_its_own_sentence_for_every_problem(problem: RecipientProblem) -> None:
    sentence = explain(problem, US_CA)
    others = {explain(other, US_CA) for other in RecipientProblem if other is not problem}
    assert sentence.endswith(".") and sentence[0].isupper()
    assert sentence not in others


def test_explain_refers_premium_numbers_by_kind() -> None:
    assert "premium-rate" in explain(RecipientProblem.PREMIUM_OR_SHARED, US_CA)
    assert "country code" in explain(RecipientProblem.NOT_A_NUMBER, US_CA)


@pytest.mark.parametrize(
    ("text", "codes"),
    [
        ("US,CA", ("US", "CA")),
        ("us, ca", ("US", "CA")),
        (" US CA ", ("US", "CA")),
        ("CA,US,", ("CA", "US")),  # order kept, a trailing comma ignored
        ("US,CA,us", ("US", "CA")),
        ("GB", ("GB",)),
        ("US,CA,PR,GB", ("US", "CA", "PR", "GB")),
    ],
)
def test_parse_country_list_reads_region_codes(text: str, codes: tuple[str, ...]) -> None:
    assert parse_country_list(text) == codes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "names no country"),
        (" , ", "names no country"),
        ("US,XX", "XX is not a region code"),
        ("US,USA", "USA is not"),
        ("001", "001 is not"),
        ("US,UK", "the United Kingdom is GB"),
    ],
)
def test_parse_country_list_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_country_list(text)


def test_parse_country_list_names_only_the_bad_codes() -> None:
    with pytest.raises(ValueError) as caught:
        parse_country_list("US,ZZ,CA,QQ")
    assert str(caught.value).startswith("ALLOWED_COUNTRIES: ZZ, QQ is not a region code")
