"""Fixtures the provider tests share; pytest also rewrites the asserts of the shared
checks in ``tests.providers.cli``, so a failing check shows the values it compared."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.providers.cli")

from providers.testing.jsonapi import JsonApiFake, serving  # noqa: E402 (after the rewrite hook)
from tests.fakes.hetzner import FakeHetzner  # noqa: E402
from tests.providers.cli import CLOUDS  # noqa: E402


@pytest.fixture(params=sorted(CLOUDS))
def token_cloud(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, JsonApiFake, dict[str, str]]]:
    """Each cloud of :data:`CLOUDS`: its name, its fake (serving for the test) and a
    user's shell aimed at it (the token and endpoint variables, a state dir of its own)."""
    fake_class, token_env, endpoint_env = CLOUDS[request.param]
    fake = fake_class()
    if isinstance(fake, FakeHetzner):
        fake.running_reads = 0  # the CLI's SDK client waits 1 s between action polls
    env = {
        **{k: v for k, v in os.environ.items() if k != "INLETS_ACCESS_TOKEN"},
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        token_env: fake.token,
        endpoint_env: fake.base_url,
        "NO_COLOR": "1",
    }
    for served in serving(fake):  # started for the test, stopped however it ends
        yield request.param, served, env
