"""What only Linode's CLI path shows, as a shell script runs it, against the Linode fake.

The create -> get -> list -> delete path, ``--allow-ips`` and ownership run for every
cloud in ``test_digitalocean_hetzner_cli.py`` and ``test_ownership_cli.py``; here: a
dry run, the variables of Linode's own tools, and a refused token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.testing.jsonapi import serving
from tests.fakes.linode import FakeLinode
from tests.providers.cli import NO_PROBE, check_dry_run, check_refused_credential, inletsctl

pytestmark = pytest.mark.network


@pytest.fixture
def fake() -> Iterator[FakeLinode]:
    yield from serving(FakeLinode())


@pytest.fixture
def env(fake: FakeLinode, tmp_path: Path) -> dict[str, str]:
    """A user's shell: LINODE_URL is scheme and host, as linodego and Terraform read it."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INLETS_", "LINODE_"))},
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        "LINODE_TOKEN": fake.token,
        "LINODE_URL": fake.base_url.removesuffix(fake.prefix),
        "NO_COLOR": "1",
    }


def test_dry_run_renders_the_user_data_and_calls_no_api(
    env: dict[str, str], fake: FakeLinode
) -> None:
    check_dry_run(env, fake, "linode", secrets=(fake.token,))


def test_linode_clis_token_and_endpoint_defaults_make_a_host_and_delete_it(
    env: dict[str, str], fake: FakeLinode
) -> None:
    cli_user = {k: v for k, v in env.items() if k != "LINODE_TOKEN"}
    cli_user["LINODE_CLI_TOKEN"] = fake.token
    made = inletsctl(
        cli_user, "create", "my-exit", "-p", "linode", "-s", "g6-standard-1",
        "--image", "linode/ubuntu24.04", "--tcp", "--ports", "2222", *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    (instance,) = fake.instances.values()
    assert (instance["label"], instance["type"]) == ("my-exit", "g6-standard-1")
    assert (instance["image"], host["provider_id"]) == ("linode/ubuntu24.04", str(instance["id"]))
    assert all(r.path.startswith("/v4/") for r in fake.requests), "LINODE_URL got /v4"
    gone = inletsctl(cli_user, "delete", "--id", host["id"])
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()


def test_a_rejected_token_is_one_line_naming_the_variable(
    env: dict[str, str], fake: FakeLinode
) -> None:
    check_refused_credential(env, fake, "linode", "LINODE_TOKEN", "an-old-token", "401")


def test_a_full_region_is_passed_over_for_the_next_and_left_empty(
    env: dict[str, str], fake: FakeLinode
) -> None:
    fake.refusals_in["fr-par"] = (400, "bad_request", "Account Limit reached.")
    made = inletsctl(
        env, "create", "-p", "linode", "--region", "fr-par,us-ord", "--tcp", "--ports", "8080",
        *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert host["region"] == "us-ord"
    assert [s["region"] for s in host["skipped_regions"]] == ["fr-par"]
    assert "Account Limit reached" in host["skipped_regions"][0]["reason"]
    assert {i["region"] for i in fake.instances.values()} == {"us-ord"}
    assert len(fake.firewalls) == 1, "fr-par's firewall went with the refused attempt"
    gone = inletsctl(env, "delete", "--id", host["id"])
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()
