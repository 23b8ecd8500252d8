"""`inletsctl delete` never deletes a VM it did not make, unless told to with --force.

The CLI runs as a child process against the DigitalOcean, Hetzner and Linode fakes, with only
what a user would set: the SDK's token and endpoint variables and the state dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.providers.cli import inletsctl

pytestmark = pytest.mark.network


def test_a_vm_we_did_not_make_is_refused_then_deleted_alone_with_force(token_cloud) -> None:
    provider, fake, env = token_cloud
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


def test_our_host_is_found_by_its_host_id_without_state(token_cloud, tmp_path: Path) -> None:
    provider, fake, env = token_cloud
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
