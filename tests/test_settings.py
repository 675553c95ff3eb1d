from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.secretmanager import SecretManagerConfig, create_app
from devstack.serving import RunningServer, serve_in_thread
from shared.errors import ConfigError
from shared.secrets import Secret, SecretSource
from shared.settings import load_settings

MINIMAL = {
    "COMPOSITE_URL": "https://composite-abc-uc.a.run.app",
    "SUPABASE_URL": "https://ref.supabase.co",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
}


def test_load_settings_applies_documented_defaults() -> None:
    settings = load_settings(MINIMAL)
    assert settings.image.model == "gpt-image-1.5"
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
                "IMAGE_SIZE": "512x512",
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
