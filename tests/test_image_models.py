"""What we know of the image models: sizes, qualities, retirements, prices and answer sizes.
The stand-in (devstack/openai_images.py) encodes the same facts independently; the pipeline
tests check the two agree over HTTP."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared import image_models
from shared.image_models import TokenPrices

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("model", "size", "why"),
    [
        ("gpt-image-2.6-flare", "1024x1024", None),
        ("gpt-image-2.6-flare", "3840x2160", None),
        ("gpt-image-2.6-flare", "2160x3840", None),
        ("gpt-image-2.5-sunburst-2026-09-08", "1536x864", None),
        ("gpt-image-2", "1008x1008", None),
        ("gpt-image-2.6-flare", "1000x1000", "multiples of 16"),
        ("gpt-image-2.6-flare", "4096x2304", "largest"),
        ("gpt-image-2.6-flare", "2176x2176", "largest"),
        ("gpt-image-2.6-flare", "2304x768", None),
        ("gpt-image-2.6-flare", "2400x768", "3:1"),
        ("gpt-image-2.6-flare", "512x512", "pixels"),
        ("gpt-image-2.6-flare", "big", "WIDTHxHEIGHT"),
        ("some-classic-only-model", "1536x1024", None),
        ("some-classic-only-model", "1536x864", "makes only"),
    ],
)
def test_size_rules(model: str, size: str, why: str | None) -> None:
    problem = image_models.size_problem(model, size)
    if why is None:
        assert problem is None
    else:
        assert problem is not None and why in problem


def test_the_extra_qualities_only_on_the_models_that_take_them() -> None:
    assert image_models.parse_quality("gpt-image-2.6-flare", "max") == "max"
    assert image_models.parse_quality("gpt-image-2", "xhigh") is None
    assert image_models.parse_quality("gpt-image-2", "standard") is None
    assert image_models.parse_quality("gpt-image-2", "low") == "low"


def test_retired_models_name_a_current_replacement() -> None:
    for retired, replacement in image_models.RETIRED_MODELS.items():
        assert replacement not in image_models.RETIRED_MODELS, retired
        assert image_models.takes_any_size(replacement)


def test_the_estimate_grows_with_quality_and_pixels() -> None:
    prices = image_models.GPT_IMAGE_2_PRICES
    low = image_models.estimated_image_cost("1024x1024", "low", prices)
    medium = image_models.estimated_image_cost("1024x1024", "medium", prices)
    big = image_models.estimated_image_cost("3840x2160", "low", prices)
    # [3P] gpt-image-2: low ≈ $0.006, medium ≈ $0.053 for 1024².
    assert 0.005 < low < 0.008
    assert 0.05 < medium < 0.06
    assert big > 7 * low


def test_the_real_cost_comes_from_the_tokens() -> None:
    prices = TokenPrices(text_input=5, image_input=8, image_output=30)
    assert image_models.image_cost(100, 1000, prices) == pytest.approx(0.0005 + 0.03)
    assert image_models.image_cost(None, None, prices) == 0


@pytest.mark.parametrize("text", ["5,8", "a,b,c", "5,8,-1", "5,8,nan", ""])
def test_token_prices_refuse_what_is_not_three_prices(text: str) -> None:
    with pytest.raises(ValueError):
        TokenPrices.parse(text)


def test_the_callback_estimate_fits_the_free_plan_for_classic_sizes_only() -> None:
    free = 1_000_000
    for size in image_models.CLASSIC_SIZES:
        assert image_models.highest_fitting_compression(size, "low", free) is not None
    assert image_models.highest_fitting_compression("3840x2160", "low", free) is None
    assert image_models.highest_fitting_compression("3840x2160", "low", 10_000_000) == 100


@pytest.mark.slow  # runs mypy
def test_mypy_refuses_a_generation_body_openai_would_refuse(tmp_path: Path) -> None:
    """The request body is typed by the openai SDK's own ImageGenerateParams."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            from shared.generation import GenerationBody

            fine: GenerationBody = {"prompt": "a fox", "model": "gpt-image-2.6-flare"}
            unknown: GenerationBody = {"prompt": "a fox", "colour": 1}
            wrong: GenerationBody = {"prompt": "a fox", "output_format": "jpg"}
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--strict", str(probe)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result.stdout
    assert '"colour"' in result.stdout
    assert "output_format" in result.stdout
    assert "probe.py:4" not in result.stdout  # the valid body passes
