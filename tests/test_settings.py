from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from devstack.secretmanager import SecretManagerConfig, create_app
from devstack.serving import RunningServer, serve_in_thread
from shared.errors import ConfigError
from shared.secrets import Secret, SecretSource
from shared.settings import ImageOptions, Limits, Settings, load_settings
from tests.minimal_settings import MINIMAL


def test_load_settings_applies_documented_defaults() -> None:
    settings = load_settings(MINIMAL)
    assert settings.image.model == "gpt-image-2.6-flare"
    assert settings.image.size == "1024x1024"
    assert settings.qstash_url == "https://qstash.upstash.io"
    assert settings.openai_base_url == "https://api.openai.com/v1"
    assert settings.bucket == "pictures"


def test_load_settings_lists_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "COMPOSITE_URL": "composite.example.com",
                "TWILIO_ACCOUNT_SID": "nope",
                "IMAGE_SIZE": "1000x1000",
                "GENERATION_RETRIES": "many",
            }
        )
    message = caught.value.message
    for problem in (
        "COMPOSITE_URL",
        "SUPABASE_URL",
        "TWILIO_ACCOUNT_SID",
        "IMAGE_SIZE",
        "GENERATION_RETRIES",
    ):
        assert problem in message


def test_composite_url_must_not_carry_a_query() -> None:
    with pytest.raises(ConfigError, match="query"):
        load_settings({**MINIMAL, "COMPOSITE_URL": "https://c.example.com/?x=1"})


def test_secret_prefers_the_environment_and_never_shows_its_value() -> None:
    settings = load_settings({**MINIMAL, "OPENAI_API_KEY": "sk-very-secret"})
    secret = settings.secret("OPENAI_API_KEY")
    assert secret.reveal() == "sk-very-secret"
    assert "sk-very" not in repr(secret) and "sk-very" not in str(secret)


def test_a_missing_secret_without_a_project_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        load_settings(MINIMAL).secret("OPERATOR_KEY").reveal()


@pytest.fixture(scope="module")
def secret_manager() -> Iterator[RunningServer]:
    server = serve_in_thread(
        create_app(SecretManagerConfig(project="proj", secrets={"OPERATOR_KEY": "from-sm"}))
    )
    yield server
    server.stop()


def test_a_missing_secret_is_read_from_secret_manager_once(secret_manager: RunningServer) -> None:
    import requests

    source = SecretSource({}, project="proj", endpoint=secret_manager.url)
    secret = Secret("OPERATOR_KEY", source)
    assert secret.reveal() == "from-sm"
    assert secret.reveal() == "from-sm"
    log = requests.get(f"{secret_manager.url}/__dev/access-log", timeout=5).json()
    assert len([entry for entry in _entries(log) if "OPERATOR_KEY" in str(entry)]) == 1


def _entries(log: object) -> list[object]:
    if isinstance(log, dict):
        for value in log.values():
            if isinstance(value, list):
                return value
    return log if isinstance(log, list) else []


def test_a_secret_missing_everywhere_is_a_config_error(secret_manager: RunningServer) -> None:
    source = SecretSource({}, project="proj", endpoint=secret_manager.url)
    with pytest.raises(ConfigError, match="does not exist"):
        Secret("TWILIO_AUTH_TOKEN", source).reveal()


def test_skipping_signatures_is_refused_for_public_urls() -> None:
    with pytest.raises(ConfigError, match="INSECURE_SKIP_SIGNATURES"):
        load_settings({**MINIMAL, "INSECURE_SKIP_SIGNATURES": "true"})
    local = {
        **MINIMAL,
        "COMPOSITE_URL": "http://127.0.0.1:8082",
        "GENERATE_URL": "http://localhost:8081",
    }
    assert load_settings({**local, "INSECURE_SKIP_SIGNATURES": "true"}).insecure_skip_signatures
    assert not load_settings(local).insecure_skip_signatures


# --- models, sizes and QStash's message limit ----------------------------------------------


def test_a_retired_model_is_refused_with_its_replacement() -> None:
    with pytest.raises(
        ConfigError, match=r"gpt-image-1\.5 was shut down by OpenAI; use gpt-image-2"
    ):
        load_settings({**MINIMAL, "IMAGE_MODEL": "gpt-image-1.5"})
    with pytest.raises(ConfigError, match="IMAGE_MODEL_FALLBACK gpt-image-1-mini was shut down"):
        load_settings({**MINIMAL, "IMAGE_MODEL_FALLBACK": "gpt-image-1-mini"})


def test_the_fallback_must_be_another_model_that_can_make_the_size() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        load_settings({**MINIMAL, "IMAGE_MODEL_FALLBACK": "gpt-image-2.6-flare"})
    settings = load_settings({**MINIMAL, "IMAGE_MODEL_FALLBACK": "gpt-image-2.6-sunburst"})
    assert settings.image.fallback_model == "gpt-image-2.6-sunburst"


def test_any_size_the_model_makes_is_accepted_and_others_are_refused_with_the_reason() -> None:
    assert load_settings({**MINIMAL, "IMAGE_SIZE": "1536x864"}).image.size == "1536x864"
    with pytest.raises(ConfigError, match="multiples of 16"):
        load_settings({**MINIMAL, "IMAGE_SIZE": "1000x1000"})


def test_a_quality_the_model_does_not_take_is_refused() -> None:
    assert load_settings({**MINIMAL, "IMAGE_QUALITY": "max"}).image.quality == "max"
    with pytest.raises(ConfigError, match="IMAGE_QUALITY must be one of"):
        load_settings({**MINIMAL, "IMAGE_MODEL": "gpt-image-2", "IMAGE_QUALITY": "max"})


def test_the_defaults_fit_the_free_plan() -> None:
    settings = load_settings(MINIMAL)
    assert settings.qstash_max_message_bytes == 1_000_000
    # QStash's Free plan allows 3 retries [3P]; ours stay within it.
    assert settings.generation_retries <= 3 and settings.callback_retries <= 3


def test_the_default_compression_is_lowered_to_fit_the_plan() -> None:
    assert load_settings({**MINIMAL, "IMAGE_SIZE": "2560x1440"}).image.compression < 80


def test_a_size_that_cannot_fit_the_plan_is_refused_naming_the_limit() -> None:
    with pytest.raises(ConfigError, match="1000000-byte message limit"):
        load_settings({**MINIMAL, "IMAGE_SIZE": "3840x2160"})
    with pytest.raises(ConfigError, match="at most IMAGE_COMPRESSION="):
        load_settings({**MINIMAL, "IMAGE_SIZE": "2560x1440", "IMAGE_COMPRESSION": "95"})
    paid = {**MINIMAL, "IMAGE_SIZE": "3840x2160", "QSTASH_MAX_MESSAGE_BYTES": "10000000"}
    assert load_settings(paid).image.size == "3840x2160"


def test_the_budget_estimate_comes_from_token_prices() -> None:
    cheap = load_settings({**MINIMAL, "IMAGE_TOKEN_PRICES_USD": "0,0,0", "MMS_COST_USD": "0"})
    assert cheap.estimated_cost_usd == 0
    dear = load_settings({**MINIMAL, "IMAGE_QUALITY": "high"})
    assert dear.estimated_cost_usd > load_settings(MINIMAL).estimated_cost_usd
    with pytest.raises(ConfigError, match="IMAGE_TOKEN_PRICES_USD"):
        load_settings({**MINIMAL, "IMAGE_TOKEN_PRICES_USD": "cheap"})
    with pytest.raises(ConfigError, match="IMAGE_COST_USD is no longer read"):
        load_settings({**MINIMAL, "IMAGE_COST_USD": "0.04"})


def test_a_messaging_service_sid_must_look_like_one() -> None:
    sid = "MG" + "0123456789abcdef" * 2
    assert (
        load_settings({**MINIMAL, "TWILIO_MESSAGING_SERVICE_SID": sid}).twilio_messaging_service_sid
        == sid
    )
    with pytest.raises(ConfigError, match="TWILIO_MESSAGING_SERVICE_SID"):
        load_settings({**MINIMAL, "TWILIO_MESSAGING_SERVICE_SID": "PN123"})


def test_retries_beyond_the_plan_are_refused_at_load() -> None:
    with pytest.raises(ConfigError, match="CALLBACK_RETRIES=5 is more than your QStash plan"):
        load_settings({**MINIMAL, "CALLBACK_RETRIES": "5"})
    paid = load_settings({**MINIMAL, "CALLBACK_RETRIES": "5", "QSTASH_MAX_RETRIES": "5"})
    assert paid.callback_retries == 5


def test_every_default_is_the_fields_own() -> None:
    """Each default is written once, on its dataclass field: loading an environment that
    sets nothing gives exactly those."""
    loaded = load_settings(MINIMAL)
    for field in dataclasses.fields(Settings):
        if field.default is not dataclasses.MISSING and field.name != "secrets":
            assert getattr(loaded, field.name) == field.default, field.name
    assert loaded.image == ImageOptions()
    assert loaded.limits == Limits()


def test_default_language_is_one_of_the_catalogues() -> None:
    assert load_settings(MINIMAL).default_language == "en"
    assert load_settings({**MINIMAL, "DEFAULT_LANGUAGE": " ES "}).default_language == "es"
    with pytest.raises(ConfigError, match="DEFAULT_LANGUAGE must be one of en, es, fr, de, pt, it"):
        load_settings({**MINIMAL, "DEFAULT_LANGUAGE": "nl"})


def test_the_keyword_defaults_to_the_numbers_languages() -> None:
    assert load_settings({**MINIMAL, "DEFAULT_LANGUAGE": "es"}).sms_keyword == "DIBUJA"
    chosen = {**MINIMAL, "DEFAULT_LANGUAGE": "es", "SMS_KEYWORD": "pinta"}
    assert load_settings(chosen).sms_keyword == "PINTA"
    assert load_settings({**MINIMAL, "DEFAULT_LANGUAGE": "es", "SMS_KEYWORD": ""}).sms_keyword == ""
