"""The whole CLI, as a shell script runs it, against the Scaleway fake.

``inletsctl`` runs as a child process; the only link to the fake is what a user
would set: ``SCW_SECRET_KEY``, ``SCW_DEFAULT_PROJECT_ID``, ``SCW_API_URL`` (or
``--endpoint-url``) and ``INLETSCTL_STATE_DIR``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.testing.jsonapi import serving
from tests.fakes.scaleway import FakeScaleway
from tests.providers.cli import (
    NO_PROBE,
    check_dry_run,
    check_foreign_vm_refused,
    check_get_list_delete,
    create_json,
    inletsctl,
)

pytestmark = pytest.mark.network

SCW_ENV = ("SCW_SECRET_KEY", "SCW_ACCESS_KEY", "SCW_DEFAULT_PROJECT_ID", "SCW_DEFAULT_ZONE")


@pytest.fixture
def fake() -> Iterator[FakeScaleway]:
    fake = FakeScaleway()
    fake.transition_reads = 0  # the CLI's provider sleeps between polls
    yield from serving(fake)


@pytest.fixture
def env(fake: FakeScaleway, tmp_path: Path) -> dict[str, str]:
    outside = (*SCW_ENV, "SCW_API_URL", "SCW_PROFILE", "INLETS_ACCESS_TOKEN")
    return {
        **{k: v for k, v in os.environ.items() if k not in outside},
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        "SCW_CONFIG_PATH": str(tmp_path / "no-scw-config.yaml"),
        "SCW_SECRET_KEY": fake.token,
        "SCW_DEFAULT_PROJECT_ID": fake.project,
        "SCW_API_URL": fake.base_url,
        "NO_COLOR": "1",
    }


def test_dry_run_renders_the_user_data_and_calls_nothing(fake, env) -> None:
    check_dry_run(env, fake, "scaleway", "--ports", "8080")


def test_create_json_then_get_then_delete_by_id_leaves_nothing(fake, env) -> None:
    before = fake.resources()
    host, _ = create_json(env, "scaleway", secrets=(fake.token,))
    assert host["region"] == "fr-par-1"
    assert len(fake.resources() - before) == 4, "a server, its volume, an IP, a group"
    server = fake.servers[host["provider_id"]]
    assert fake.user_data[server["id"]]["cloud-init"].startswith("#cloud-config\n")
    check_get_list_delete(env, fake, "scaleway", host, left=before)


def test_endpoint_url_flag_and_secret_key_file(fake, env, tmp_path) -> None:
    key = tmp_path / "scw-secret"
    key.write_text(fake.token + "\n")
    flags = {k: v for k, v in env.items() if k not in ("SCW_SECRET_KEY", "SCW_API_URL")}
    made = inletsctl(
        flags, "create", "-p", "scaleway", "-f", str(key), "--endpoint-url", fake.base_url,
        "--tcp", "--ports", "8080", "--wait", "none", "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert host["provider_id"] in fake.servers
    gone = inletsctl(flags, "delete", "--id", host["id"], "-f", str(key), "--endpoint-url",
                     fake.base_url)  # fmt: skip
    assert gone.returncode == 0, gone.stderr
    assert fake.servers == fake.ips == {}


def test_a_refused_key_is_one_line_with_a_hint(fake, env) -> None:
    env = {**env, "SCW_SECRET_KEY": "11111111-1111-1111-1111-111111111111"}
    listed = inletsctl(env, "list", "-p", "scaleway", "--remote")
    assert listed.returncode == 1, listed.stderr
    assert listed.stderr.strip().splitlines() == [
        "Error: scaleway: the API rejected the token from SCW_SECRET_KEY (401 Unauthorized)",
        "Hint: Set SCW_SECRET_KEY to a valid read/write API token.",
    ]
    refused = inletsctl(env, "create", "-p", "scaleway", "--tcp", "--ports", "8080", *NO_PROBE)
    assert refused.returncode == 1, refused.stderr
    error, hint = refused.stderr.strip().splitlines()[-2:]
    assert error.startswith("Error: scaleway: the API rejected the token from SCW_SECRET_KEY")
    assert hint.startswith("Hint: ") and "SCW_SECRET_KEY" in hint
    assert "Traceback" not in refused.stderr + listed.stderr
    assert "1111" not in refused.stderr + listed.stderr
    assert fake.resources() == {f"security_group:{g}" for g in fake.security_groups}


def test_a_vm_inletsctl_did_not_make_is_not_seen_and_deleted_only_with_force(fake, env) -> None:
    vm, ip = fake.foreign_vm()
    listed = inletsctl(env, "list", "-p", "scaleway", "--remote", "-o", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], "not ours: not listed"
    check_foreign_vm_refused(env, fake, "scaleway", vm, ip)

    forced = inletsctl(env, "delete", "-p", "scaleway", "--id", vm, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Warning: --force" in forced.stderr
    assert vm not in fake.servers
    assert all(v["server"] is None or v["server"]["id"] != vm for v in fake.volumes.values())


def test_a_zone_out_of_stock_is_skipped_for_the_next(fake, env) -> None:
    fake.refuse("POST /instance/v1/zones/fr-par-1/servers", 400, "out_of_stock", "no room")
    made = inletsctl(
        env, "create", "-p", "scaleway", "--region", "fr-par-1,fr-par-2", "--tcp", "--ports",
        "8080", "--poll", "0s", *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert host["region"] == "fr-par-2"
    assert {s["zone"] for s in fake.servers.values()} == {"fr-par-2"}
    assert [i["zone"] for i in fake.ips.values()] == ["fr-par-2"], "fr-par-1's IP was undone"
    gone = inletsctl(env, "delete", "--id", host["id"])
    assert gone.returncode == 0, gone.stderr
    assert fake.servers == fake.ips == fake.volumes == {}
