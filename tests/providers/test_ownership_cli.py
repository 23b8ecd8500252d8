"""`inletsctl delete` never deletes a VM it did not make, unless told to with --force.

The CLI runs as a child process against the DigitalOcean, Hetzner and Linode fakes, with only
what a user would set: the SDK's token and endpoint variables and the state dir.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.testing.jsonapi import JsonApiFake
from tests.fakes.hetzner import FakeHetzner
from tests.providers.cli import inletsctl
from tests.providers.test_digitalocean_hetzner_cli import CLOUDS

pytestmark = pytest.mark.network


@pytest.fixture(params=sorted(CLOUDS))
def cloud(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, JsonApiFake, dict[str, str]]]:
    fake_class, token_env, endpoint_env = CLOUDS[request.param]
    fake: JsonApiFake = fake_class().start()
    if isinstance(fake, FakeHetzner):
        fake.running_reads = 0  # the CLI's SDK client waits 1 s between action polls
    env = {
        **{k: v for k, v in os.environ.items() if k != "INLETS_ACCESS_TOKEN"},
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        token_env: fake.token,
        endpoint_env: fake.base_url,
        "NO_COLOR": "1",
    }
    try:
        yield request.param, fake, env
    finally:
        fake.stop()


def test_a_vm_we_did_not_make_is_refused_then_deleted_alone_with_force(cloud) -> None:
    provider, fake, env = cloud
    vm, _ = fake.foreign_vm()  # type: ignore[attr-defined]
    spare, _ = fake.foreign_vm()  # type: ignore[attr-defined]
    before = fake.resources()

    refused = inletsctl(env, "delete", "--provider", provider, "--id", vm)
    assert refused.returncode == 1, refused.stderr
    assert "not made by inletsctl" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert fake.resources() == before, "nothing was deleted"

    forced = inletsctl(env, "delete", "--provider", provider, "--id", vm, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Warning" in forced.stderr
    assert len(fake.resources()) == len(before) - 1, "that VM and nothing else"
    again = inletsctl(env, "delete", "--provider", provider, "--id", spare)
    assert again.returncode == 1, "the other VM of the user's is still there, still refused"


def test_our_host_is_found_by_its_host_id_without_state(cloud, tmp_path: Path) -> None:
    provider, fake, env = cloud
    made = inletsctl(
        env, "create", "-p", provider, "--tcp", "--ports", "8080", "--poll", "0s",
        "--wait", "running", "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host_id = json.loads(made.stdout)["id"]
    elsewhere = {**env, "INLETSCTL_STATE_DIR": str(tmp_path / "other-state")}
    gone = inletsctl(elsewhere, "delete", "--provider", provider, "--id", host_id)
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set(), "droplet/server and firewall, by the host-id tag"
