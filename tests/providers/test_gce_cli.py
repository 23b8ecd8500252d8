"""Compute Engine through the whole CLI, as a shell script runs it, against the GCE fake.

The shared CLI tests hand every cloud a token in a variable; a Google user has a
service-account key file instead (``GOOGLE_APPLICATION_CREDENTIALS``), and an exit
server there is an instance plus several firewall rules, IPv4 only. So this module
runs the same path, create -o json -> get -> list --remote -> delete --id, with the
key file, gcloud's endpoint variable and the state dir as the only links to the fake.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.testing.jsonapi import serving
from tests.fakes.gce import FakeGce
from tests.providers.cli import (
    NO_PROBE,
    check_dry_run,
    check_foreign_vm_refused,
    check_get_list_delete,
    create_json,
    inletsctl,
)
from tests.providers.test_gce import GOOGLE_ENV

pytestmark = pytest.mark.network


@pytest.fixture
def fake() -> Iterator[FakeGce]:
    yield from serving(FakeGce())


@pytest.fixture
def key_file(fake: FakeGce, tmp_path: Path) -> Path:
    return fake.write_key(tmp_path / "key.json")


@pytest.fixture
def env(fake: FakeGce, key_file: Path, tmp_path: Path) -> dict[str, str]:
    """A gcloud user's shell: a key file, and the endpoint as gcloud spells the override."""
    return {
        **{k: v for k, v in os.environ.items() if k not in GOOGLE_ENV},
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        "GOOGLE_APPLICATION_CREDENTIALS": str(key_file),
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": f"{fake.base_url}/",
        "NO_COLOR": "1",
    }


def test_dry_run_renders_the_user_data_and_calls_no_api(env, fake) -> None:
    check_dry_run(env, fake, "gce")


def test_create_json_get_list_then_delete_by_id_leaves_nothing(env, fake, key_file) -> None:
    secret = json.loads(key_file.read_text())["private_key"]
    host, _ = create_json(env, "gce", secrets=(secret.splitlines()[1],))
    assert host["provider_id"] == f"us-central1-a/{host['name']}"
    assert len(fake.resources()) == 3, "an instance, its deny rule and its allow rule"
    check_get_list_delete(env, fake, "gce", host)
    assert fake.unguarded == []


def test_a_key_in_access_token_file_and_the_printed_delete_command_need_no_state(
    env, fake, key_file, tmp_path
) -> None:
    """--access-token-file takes the key file itself; --endpoint-url the API's root."""
    plain = {k: v for k, v in env.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
    where = ("-f", str(key_file), "--endpoint-url", fake.base_url.removesuffix(fake.prefix))
    made = inletsctl(
        plain, "create", "my-exit", "-p", "gce", "-r", "us-east1-b", "-s", "e2-small",
        "--image", "ubuntu-os-cloud/ubuntu-2404-lts-amd64", "--tcp", *where, "--poll", "0s",
        *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    instance = fake.instances[("us-east1-b", "my-exit")]
    assert instance["machineType"].endswith("/zones/us-east1-b/machineTypes/e2-small")
    assert "1024-65535" in json.dumps(fake.firewalls), "no --ports: the whole allow-list"
    command = shlex.split(host["delete_command"])
    elsewhere = {**plain, "INLETSCTL_STATE_DIR": str(tmp_path / "elsewhere")}
    gone = inletsctl(elsewhere, *command[1:], *where)
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()


def test_allow_ips_reach_the_rules_and_the_user_data(env, fake) -> None:
    made = inletsctl(
        env, "create", "-p", "gce", "--tcp", "--ports", "8080", "--poll", "0s",
        "--allow-ips", "203.0.113.0/24, 2001:db8::/32", *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    allowed = {
        r["allowed"][0]["ports"][0]: r["sourceRanges"]
        for r in fake.firewalls.values()
        if "allowed" in r
    }
    assert allowed == {"8123": ["0.0.0.0/0"], "8080": ["203.0.113.0/24"]}
    (instance,) = fake.instances.values()
    assert " --allow-ips 203.0.113.0/24,2001:db8::/32\n" in fake.user_data(instance)
    assert inletsctl(env, "delete", "--id", json.loads(made.stdout)["id"]).returncode == 0


def test_an_instance_inletsctl_did_not_make_is_deleted_only_with_force(env, fake) -> None:
    vm, ip = fake.foreign_vm()
    spare, _ = fake.foreign_vm()
    check_foreign_vm_refused(env, fake, "gce", vm, ip)
    assert len(fake.resources()) == 2, "refused means untouched"
    forced = inletsctl(env, "delete", "-p", "gce", "--id", vm, "--force")
    assert forced.returncode == 0, forced.stderr
    assert fake.resources() == {f"instance:{spare}"}


def test_a_refused_key_is_one_line_naming_the_variable(env, fake, key_file) -> None:
    info = json.loads(key_file.read_text())
    key_file.write_text(json.dumps({**info, "client_email": "gone@x.iam.gserviceaccount.com"}))
    refused = inletsctl(env, "create", "-p", "gce", "--tcp", "--ports", "8080", *NO_PROBE)
    assert refused.returncode == 1
    assert (
        "gce: the API rejected the credentials from GOOGLE_APPLICATION_CREDENTIALS "
        "(401 Unauthorized)"
    ) in refused.stderr
    assert "Hint: Point GOOGLE_APPLICATION_CREDENTIALS" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert fake.resources() == set()


def test_no_credentials_at_all_names_every_way_to_give_them(env, tmp_path) -> None:
    bare = {k: v for k, v in env.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    # no gcloud configuration, and no metadata server probe (this is no Google VM)
    bare.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true")
    missing = inletsctl(bare, "list", "-p", "gce", "--remote")
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.startswith("Error: gce: no usable Google credentials"), "no log lines"
    for way in ("GOOGLE_APPLICATION_CREDENTIALS", "--access-token-file", "application-default"):
        assert way in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_full_zone_is_cleaned_up_and_the_next_zone_wins(env, fake) -> None:
    fake.exhausted["us-central1-a"] = (
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "The zone 'projects/inletsctl-test/zones/us-central1-a' does not have enough "
        "resources available to fulfill the request.",
    )
    made = inletsctl(
        env, "create", "-p", "gce", "--tcp", "--ports", "8080", "--poll", "0s",
        "--region", "us-central1-a,us-east1-b", *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["region"] == "us-east1-b"
    assert "Warning: us-central1-a: " in made.stderr and "trying us-east1-b" in made.stderr
    assert [z for z, _ in fake.instances] == ["us-east1-b"]
    assert len(fake.resources()) == 3, "the winner's instance and rules, nothing of the first"
