"""The whole CLI, as a shell script runs it, against the Vultr fake.

``inletsctl`` runs as a child process; the only link to the fake is what a user would
set: ``VULTR_API_KEY`` and ``VULTR_API_ENDPOINT`` (or the flags) and
``INLETSCTL_STATE_DIR``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.testing.jsonapi import serving
from tests.fakes.vultr import FakeVultr
from tests.providers.cli import (
    check_dry_run,
    check_foreign_vm_refused,
    check_get_list_delete,
    check_refused_credential,
    create_json,
    inletsctl,
)

pytestmark = pytest.mark.network


@pytest.fixture
def fake() -> Iterator[FakeVultr]:
    yield from serving(FakeVultr())


@pytest.fixture
def env(fake: FakeVultr, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if k != "INLETS_ACCESS_TOKEN"},
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        "VULTR_API_KEY": fake.token,
        "VULTR_API_ENDPOINT": fake.base_url,
        "NO_COLOR": "1",
    }


def test_dry_run_renders_the_user_data_and_calls_no_api(
    env: dict[str, str], fake: FakeVultr
) -> None:
    check_dry_run(env, fake, "vultr", secrets=(fake.token,))


def test_create_json_get_list_then_delete_by_id_leaves_nothing(
    env: dict[str, str], fake: FakeVultr
) -> None:
    host, _ = create_json(env, "vultr", secrets=(fake.token,))
    assert host["region"] == "lhr"
    assert host["ip"].startswith("192.0.2.")
    assert len(fake.resources()) == 2, "an instance and its firewall group"
    assert host["provider_id"] in fake.instances
    check_get_list_delete(env, fake, "vultr", host)


def test_an_instance_inletsctl_did_not_make_is_deleted_only_with_force(
    env: dict[str, str], fake: FakeVultr
) -> None:
    vm, ip = fake.foreign_vm()
    listed = inletsctl(env, "list", "-p", "vultr", "--remote", "-o", "json")
    assert json.loads(listed.stdout) == [], "not among ours"
    check_foreign_vm_refused(env, fake, "vultr", vm, ip)
    assert fake.resources() == {f"instance:{vm}"}, "refused means untouched"

    forced = inletsctl(env, "delete", "-p", "vultr", "--id", vm, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Warning: --force" in forced.stderr
    assert fake.resources() == set()


def test_a_rejected_key_is_one_line_naming_the_variable(
    env: dict[str, str], fake: FakeVultr
) -> None:
    check_refused_credential(env, fake, "vultr", "VULTR_API_KEY", "an-old-key", "401")


def test_key_file_and_endpoint_flag_and_a_delete_command_that_needs_no_state(
    env: dict[str, str], fake: FakeVultr, tmp_path: Path
) -> None:
    bare = {k: v for k, v in env.items() if not k.startswith("VULTR_")}
    key = tmp_path / "vultr-key"
    key.write_text(fake.token + "\n")
    endpoint = ("--endpoint-url", fake.base_url)
    made = inletsctl(
        bare, "create", "my-exit", "-p", "vultr", "-r", "fra", "-s", "vc2-1c-2gb",
        "--image", "ubuntu-24.04-lts-x64", "-f", str(key), *endpoint,
        "--tcp", "--ports", "2222", "--wait", "none", "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    (instance,) = fake.instances.values()
    assert (instance["label"], instance["region"], instance["plan"]) == (
        "my-exit",
        "fra",
        "vc2-1c-2gb",
    )
    assert instance["os"] == "Ubuntu 24.04 LTS x64"

    command = shlex.split(host["delete_command"])
    assert command[:2] == ["inletsctl", "delete"]
    elsewhere = {**bare, "INLETSCTL_STATE_DIR": str(tmp_path / "elsewhere")}
    gone = inletsctl(elsewhere, *command[1:], "-f", str(key), *endpoint)
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()
