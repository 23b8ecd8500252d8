"""OVHcloud through the whole CLI, as a shell script runs it, against the OVH fake.

``inletsctl`` runs as a child process; the only link to the fake is what an OVHcloud
user already exports (``OVH_*``) and ``INLETSCTL_STATE_DIR``. HOME is a fresh
directory, so no ovh.conf of this machine's user is read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from providers.testing.jsonapi import serving
from tests.fakes.ovh import FakeOVH
from tests.providers.cli import (
    NO_PROBE,
    check_dry_run,
    check_foreign_vm_refused,
    check_get_list_delete,
    create_json,
    inletsctl,
)

pytestmark = pytest.mark.network


@pytest.fixture
def fake() -> Iterator[FakeOVH]:
    yield from serving(FakeOVH())


@pytest.fixture
def env(fake: FakeOVH, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INLETS_", "OVH_"))},
        **fake.env(),
        "HOME": str(tmp_path),
        "INLETSCTL_STATE_DIR": str(tmp_path / "state"),
        "NO_COLOR": "1",
    }


def _ruleset(user_data: str) -> list[str]:
    """The port rules of the nftables file the user-data writes."""
    files = {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}
    return re.findall(
        r"^\s*((?:ip6? saddr .*? )?tcp dport \S+) accept$", files["/etc/nftables.conf"], re.M
    )


def test_dry_run_renders_the_host_firewall_and_calls_no_api(env, fake) -> None:
    doc = check_dry_run(env, fake, "ovh", "--ports", "2222", secrets=(fake.application_secret,))
    assert _ruleset(doc["user_data"]) == ["tcp dport 2222", "tcp dport 8123"]


def test_create_json_then_get_then_list_then_delete_by_id_leaves_nothing(env, fake) -> None:
    secrets = (fake.application_secret, fake.consumer_key)
    host, _ = create_json(env, "ovh", "--allow-ips", "203.0.113.0/24", secrets=secrets)
    assert fake.resources() == {f"instance:{host['provider_id']}"}, "one instance, nothing else"
    (user_data,) = fake.user_data.values()
    assert _ruleset(user_data) == ["tcp dport 8123", "ip saddr { 203.0.113.0/24 } tcp dport 8080"]
    check_get_list_delete(env, fake, "ovh", host)


def test_an_ovh_conf_as_access_token_file(env, fake, tmp_path) -> None:
    conf = tmp_path / "ovh.conf"
    conf.write_text(
        f"[default]\nendpoint={fake.base_url}\n[{fake.base_url}]\n"
        f"application_key={fake.application_key}\napplication_secret={fake.application_secret}\n"
        f"consumer_key={fake.consumer_key}\n"
    )
    bare = {k: v for k, v in env.items() if k not in fake.env() or k == "OVH_CLOUD_PROJECT_SERVICE"}
    made = inletsctl(
        bare,
        "create",
        "-p",
        "ovh",
        "-f",
        str(conf),
        "--tcp",
        "--ports",
        "8080",
        *NO_PROBE,
        "-o",
        "json",
    )
    assert made.returncode == 0, made.stderr
    gone = inletsctl(bare, "delete", "--id", json.loads(made.stdout)["id"], "-f", str(conf))
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()


def test_a_refused_consumer_key_is_one_line_with_a_hint(env, fake) -> None:
    refused = inletsctl(
        {**env, "OVH_CONSUMER_KEY": "revoked"}, "create", "-p", "ovh", "--tcp", *NO_PROBE
    )
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    (line,) = [ln for ln in refused.stderr.splitlines() if "rejected" in ln]
    assert "OVH_CONSUMER_KEY" in line and "INVALID_CREDENTIAL" in line
    assert "Hint: " in refused.stderr and "revoked" not in refused.stderr
    assert fake.resources() == set()


def test_a_vm_inletsctl_did_not_make_is_not_seen_and_deleted_only_with_force(env, fake) -> None:
    vm, ip = fake.foreign_vm()
    listed = inletsctl(env, "list", "-p", "ovh", "--remote", "-o", "json")
    assert json.loads(listed.stdout) == []
    check_foreign_vm_refused(env, fake, "ovh", vm, ip)
    assert fake.resources() == {f"instance:{vm}"}, "refused means untouched"
    forced = inletsctl(env, "delete", "-p", "ovh", "--id", vm, "--force")
    assert forced.returncode == 0, forced.stderr
    assert fake.resources() == set()


def test_a_region_over_quota_is_passed_over_for_the_next(env, fake) -> None:
    fake.refusals_in["GRA11"] = (400, "", "Quota exceeded for instances")
    made = inletsctl(
        env, "create", "-p", "ovh", "--region", "GRA11,SBG5", "--tcp", "--ports", "8080",
        *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["region"] == "SBG5"
    assert "Quota exceeded" in made.stderr
    (instance,) = fake.instances.values()
    assert instance["region"] == "SBG5"
