"""Azure through the whole CLI, as a shell script runs it, against the Azure fake.

``inletsctl`` runs as a child process; the only link to the fake is what an Azure user
would set: a service principal's variables (or an sdk-auth file), the endpoints, the
fake's CA in ``REQUESTS_CA_BUNDLE`` and ``INLETSCTL_STATE_DIR``. Azure makes more than a
VM and a firewall per host and deletes a group, not a VM, so it has its own file rather
than a row in ``test_digitalocean_hetzner_cli.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.testing.jsonapi import serving
from tests.fakes.azure import FakeAzure
from tests.providers.cli import (
    NO_PROBE,
    check_dry_run,
    check_foreign_vm_refused,
    check_get_list_delete,
    check_refused_credential,
    create_json,
    inletsctl,
)

pytestmark = pytest.mark.network


@pytest.fixture
def fake() -> Iterator[FakeAzure]:
    api = FakeAzure()
    api.async_operations = False  # the CLI polls seconds apart, as it would on Azure
    yield from serving(api)


@pytest.fixture
def env(fake: FakeAzure, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INLETS_", "AZURE_", "ARM_"))},
        **fake.env(),
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        "NO_COLOR": "1",
    }


def test_dry_run_renders_the_user_data_and_calls_no_api(env: dict[str, str], fake) -> None:
    # a dry run asks the API nothing, not even for a token
    check_dry_run(env, fake, "azure", secrets=(fake.client_secret,))


def test_create_json_get_list_then_delete_by_id_leaves_nothing(env: dict[str, str], fake) -> None:
    host, _ = create_json(env, "azure", secrets=(fake.client_secret, fake.token))
    assert host["provider_id"].startswith("inletsctl-")
    kinds = sorted(r.split(":")[0] for r in fake.resources())
    assert kinds == [
        "Microsoft.Compute/disks", "Microsoft.Compute/virtualMachines",
        "Microsoft.Network/networkInterfaces", "Microsoft.Network/networkSecurityGroups",
        "Microsoft.Network/publicIPAddresses", "Microsoft.Network/virtualNetworks",
        "resourceGroup",
    ]  # fmt: skip
    check_get_list_delete(env, fake, "azure", host)


def test_a_go_users_sdk_auth_file_and_the_printed_delete_command(
    env: dict[str, str], fake, tmp_path: Path
) -> None:
    """``--access-token-file`` with ``az ad sp create-for-rbac --sdk-auth``'s JSON, as Go
    inletsctl takes it: principal, subscription and endpoints from the file alone."""
    auth = tmp_path / "client_credentials.json"
    auth.write_text(json.dumps(fake.sdk_auth(), indent=2))
    user = {k: v for k, v in env.items() if not k.startswith(("AZURE_", "ARM_"))}
    made = inletsctl(
        user, "create", "my-exit", "-p", "azure", "-f", str(auth), "--tcp", "--ports", "2222",
        *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert host["name"] == "my-exit"
    command = host["delete_command"].split()
    elsewhere = {**user, "INLETSCTL_STATE_DIR": str(tmp_path / "elsewhere")}
    gone = inletsctl(elsewhere, *command[1:], "-f", str(auth))
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()


def test_a_rejected_client_secret_is_one_line_naming_the_variable(
    env: dict[str, str], fake
) -> None:
    lines = check_refused_credential(
        env, fake, "azure", "AZURE_CLIENT_SECRET", "an-old-secret", "AADSTS7000215"
    )
    assert not [line for line in lines if "get_token_info failed" in line], "no SDK log lines"


def test_a_vm_inletsctl_did_not_make_is_unseen_and_deleted_only_with_force(
    env: dict[str, str], fake
) -> None:
    vm, ip = fake.foreign_vm()
    before = fake.resources()
    listed = inletsctl(env, "list", "-p", "azure", "--remote", "-o", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
    check_foreign_vm_refused(env, fake, "azure", vm, ip)

    forced = inletsctl(env, "delete", "-p", "azure", "--id", vm, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Warning: --force" in forced.stderr
    left = before - fake.resources()
    assert [r.split(":")[0] for r in left] == ["Microsoft.Compute/virtualMachines"]


def test_a_size_not_offered_in_the_first_region_falls_back_to_the_next(
    env: dict[str, str], fake
) -> None:
    fake.allocation_failures["westus2"] = ("AllocationFailed", "Allocation failed.")
    made = inletsctl(
        env, "create", "-p", "azure", "--region", "westus2,eastus", "--tcp", "--ports", "8080",
        *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert host["region"] == "eastus"
    assert [s["region"] for s in host["skipped_regions"]] == ["westus2"]
    assert {g["location"] for g in fake.groups.values()} == {"eastus"}, "westus2's group went"
    gone = inletsctl(env, "delete", "--id", host["id"])
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()
