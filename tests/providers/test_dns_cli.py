"""``create --dns`` through the whole CLI, as a shell script runs it, against the fakes.

``inletsctl`` runs as a child process; the only links to the fakes are what a user
would set: the SDKs' token and endpoint variables (``AWS_ENDPOINT_URL_ROUTE_53`` as
botocore reads it) and ``INLETSCTL_STATE_DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inletsctl.store import Store
from providers.testing.faults import Fault
from providers.testing.jsonapi import serving
from tests.fakes.aws.route53 import MotoRoute53
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    aws_env_fixture,
    live_resources,
    moto_fixture,
    moto_url_fixture,
    plain_client,
)
from tests.fakes.digitalocean import FakeDigitalOceanDns
from tests.fakes.hetzner import FakeHetzner
from tests.fakes.hetzner_dns import FakeHetznerDns
from tests.providers.cli import NO_PROBE, inletsctl

HTTPS = ("--letsencrypt-domain", "app.example.com", "--letsencrypt-email", "me@example.com")
USERS = {("www.example.com", "A", "203.0.113.99"), ("example.com", "TXT", "v=spf1 -all")}
TIMEOUT_S = 120


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "INLETS_ACCESS_TOKEN"}
    return {**env, "INLETSCTL_STATE_DIR": str(tmp_path), "NO_COLOR": "1"}


def users_records(fake: Any) -> None:
    fake.add_record("example.com", "www", "A", "203.0.113.99")
    fake.add_record("example.com", "@", "TXT", "v=spf1 -all")


@pytest.fixture
def droplets() -> Iterator[FakeDigitalOceanDns]:
    fake = FakeDigitalOceanDns()
    fake.add_domain("example.com")
    users_records(fake)
    yield from serving(fake)


@pytest.fixture
def do_env(droplets: FakeDigitalOceanDns, tmp_path: Path) -> dict[str, str]:
    return {
        **base_env(tmp_path),
        "DIGITALOCEAN_ACCESS_TOKEN": droplets.token,
        "DIGITALOCEAN_END_POINT": droplets.base_url,
    }


def _create_get_delete(
    env: dict[str, str], dns_fake: Any, vm_args: list[str], creds: tuple[str, ...] = ()
) -> dict[str, Any]:
    """create -o json, get (JSON and text), delete --id; returns create's document."""
    args = (*vm_args, *creds, *HTTPS, "--poll", "0s", *NO_PROBE, "-o", "json")
    made = inletsctl(env, "create", *args)
    assert made.returncode == 0, made.stderr
    host = json.loads(made.stdout)
    points = {(r["name"], r["type"], r["value"]) for r in host["dns"]["records"]}
    assert ("app.example.com", "A", host["ip"]) in points
    assert points <= dns_fake.dns_records(), "what the state says is what the API has"
    assert host["dns"]["zones"] == ["example.com"]

    got = inletsctl(env, "get", host["id"], "-o", "json")
    assert json.loads(got.stdout)["dns"] == host["dns"]
    text = inletsctl(env, "get", host["id"])
    assert f"app.example.com A {host['ip']}" in text.stdout, text.stdout

    gone = inletsctl(env, "delete", "--id", host["id"], *creds)
    assert gone.returncode == 0, gone.stderr
    assert dns_fake.dns_records() == USERS, "ours removed, the user's untouched"
    return host


@pytest.mark.network
def test_digitalocean_droplet_and_domain_records(
    droplets: FakeDigitalOceanDns, do_env: dict[str, str]
) -> None:
    host = _create_get_delete(do_env, droplets, ["-p", "digitalocean", "--dns", "digitalocean"])
    assert droplets.resources() == set()
    assert host["public_url"] == "https://app.example.com"


@pytest.fixture
def hetzner(tmp_path: Path) -> Iterator[tuple[FakeHetzner, FakeHetznerDns, dict[str, str]]]:
    """Hetzner Cloud and Hetzner DNS, two APIs with two tokens, and the env reaching both."""
    cloud, dns = FakeHetzner().start(), FakeHetznerDns().start()
    cloud.running_reads = 0  # the CLI's SDK client waits 1 s between action polls
    dns.add_zone("example.com")
    users_records(dns)
    env = {
        **base_env(tmp_path),
        "HCLOUD_TOKEN": cloud.token,
        "HCLOUD_ENDPOINT": cloud.base_url,
        "HETZNER_DNS_TOKEN": dns.token,
        "HETZNER_DNS_ENDPOINT": dns.base_url,
    }
    try:
        yield cloud, dns, env
    finally:
        cloud.stop()
        dns.stop()


@pytest.mark.network
def test_hetzner_server_with_hetzner_dns(
    hetzner: tuple[FakeHetzner, FakeHetznerDns, dict[str, str]],
) -> None:
    cloud, dns, env = hetzner
    _create_get_delete(env, dns, ["-p", "hetzner", "--dns", "hetzner", "--dns-zone", "example.com"])
    assert cloud.resources() == set()
    assert all(r.headers.get("auth-api-token") == dns.token for r in dns.requests)


AWS = ["-p", "aws", "--dns", "route53"]


def _aws_creds(moto: str) -> tuple[str, ...]:
    """The VM's endpoint, and keys that reach Route 53 too (one account)."""
    return (
        "--endpoint-url", moto,
        "--access-token", CREDENTIALS["aws_access_key_id"],
        "--secret-key", CREDENTIALS["aws_secret_access_key"],
    )  # fmt: skip


@pytest.fixture
def route53(moto: str) -> Iterator[MotoRoute53]:
    fake = MotoRoute53(moto)
    fake.add_zone("example.com")
    users_records(fake)
    try:
        yield fake
    finally:
        fake.stop()


def test_ec2_instance_with_route53_records(moto: str, route53: MotoRoute53, tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "AWS_ENDPOINT_URL_ROUTE_53": route53.endpoint}
    _create_get_delete(env, route53, AWS, _aws_creds(moto))
    assert live_resources(plain_client(moto)) == set()


@pytest.mark.network
def test_dns_flags_are_checked_before_any_api_call(
    droplets: FakeDigitalOceanDns, do_env: dict[str, str]
) -> None:
    refusals = {
        ("--dns", "cloudflare", *HTTPS): "no such DNS provider",
        ("--dns", "digitalocean", "--http"): "--dns makes records for --letsencrypt-domain",
        ("--dns-zone", "example.com", *HTTPS): "--dns-zone needs --dns",
        ("--dns", "digitalocean", "--dns-zone", "example.org", *HTTPS): "not inside --dns-zone",
        ("--dns", "digitalocean", "--wait", "none", *HTTPS): "--wait none",
        ("--dns", "digitalocean", "--letsencrypt-domain", "*.example.com",
         "--letsencrypt-email", "me@example.com"): "not a host name",
    }  # fmt: skip
    for args, words in refusals.items():
        refused = inletsctl(do_env, "create", "-p", "digitalocean", *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert words in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert droplets.requests == [], "refused before any API call"


@pytest.mark.network
def test_a_zone_that_does_not_exist_or_a_name_in_use_makes_no_vm(
    droplets: FakeDigitalOceanDns, do_env: dict[str, str]
) -> None:
    for args, words in (
        (("--dns-zone", "app.example.com"), "--dns-zone"),
        (("--letsencrypt-domain", "www.example.com"), "already has a A record (203.0.113.99)"),
    ):
        refused = inletsctl(
            do_env, "create", "-p", "digitalocean", "--dns", "digitalocean", *HTTPS, *args
        )
        assert refused.returncode == 2, refused.stderr
        assert words in refused.stderr, refused.stderr
    assert droplets.calls("POST", r"/v2/droplets/?") == []
    assert droplets.dns_records() == USERS


@pytest.mark.network
def test_a_dns_failure_after_the_vm_exists_undoes_the_vm(
    droplets: FakeDigitalOceanDns, do_env: dict[str, str], tmp_path: Path
) -> None:
    droplets.refuse(r"POST /v2/domains/.*", 403, "forbidden", "You are not authorized to do that.")
    made = inletsctl(
        do_env, "create", "-p", "digitalocean", "--dns", "digitalocean", *HTTPS, *NO_PROBE,
        "--poll", "0s",
    )  # fmt: skip
    assert made.returncode == 1, made.stderr
    assert "You are not authorized" in made.stderr and "Traceback" not in made.stderr
    assert "DIGITALOCEAN_ACCESS_TOKEN" in made.stderr, "the hint names the token to fix"
    assert droplets.calls("POST", r"/v2/droplets/?"), "the VM was made first"
    assert droplets.resources() == set() and droplets.dns_records() == USERS
    (row,) = Store(tmp_path).all(include_deleted=True)
    assert row.status == "deleted"


def _killed_at(
    env: dict[str, str], fake: Any, step: str, argv: list[str], creds: tuple[str, ...] = ()
) -> None:
    """``inletsctl create`` killed -9 at ``step``, then one ``delete --id``."""
    started = threading.Event()
    pid: list[int] = []

    def victim() -> int:
        started.wait(TIMEOUT_S)
        return pid[0]

    fake.arm(step, Fault.KILL, victim)
    command = [sys.executable, "-m", "inletsctl", "create", *argv, *creds, *HTTPS, *NO_PROBE]
    proc = subprocess.Popen(command + ["--poll", "0s"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        pid.append(proc.pid)
        started.set()
        assert proc.wait(TIMEOUT_S) == -9, "killed at the step"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert fake.struck(step)
    (host,) = json.loads(inletsctl(env, "list", "--all", "-o", "json").stdout)
    gone = inletsctl(env, "delete", "--id", host["id"], *creds)
    assert gone.returncode == 0, gone.stderr
    assert fake.dns_records() == USERS, f"records left after kill -9 at {step} and one delete"


@pytest.mark.network
@pytest.mark.parametrize("step", ["create_claim", "create_address"])
def test_killed_during_the_dns_step_then_one_delete_leaves_nothing(
    droplets: FakeDigitalOceanDns, do_env: dict[str, str], step: str
) -> None:
    _killed_at(do_env, droplets, step, ["-p", "digitalocean", "--dns", "digitalocean"])
    assert droplets.resources() == set()


@pytest.mark.network
def test_killed_while_hetzner_dns_makes_the_address_then_one_delete_leaves_nothing(
    hetzner: tuple[FakeHetzner, FakeHetznerDns, dict[str, str]],
) -> None:
    cloud, dns, env = hetzner
    _killed_at(env, dns, "create_address", ["-p", "hetzner", "--dns", "hetzner"])
    assert cloud.resources() == set()


def test_killed_during_the_route53_change_then_one_delete_leaves_nothing(
    moto: str, route53: MotoRoute53, tmp_path: Path
) -> None:
    env = {**base_env(tmp_path), "AWS_ENDPOINT_URL_ROUTE_53": route53.endpoint}
    _killed_at(env, route53, "change_records", AWS, _aws_creds(moto))
    assert live_resources(plain_client(moto)) == set()
