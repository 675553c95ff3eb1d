"""Shared fixtures. Every test starts from an environment with none of our settings in it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from shared.services import reset_services
from shared.settings import SECRET_NAMES

OUR_SETTINGS = (
    *SECRET_NAMES,
    "COMPOSITE_URL",
    "GENERATE_URL",
    "SUPABASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_API_BASE_URL",
    "QSTASH_URL",
    "OPENAI_BASE_URL",
    "GOOGLE_CLOUD_PROJECT",
    "SECRET_MANAGER_ENDPOINT",
    "IMAGE_MODEL",
    "IMAGE_SIZE",
    "IMAGE_QUALITY",
    "FRAME_PATH",
)


@pytest.fixture(autouse=True)
def _isolated_environment(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("stack"):
        # Stack tests share the environment the in-process stack set up.
        yield
        return
    saved = {name: os.environ.pop(name) for name in OUR_SETTINGS if name in os.environ}
    reset_services()
    yield
    for name in OUR_SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(saved)
    reset_services()
