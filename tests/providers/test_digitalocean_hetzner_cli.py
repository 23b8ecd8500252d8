"""The whole CLI, as a shell script runs it, against the DigitalOcean, Hetzner and Linode fakes.

``inletsctl`` runs as a child process; the only link to the fake is what a user
would set: the SDK's token and endpoint variables and ``INLETSCTL_STATE_DIR`` (the
``token_cloud`` fixture, in ``conftest.py``).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from providers.registry import load as load_provider_class
from tests.fakes.hetzner import FakeHetzner
from tests.fakes.linode import FakeLinode
from tests.providers.cli import (
    CLOUDS,
    NO_PROBE,
    check_foreign_vm_refused,
    check_get_list_delete,
    create_json,
    inletsctl,
)

pytestmark = pytest.mark.network

#: what the ``token_cloud`` fixture gives: the provider's name, its fake, a shell aimed at it
Cloud = tuple[str, Any, dict[str, str]]


def test_create_json_then_delete_by_id_leaves_nothing(token_cloud: Cloud) -> None:
    provider, fake, env = token_cloud
    host, made = create_json(env, provider, secrets=(fake.token,))
    assert len(fake.resources()) == 2, "a VM and its firewall"
    if provider == "digitalocean":  # the droplet's own states, as the Go original shows
        assert "status: new" in made.stderr and "status: active" in made.stderr
    check_get_list_delete(env, fake, provider, host)


def test_a_vm_inletsctl_did_not_make_is_deleted_only_with_force(token_cloud: Cloud) -> None:
    provider, fake, env = token_cloud
    vm, ip = fake.foreign_vm()
    check_foreign_vm_refused(env, fake, provider, str(vm), ip)

    forced = inletsctl(env, "delete", "-p", provider, "--id", str(vm), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "Warning: --force" in forced.stderr
    assert fake.resources() == set()


def test_a_go_users_commands_and_a_delete_command_that_needs_no_state(
    token_cloud: Cloud, tmp_path: Path
) -> None:
    """Short flags, a positional name, --tcp without --ports, and the printed delete command
    run on a machine without the state file."""
    provider, fake, shell = token_cloud
    token_env = CLOUDS[provider][1]
    facts = load_provider_class(provider).facts
    api_token = tmp_path / "api-token"
    api_token.write_text(fake.token + "\n")
    env = {k: v for k, v in shell.items() if k != token_env}  # the token from -f alone
    made = inletsctl(
        env, "create", "my-exit", "-p", provider, "-r", facts.default_region,
        "-s", facts.default_plan, "-f", str(api_token), "-t", "tunnel-token-123",
        "--tcp", "--poll", "0s", *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    assert (host["name"], host["region"]) == ("my-exit", facts.default_region)
    assert host["token"] == "tunnel-token-123"
    assert "Warning: no --ports" in made.stderr
    assert "1024-65535" in json.dumps(fake.firewalls), "the firewall opens the whole range"

    listed = inletsctl(env, "list", "--remote", "-p", provider, "-a", fake.token, "-o", "json")
    assert [h["name"] for h in json.loads(listed.stdout)] == ["my-exit"]

    command = shlex.split(host["delete_command"])
    assert command[:2] == ["inletsctl", "delete"]
    assert command[2:] == [
        "--id", host["id"], "--provider", provider, "--region", facts.default_region,
    ]  # fmt: skip
    elsewhere = {**env, "INLETSCTL_STATE_DIR": str(tmp_path / "elsewhere")}
    gone = inletsctl(elsewhere, *command[1:], "-f", str(api_token))
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set()


def test_allow_ips_reach_the_firewall_the_user_data_and_the_state(token_cloud: Cloud) -> None:
    from inletsctl.store import Store

    provider, fake, env = token_cloud
    for bad in ("10.0.0.1/8", "2001:db8::/129", "example.com"):
        refused = inletsctl(
            env, "create", "-p", provider, "--tcp", "--ports", "8080",
            "--allow-ips", f"203.0.113.0/24,{bad}", *NO_PROBE,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert "--allow-ips" in refused.stderr and bad in refused.stderr
    https = inletsctl(
        env, "create", "-p", provider, "--letsencrypt-domain", "a.example.com",
        "--letsencrypt-email", "me@example.com", "--allow-ips", "203.0.113.0/24", *NO_PROBE,
    )  # fmt: skip
    assert https.returncode == 2 and "Let's Encrypt" in https.stderr
    assert fake.requests == [], "refused before any API call"

    made = inletsctl(
        env, "create", "-p", provider, "--tcp", "--ports", "8080", "--poll", "0s",
        "--allow-ips", "203.0.113.0/24, 2001:db8::/32", *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    allowed = ["203.0.113.0/24", "2001:db8::/32"]
    if isinstance(fake, FakeHetzner):
        ((create,),) = [fake.calls("POST", "/v1/firewalls")]
        rules = {r["port"]: r["source_ips"] for r in create.body["rules"]}
        (server,) = fake.calls("POST", "/v1/servers")
        user_data = server.body["user_data"]
    elif isinstance(fake, FakeLinode):
        (firewall,) = fake.firewalls.values()
        rules = {
            r["ports"]: r["addresses"].get("ipv4", []) + r["addresses"].get("ipv6", [])
            for r in firewall["rules"]["inbound"]
        }
        user_data = next(iter(fake.user_data.values()))
    else:
        (firewall,) = fake.firewalls.values()
        rules = {r["ports"]: r["sources"]["addresses"] for r in firewall["inbound_rules"]}
        user_data = next(iter(fake.user_data.values()))
    assert rules == {"8123": ["0.0.0.0/0", "::/0"], "8080": allowed}
    assert " --allow-ips 203.0.113.0/24,2001:db8::/32\n" in user_data
    assert (
        Store(Path(env["INLETSCTL_STATE_DIR"])).get(host["id"]).allow_ips
        == "203.0.113.0/24,2001:db8::/32"
    )
    gone = inletsctl(env, "delete", "--id", host["id"])
    assert gone.returncode == 0, gone.stderr
