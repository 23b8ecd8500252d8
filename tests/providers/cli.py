"""What every cloud's CLI tests share: ``inletsctl`` run as a shell script runs it, and
the checks each cloud must pass the same way, so a cloud's test file holds only what
differs (its variables, its resources, its quirks).

The fakes hand out public-looking IPs: a readiness probe must never aim at one, so
every create here stops at ``running`` (:data:`NO_PROBE`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from typing import Any

from providers.testing.conformance import run_cli as inletsctl
from providers.testing.jsonapi import JsonApiFake
from tests.fakes.digitalocean import FakeDigitalOcean
from tests.fakes.hetzner import FakeHetzner
from tests.fakes.linode import FakeLinode

__all__ = [
    "CLOUDS",
    "NO_PROBE",
    "check_dry_run",
    "check_foreign_vm_refused",
    "check_get_list_delete",
    "check_refused_credential",
    "create_json",
    "inletsctl",
]

#: the clouds whose CLI needs only a token and an endpoint variable:
#: name -> (fake, token variable, endpoint variable); the ``token_cloud`` fixture serves each
CLOUDS: dict[str, tuple[type[JsonApiFake], str, str]] = {
    "digitalocean": (FakeDigitalOcean, "DIGITALOCEAN_ACCESS_TOKEN", "DIGITALOCEAN_END_POINT"),
    "hetzner": (FakeHetzner, "HCLOUD_TOKEN", "HCLOUD_ENDPOINT"),
    "linode": (FakeLinode, "LINODE_TOKEN", "LINODE_URL"),
}
#: create's flags that stop at the cloud's "running" and never probe the fake's IP
NO_PROBE = ("--wait", "running")


def create_json(
    env: dict[str, str], provider: str, *flags: str, secrets: Iterable[str] = ()
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """``create --tcp --ports 8080 *flags -o json``, stopped at running: the host is
    active, never probed, has its URL, and none of ``secrets`` is printed. Returns the
    host's JSON and the process, for the cloud's own checks."""
    made = inletsctl(
        env, "create", "-p", provider, "--tcp", "--ports", "8080", "--poll", "0s", *flags,
        *NO_PROBE, "-o", "json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    host: dict[str, Any] = json.loads(made.stdout)
    assert host["status"] == "active" and host["provider"] == provider
    assert host["ready"] is False and "tunnel:" not in made.stderr, "never probed"
    assert host["ip"] and host["url"] == f"wss://{host['ip']}:8123"
    for secret in secrets:
        assert secret not in made.stdout + made.stderr
    return host, made


def check_get_list_delete(
    env: dict[str, str], fake: Any, provider: str, host: dict[str, Any], left: Iterable[str] = ()
) -> None:
    """``get`` shows the host as made, ``list --remote`` finds it alone at the API, and
    ``delete --id`` leaves nothing at the fake but ``left`` (what was there before)."""
    got = inletsctl(env, "get", host["id"], "-o", "json")
    assert got.returncode == 0, got.stderr
    shown = json.loads(got.stdout)
    assert (shown["provider_id"], shown["ip"]) == (host["provider_id"], host["ip"])
    listed = inletsctl(env, "list", "-p", provider, "--remote", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert [h["id"] for h in json.loads(listed.stdout)] == [host["provider_id"]]
    gone = inletsctl(env, "delete", "--id", host["id"])
    assert gone.returncode == 0, gone.stderr
    assert fake.resources() == set(left)


def check_dry_run(
    env: dict[str, str], fake: Any, provider: str, *flags: str, secrets: Iterable[str] = ()
) -> dict[str, Any]:
    """``create --dry-run --tcp *flags`` renders the user-data, asks the API nothing, shows
    none of ``secrets`` and records nothing; returns the document for further checks."""
    shown = inletsctl(
        env, "create", "--provider", provider, "--dry-run", "--tcp", *flags, "-o", "json"
    )
    assert shown.returncode == 0, shown.stderr
    doc: dict[str, Any] = json.loads(shown.stdout)
    assert doc["provider"] == provider
    assert doc["user_data"].startswith("#cloud-config\n")
    assert fake.requests == [], "a dry run asks the API nothing"
    for secret in secrets:
        assert secret not in shown.stdout + shown.stderr
    listed = inletsctl(env, "list", "--all", "-o", "json")
    assert json.loads(listed.stdout) == [], "and records nothing"
    return doc


def check_foreign_vm_refused(
    env: dict[str, str], fake: Any, provider: str, vm: str, ip: str
) -> None:
    """``delete --id`` of a VM we did not make is refused with a hint naming --force, and
    ``delete --ip`` does not find it among ours; neither touches anything."""
    before = fake.resources()
    refused = inletsctl(env, "delete", "-p", provider, "--id", vm)
    assert refused.returncode == 1, refused.stderr
    assert "was not made by inletsctl" in refused.stderr
    assert "Hint: " in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    by_ip = inletsctl(env, "delete", "-p", provider, "--ip", ip)
    assert by_ip.returncode == 1 and "Traceback" not in by_ip.stderr, "IPs: among ours only"
    assert fake.resources() == before, "refused means untouched"


def check_refused_credential(
    env: dict[str, str], fake: Any, provider: str, variable: str, wrong: str, says: str
) -> list[str]:
    """A create with ``variable`` set to ``wrong`` fails in one ``Error:`` line naming
    the variable and ``says`` (the API's status or code) and a hint naming the variable,
    with no traceback, without echoing the value and without making anything. Returns
    stderr's lines for the cloud's own checks."""
    failed = inletsctl(
        {**env, variable: wrong}, "create", "-p", provider, "--tcp", "--ports", "8080", *NO_PROBE
    )
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    error = next(line for line in lines if line.startswith("Error: "))
    assert variable in error and says in error
    assert any(line.startswith("Hint: ") and variable in line for line in lines)
    assert "Traceback" not in failed.stderr and wrong not in failed.stderr
    assert fake.resources() == set()
    return lines
