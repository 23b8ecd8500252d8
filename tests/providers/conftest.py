"""The provider tests' shared checks live in helper modules; pytest rewrites their
asserts too, so a failing check shows the values it compared."""

import pytest

pytest.register_assert_rewrite("tests.providers.cli")
