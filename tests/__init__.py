"""The test suite.

The helper modules the tests share get pytest's assertion rewriting, as test modules and
conftest.py do, so that a failing assertion in one shows its values. This runs before
conftest.py imports any of them.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite(
    "devstack.stack_client",
    "devstack.vendor_calls",
    "tests.deployer",
    "tests.memory_services",
    "tests.strategies",
)
