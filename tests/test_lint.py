"""The code stays ruff- and mypy-clean: checked here so CI (make test) enforces it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT_DIR = Path(__file__).resolve().parent.parent

CHECKS = {
    "ruff check": ["ruff", "check", "."],
    "ruff format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy", "shared", "devstack", "bench", "deploy", "studio", "tests"],
    # Both functions' entry modules are called main, so each is checked on its own.
    "mypy generate": ["mypy", "generate/main.py"],
    "mypy composite": ["mypy", "composite/main.py"],
    "mypy gallery": ["mypy", "gallery/main.py"],
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_lint(name: str) -> None:
    command = [sys.executable, "-m", *CHECKS[name]]
    result = subprocess.run(command, cwd=ROOT_DIR, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
