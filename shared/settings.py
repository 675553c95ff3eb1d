"""One typed settings object, built once per instance from the environment.

Plain settings are read and validated here, all at once, so a misconfigured deployment fails on
its first request with a message naming every problem. Secrets are only named here; their values
are fetched on first use (see `secrets.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from . import image_models
from .catalogue import CATALOGUES, REFERENCE_LANGUAGE, is_language
from .errors import ConfigError
from .image_models import GPT_IMAGE_2_PRICES, Quality, TokenPrices
from .recipients import DEFAULT_ALLOWED_COUNTRIES, parse_country_list
from .records import WHATSAPP_PREFIX
from .secrets import Secret, SecretSource
from .styles import DEFAULT_STYLES, StyleBook, load_styles

DEFAULT_QSTASH_URL = "https://qstash.upstash.io"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
# The low-latency current model: a caller waits for it (see README "Which model").
DEFAULT_IMAGE_MODEL = "gpt-image-2.6-flare"
DEFAULT_COMPRESSION = 80
# QStash's largest message on the Free plan [DOC pricing]; a longer callback is truncated.
FREE_PLAN_MESSAGE_BYTES = 1_000_000
# Free allows 3 retries [3P]; a higher Upstash-Retries may be refused [UNCONFIRMED].
FREE_PLAN_MAX_RETRIES = 3
_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-f]{32}$")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_ADDRESS = re.compile(r"^(whatsapp:)?\+[1-9][0-9]{6,14}$")

# Typed, so a misspelt name fails mypy rather than a request.
SecretName = Literal[
    "QSTASH_TOKEN",
    "QSTASH_CURRENT_SIGNING_KEY",
    "QSTASH_NEXT_SIGNING_KEY",
    "OPENAI_API_KEY",
    "SUPABASE_SECRET_KEY",
    "TWILIO_AUTH_TOKEN",
    "OPERATOR_KEY",
    "SAFETY_IDENTIFIER_SALT",
    "STUDIO_FLOW_KEY",
]
SECRET_NAMES: tuple[SecretName, ...] = get_args(SecretName)


class VoiceCallerCheck(StrEnum):
    """Which callers get a picture by voice (VOICE_CALLER_CHECK)."""

    ATTESTED = "attested"  # only caller IDs their carrier vouches for (SHAKEN/STIR A or B)
    OFF = "off"  # every caller ID is trusted


class WallMode(StrEnum):
    """The live wall (`gallery`'s /wall) for events (WALL)."""

    OFF = "off"
    ON = "on"  # every new picture appears
    APPROVE = "approve"  # a picture appears once an operator approves it in the console


@dataclass(frozen=True)
class ImageOptions:
    """What we ask the image provider for."""

    model: str = DEFAULT_IMAGE_MODEL
    size: str = "1024x1024"
    quality: Quality = "low"
    compression: int = DEFAULT_COMPRESSION
    # Asked for instead, once per request, when the provider says `model` is gone.
    fallback_model: str | None = None
    prices: TokenPrices = GPT_IMAGE_2_PRICES
    # For edits (refine, restyle): a model stronger at edits, if you choose one [3P: Sunburst].
    edit_model: str | None = None

    @property
    def model_for_edits(self) -> str:
        return self.edit_model or self.model


@dataclass(frozen=True)
class Limits:
    """What the service may spend. Counts are over rolling windows; None switches one off."""

    per_number_hour: int | None = 5
    per_number_day: int | None = 20
    global_day: int | None = 500
    budget_usd: float | None = None
    allowlist: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        limits: dict[str, object] = {
            "per_number_hour": self.per_number_hour,
            "per_number_day": self.per_number_day,
            "global_day": self.global_day,
            "budget_usd": self.budget_usd,
            "allowlist": list(self.allowlist),
        }
        return {k: v for k, v in limits.items() if v is not None}


@dataclass(frozen=True)
class Settings:
    composite_url: str
    supabase_url: str
    twilio_account_sid: str
    generate_url: str | None = None
    gallery_url: str | None = None  # the `gallery` function (PICTURES links); none: no gallery
    qstash_url: str = DEFAULT_QSTASH_URL
    openai_base_url: str = DEFAULT_OPENAI_BASE_URL
    twilio_api_base_url: str | None = None
    image: ImageOptions = ImageOptions()
    generation_retries: int = 2
    generation_timeout_s: int = 300
    callback_retries: int = FREE_PLAN_MAX_RETRIES
    qstash_max_message_bytes: int = FREE_PLAN_MESSAGE_BYTES
    qstash_max_retries: int = FREE_PLAN_MAX_RETRIES
    bucket: str = "pictures"
    frame_path: str | None = None
    brand_name: str = "PICTURE LINE"
    jpeg_quality: int = 85
    # What a carrier takes safely: US carriers cap MMS media at 600 KB on some senders [DOC].
    mms_max_bytes: int = 600_000
    mms_max_edge: int = 1536
    claim_lease_s: int = 180
    max_prompt_chars: int = 1000
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    sms_keyword: str = "DRAW"
    # The language of the number: what a caller hears first and a new texter reads, until
    # their own words (or the call's menu) say otherwise. A catalogue's code (catalogue.py).
    default_language: str = REFERENCE_LANGUAGE
    voice_caller_check: VoiceCallerCheck = VoiceCallerCheck.ATTESTED
    # Where pictures may go: MMS works in the US and Canada only [DOC Twilio].
    allowed_countries: tuple[str, ...] = DEFAULT_ALLOWED_COUNTRIES
    # Local stacks only: Twilio's test numbers (+1 555..., +1 500 555 000x) count as US mobiles.
    allow_test_recipients: bool = False
    whatsapp: bool = True
    limits: Limits = Limits()
    # Local experiments only: skip QStash and Twilio signature checks. Refused unless every
    # public URL is on this machine (see load_settings).
    insecure_skip_signatures: bool = False
    moderation: bool = False
    sweep_after_minutes: int = 60
    retention_days: int | None = 30
    # A PostgREST call answers in milliseconds; 4 s keeps Studio's path inside its 10 s.
    store_timeout_s: float = 4.0
    mms_cost_usd: float = 0.02
    # How long after a picture a reply still changes it (conversation.py).
    follow_up_minutes: int = 30
    styles: StyleBook = DEFAULT_STYLES
    # What a person's photo is scaled to before it is stored and sent to the provider.
    photo_max_edge: int = 1536
    photo_max_bytes: int = 10_000_000
    wall: WallMode = WallMode.OFF
    console_session_hours: int = 12
    secrets: SecretSource | None = None

    @property
    def estimated_cost_usd(self) -> float:
        """What a request should cost (picture + MMS), counted against the daily budget
        until the provider's answer says what the picture really cost."""
        image = self.image
        picture = image_models.estimated_image_cost(image.size, image.quality, image.prices)
        return round(picture + self.mms_cost_usd, 4)

    @property
    def estimated_edit_cost_usd(self) -> float:
        """The same for an edit (a refinement, a restyled photo): its input picture is billed."""
        image = self.image
        picture = image_models.estimated_edit_cost(image.size, image.quality, image.prices)
        return round(picture + self.mms_cost_usd, 4)

    def secret(self, name: SecretName) -> Secret:
        if name not in SECRET_NAMES:
            raise KeyError(name)
        if self.secrets is None:
            raise ConfigError("settings were built without a secret source")
        return Secret(name, self.secrets)


class _Reader:
    """Collects every problem so one error can list them all."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.environ.get(name, "").strip()
        if not value:
            if required:
                self.problems.append(f"{name} is required")
            return default
        return value

    def url(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.text(name, default, required=required)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.problems.append(f"{name} must be an http(s) URL, got {value!r}")
        return value.rstrip("/") if not parts.query else value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name} must be a whole number, got {raw!r}")
            return default
        if not low <= value <= high:
            self.problems.append(f"{name} must be between {low} and {high}, got {value}")
        return value

    def flag(self, name: str, *, default: bool = False) -> bool:
        raw = (self.text(name) or ("true" if default else "false")).lower()
        if raw not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
            self.problems.append(f"{name} must be on or off, got {raw!r}")
        return raw in ("true", "on", "1", "yes")

    def optional_number(self, name: str, default: float | None) -> float | None:
        """A number, or None when set to "off"."""
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() == "off":
            return None
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name} must be a number or 'off', got {raw!r}")
            return default
        if value < 0:
            self.problems.append(f"{name} must not be negative")
        return value

    def optional_count(self, name: str, default: int | None) -> int | None:
        value = self.optional_number(name, default)
        return None if value is None else int(value)

    def addresses(self, name: str) -> tuple[str, ...]:
        raw = self.text(name) or ""
        numbers = tuple(part.strip() for part in raw.split(",") if part.strip())
        for number in numbers:
            if not _ADDRESS.match(number) or number.startswith(WHATSAPP_PREFIX):
                self.problems.append(f"{name} must list E.164 numbers, got {number!r}")
        return numbers

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.text(name, default) or default
        if value not in allowed:
            self.problems.append(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
            return default
        return value


def _countries(read: _Reader) -> tuple[str, ...]:
    raw = read.text("ALLOWED_COUNTRIES")
    if raw is None:
        return DEFAULT_ALLOWED_COUNTRIES
    try:
        return parse_country_list(raw)
    except ValueError as exc:
        read.problems.append(f"ALLOWED_COUNTRIES: {exc}")
        return DEFAULT_ALLOWED_COUNTRIES


def _styles(read: _Reader) -> StyleBook:
    path = read.text("STYLES_FILE")
    try:
        return load_styles(Path(path)) if path else DEFAULT_STYLES
    except ConfigError as exc:
        read.problems.append(exc.message)
        return DEFAULT_STYLES


def _image_options(read: _Reader, message_limit: int) -> ImageOptions:
    """The image request, checked against the models and against QStash's message limit."""
    model = read.text("IMAGE_MODEL") or ImageOptions.model
    fallback = read.text("IMAGE_MODEL_FALLBACK")
    edit_model = read.text("IMAGE_EDIT_MODEL")
    size = read.text("IMAGE_SIZE") or ImageOptions.size
    quality_text = read.text("IMAGE_QUALITY") or ImageOptions.quality
    quality: Quality = image_models.parse_quality(model, quality_text) or ImageOptions.quality
    chosen_models = (
        ("IMAGE_MODEL", model),
        ("IMAGE_MODEL_FALLBACK", fallback),
        ("IMAGE_EDIT_MODEL", edit_model),
    )
    for name, chosen in chosen_models:
        if chosen is None:
            continue
        if chosen in image_models.RETIRED_MODELS:
            instead = image_models.RETIRED_MODELS[chosen]
            read.problems.append(f"{name} {chosen} was shut down by OpenAI; use {instead}")
        if problem := image_models.size_problem(chosen, size):
            read.problems.append(f"IMAGE_SIZE {size} does not work with {chosen}: {problem}")
        if image_models.parse_quality(chosen, quality_text) is None:
            allowed = ", ".join(image_models.qualities_for(chosen))
            read.problems.append(f"IMAGE_QUALITY must be one of {allowed} for {chosen}")
    if fallback == model:
        read.problems.append("IMAGE_MODEL_FALLBACK must differ from IMAGE_MODEL")
    prices = GPT_IMAGE_2_PRICES
    if raw_prices := read.text("IMAGE_TOKEN_PRICES_USD"):
        try:
            prices = TokenPrices.parse(raw_prices)
        except ValueError as exc:
            read.problems.append(f"IMAGE_TOKEN_PRICES_USD must be {exc}, got {raw_prices!r}")
    fits = image_models.highest_fitting_compression(size, quality, message_limit)
    if read.text("IMAGE_COMPRESSION") is None:
        # Left to us: the default, lowered as far as needed to fit the plan's message size.
        compression = min(DEFAULT_COMPRESSION, fits or DEFAULT_COMPRESSION)
    else:
        compression = read.integer("IMAGE_COMPRESSION", DEFAULT_COMPRESSION, 10, 100)
    if fits is None or compression > fits:
        can = f"at most IMAGE_COMPRESSION={fits}" if fits else "no compression fits"
        read.problems.append(
            f"a {size} {quality} picture would not fit QStash's {message_limit}-byte message"
            f" limit (QSTASH_MAX_MESSAGE_BYTES; the Free plan's is {FREE_PLAN_MESSAGE_BYTES}):"
            f" {can}; choose a smaller IMAGE_SIZE or set your plan's limit"
        )
    return ImageOptions(model, size, quality, compression, fallback, prices, edit_model)


# Each setting's default is its field's in the dataclasses above, written once.
DEFAULTS = Settings


def _keyword_of(language: str) -> str:
    book = CATALOGUES.get(language)
    return book.words.keyword if book else DEFAULTS.sms_keyword


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from the environment, or raise `ConfigError` listing every problem.
    Each default is the field's own (`DEFAULTS`)."""
    read = _Reader(environ)
    default_language = environ.get("DEFAULT_LANGUAGE", DEFAULTS.default_language).strip().lower()
    composite_url = read.url("COMPOSITE_URL", required=True)
    if composite_url and urlsplit(composite_url).query:
        read.problems.append("COMPOSITE_URL must not have a query string")
    project = read.text("GOOGLE_CLOUD_PROJECT")
    message_limit = read.integer(
        "QSTASH_MAX_MESSAGE_BYTES", DEFAULTS.qstash_max_message_bytes, 100_000, 100_000_000
    )
    image = _image_options(read, message_limit)
    settings = Settings(
        composite_url=composite_url or "",
        supabase_url=read.url("SUPABASE_URL", required=True) or "",
        twilio_account_sid=read.text("TWILIO_ACCOUNT_SID", required=True) or "",
        generate_url=read.url("GENERATE_URL"),
        gallery_url=read.url("GALLERY_URL"),
        qstash_url=read.url("QSTASH_URL", DEFAULT_QSTASH_URL) or DEFAULT_QSTASH_URL,
        openai_base_url=read.url("OPENAI_BASE_URL", DEFAULT_OPENAI_BASE_URL)
        or DEFAULT_OPENAI_BASE_URL,
        twilio_api_base_url=read.url("TWILIO_API_BASE_URL"),
        image=image,
        generation_retries=read.integer("GENERATION_RETRIES", DEFAULTS.generation_retries, 0, 20),
        generation_timeout_s=read.integer(
            "GENERATION_TIMEOUT_SECONDS", DEFAULTS.generation_timeout_s, 1, 900
        ),
        callback_retries=read.integer("CALLBACK_RETRIES", DEFAULTS.callback_retries, 0, 20),
        qstash_max_message_bytes=message_limit,
        qstash_max_retries=read.integer("QSTASH_MAX_RETRIES", DEFAULTS.qstash_max_retries, 0, 100),
        bucket=read.text("SUPABASE_BUCKET") or DEFAULTS.bucket,
        frame_path=read.text("FRAME_PATH"),
        brand_name=read.text("BRAND_NAME") or DEFAULTS.brand_name,
        jpeg_quality=read.integer("JPEG_QUALITY", DEFAULTS.jpeg_quality, 50, 95),
        mms_max_bytes=read.integer("MMS_MAX_BYTES", DEFAULTS.mms_max_bytes, 50_000, 5_000_000),
        mms_max_edge=read.integer("MMS_MAX_EDGE", DEFAULTS.mms_max_edge, 256, 4096),
        claim_lease_s=read.integer("CLAIM_LEASE_SECONDS", DEFAULTS.claim_lease_s, 30, 3600),
        max_prompt_chars=read.integer("MAX_PROMPT_CHARS", DEFAULTS.max_prompt_chars, 1, 4000),
        twilio_from_number=read.text("TWILIO_FROM_NUMBER"),
        twilio_messaging_service_sid=read.text("TWILIO_MESSAGING_SERVICE_SID"),
        # An empty SMS_KEYWORD makes every message a prompt; unset, it is the keyword of the
        # number's language (DRAW, DIBUJA...).
        sms_keyword=environ.get("SMS_KEYWORD", _keyword_of(default_language)).strip().upper(),
        default_language=default_language,
        allowed_countries=_countries(read),
        allow_test_recipients=read.flag("ALLOW_TEST_RECIPIENTS"),
        whatsapp=read.flag("WHATSAPP", default=DEFAULTS.whatsapp),
        voice_caller_check=VoiceCallerCheck(
            read.choice(
                "VOICE_CALLER_CHECK",
                DEFAULTS.voice_caller_check.value,
                tuple(check.value for check in VoiceCallerCheck),
            )
        ),
        limits=Limits(
            per_number_hour=read.optional_count("LIMIT_PER_NUMBER_HOUR", Limits.per_number_hour),
            per_number_day=read.optional_count("LIMIT_PER_NUMBER_DAY", Limits.per_number_day),
            global_day=read.optional_count("LIMIT_GLOBAL_DAY", Limits.global_day),
            budget_usd=read.optional_number("DAILY_BUDGET_USD", Limits.budget_usd),
            allowlist=read.addresses("ALLOWLIST"),
        ),
        mms_cost_usd=read.optional_number("MMS_COST_USD", DEFAULTS.mms_cost_usd) or 0.0,
        insecure_skip_signatures=read.flag("INSECURE_SKIP_SIGNATURES"),
        moderation=read.flag("MODERATION"),
        sweep_after_minutes=read.integer(
            "SWEEP_AFTER_MINUTES", DEFAULTS.sweep_after_minutes, 5, 7 * 24 * 60
        ),
        retention_days=read.optional_count("RETENTION_DAYS", DEFAULTS.retention_days),
        store_timeout_s=read.integer(
            "STORE_TIMEOUT_SECONDS", round(DEFAULTS.store_timeout_s), 1, 60
        ),
        follow_up_minutes=read.integer(
            "FOLLOW_UP_MINUTES", DEFAULTS.follow_up_minutes, 1, 7 * 24 * 60
        ),
        styles=_styles(read),
        photo_max_edge=read.integer("PHOTO_MAX_EDGE", DEFAULTS.photo_max_edge, 256, 4096),
        photo_max_bytes=read.integer(
            "PHOTO_MAX_BYTES", DEFAULTS.photo_max_bytes, 100_000, 20_000_000
        ),
        wall=WallMode(
            read.choice("WALL", DEFAULTS.wall.value, tuple(mode.value for mode in WallMode))
        ),
        console_session_hours=read.integer(
            "CONSOLE_SESSION_HOURS", DEFAULTS.console_session_hours, 1, 24 * 30
        ),
        secrets=SecretSource(
            environ, project=project, endpoint=read.text("SECRET_MANAGER_ENDPOINT")
        ),
    )
    if settings.insecure_skip_signatures:
        public = [url for url in (settings.composite_url, settings.generate_url) if url]
        if not all(urlsplit(url).hostname in _LOCAL_HOSTS for url in public):
            read.problems.append(
                "INSECURE_SKIP_SIGNATURES is only allowed when COMPOSITE_URL and GENERATE_URL"
                " are local (localhost, 127.0.0.1)"
            )
    if settings.twilio_from_number and not _ADDRESS.match(settings.twilio_from_number):
        read.problems.append("TWILIO_FROM_NUMBER must be an E.164 number like +15551234567")
    if " " in settings.sms_keyword:
        read.problems.append("SMS_KEYWORD must be one word")
    if not is_language(settings.default_language):
        read.problems.append(
            f"DEFAULT_LANGUAGE must be one of {', '.join(CATALOGUES)} (shared/languages/)"
        )
    for name, retries in (
        ("GENERATION_RETRIES", settings.generation_retries),
        ("CALLBACK_RETRIES", settings.callback_retries),
    ):
        if retries > settings.qstash_max_retries:
            read.problems.append(
                f"{name}={retries} is more than your QStash plan allows (QSTASH_MAX_RETRIES="
                f"{settings.qstash_max_retries}; the Free plan's is {FREE_PLAN_MAX_RETRIES})"
            )
    service = settings.twilio_messaging_service_sid
    if service and not _MESSAGING_SERVICE.match(service):
        read.problems.append("TWILIO_MESSAGING_SERVICE_SID must look like MG followed by 32 hex")
    if "IMAGE_COST_USD" in environ:
        read.problems.append(
            "IMAGE_COST_USD is no longer read: prices come from the provider's token counts;"
            " set IMAGE_TOKEN_PRICES_USD (text in, image in, image out per 1M tokens) instead"
        )
    sid = settings.twilio_account_sid
    if sid and not (sid.startswith("AC") and len(sid) == 34):
        read.problems.append("TWILIO_ACCOUNT_SID must look like AC followed by 32 characters")
    if read.problems:
        raise ConfigError("invalid settings: " + "; ".join(read.problems))
    return settings
