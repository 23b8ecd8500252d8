"""DNS records through each provider's real client, against fakes of the documented APIs.

Route 53 is moto's (through boto3), DigitalOcean Domains and Hetzner DNS are the JSON
fakes (through requests). Every case ends by asking the fake, never our state, what
records exist: the user's must be exactly as they were.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inletsctl import hosts
from inletsctl.errors import InletsctlError, ProviderFailure
from inletsctl.readiness import Wait
from inletsctl.store import Store
from providers import kit
from providers.digitalocean import DigitalOceanProvider
from providers.dns import DnsConfig, DnsProvider
from providers.dns.digitalocean import DigitalOceanDns
from providers.dns.hetzner import HetznerDns
from providers.dns.kit import claim_text, place
from providers.dns.route53 import Route53Dns
from providers.errors import CredentialsMissing, InvalidSpec, ProviderAPIError, ProvisionTimeout
from providers.models import HostStatus, ProviderConfig, TunnelMode
from providers.testing.conformance import ProviderConformance
from providers.testing.faults import Fault
from providers.testing.jsonapi import serving
from tests.fakes.aws.route53 import MotoRoute53
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
)
from tests.fakes.digitalocean import FakeDigitalOceanDns
from tests.fakes.hetzner_dns import FakeHetznerDns

IP, IPV6 = "203.0.113.10", "2001:db8::10"
#: the user's own records, in every zone: the same IP as ours at another name, a TXT
USERS = {("www.example.com", "A", IP), ("example.com", "TXT", "v=spf1 -all")}


@dataclass
class Case:
    """One DNS provider under test: the client, and the fake's handle."""

    name: str
    dns: DnsProvider
    fake: Any
    steps: tuple[str, ...]


def _add_users_records(fake: Any) -> None:
    fake.add_record("example.com", "www", "A", IP)
    fake.add_record("example.com", "@", "TXT", "v=spf1 -all")


@pytest.fixture
def droplets() -> Iterator[FakeDigitalOceanDns]:
    """The DigitalOcean fake: droplets for every case, and its Domains for one of them."""
    yield from serving(FakeDigitalOceanDns())


@pytest.fixture
def hetzner_dns() -> Iterator[FakeHetznerDns]:
    yield from serving(FakeHetznerDns())


@pytest.fixture
def route53(moto: str) -> Iterator[MotoRoute53]:
    fake = MotoRoute53(moto)
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(params=["digitalocean", "hetzner", "route53"])
def case(request: pytest.FixtureRequest, droplets: FakeDigitalOceanDns) -> Case:
    if request.param == "digitalocean":
        droplets.add_domain("example.com")
        dns: DnsProvider = DigitalOceanDns(
            DnsConfig(token=droplets.token, endpoint_url=droplets.base_url)
        )
        made = Case("digitalocean", dns, droplets, ("create_claim", "create_address"))
    elif request.param == "hetzner":
        fake: Any = request.getfixturevalue("hetzner_dns")
        fake.add_zone("example.com")
        dns = HetznerDns(DnsConfig(token=fake.token, endpoint_url=fake.base_url))
        made = Case("hetzner", dns, fake, ("create_claim", "create_address"))
    else:
        fake = request.getfixturevalue("route53")
        fake.add_zone("example.com")
        dns = Route53Dns(_aws(fake.endpoint), poll_interval=0.0)
        made = Case("route53", dns, fake, ("change_records",))
    _add_users_records(made.fake)
    if request.param != "route53":
        made.fake.max_per_page = 1  # every list is several pages: all of them are read
    return made


def _aws(endpoint: str) -> DnsConfig:
    return DnsConfig(
        token=CREDENTIALS["aws_access_key_id"],
        secret_key=CREDENTIALS["aws_secret_access_key"],
        endpoint_url=endpoint,
    )


def test_publish_then_purge_removes_ours_and_only_ours(case: Case) -> None:
    placement = place(case.dns, ["App.Example.com"])
    assert {d: z.name for d, z in placement.zones.items()} == {"app.example.com": "example.com"}
    made = placement.publish("host-1", IP, IPV6, timeout=10)
    ours = {
        ("_inletsctl.app.example.com", "TXT", claim_text("host-1", [IP, IPV6])),
        ("app.example.com", "A", IP),
        ("app.example.com", "AAAA", IPV6),
    }
    assert {(r.name, r.type, r.value) for r in made} == ours
    assert case.fake.dns_records() == USERS | ours
    assert placement.purge("another-host") == [], "a claim names one host"
    assert case.fake.dns_records() == USERS | ours
    removed = placement.purge("host-1")
    assert len(removed) == 3 and removed[-1].startswith("TXT _inletsctl.app.example.com")
    assert case.fake.dns_records() == USERS, "the user's records, the same IP included, stay"
    assert placement.purge("host-1") == [], "already gone is success"


def test_a_name_already_in_use_is_refused_before_anything_is_made(case: Case) -> None:
    with pytest.raises(InvalidSpec, match=r"www\.example\.com already has a A record") as err:
        place(case.dns, ["www.example.com"])
    assert "--letsencrypt-domain" in (err.value.hint or "")
    assert case.fake.dns_records() == USERS


def test_a_zone_that_is_not_there_names_dns_zone(case: Case) -> None:
    with pytest.raises(InvalidSpec, match="no zone 'example.org'") as err:
        place(case.dns, ["app.example.org"], "example.org")
    assert "--dns-zone" in (err.value.hint or "") and "example.com" in (err.value.hint or "")
    with pytest.raises(InvalidSpec, match="no zone holds app.example.org"):
        place(case.dns, ["app.example.org"])


def test_the_longest_hosted_zone_wins_unless_dns_zone_says_otherwise(
    droplets: FakeDigitalOceanDns,
) -> None:
    for zone in ("example.com", "dev.example.com"):
        droplets.add_domain(zone)
    dns = DigitalOceanDns(DnsConfig(token=droplets.token, endpoint_url=droplets.base_url))
    assert place(dns, ["a.dev.example.com"]).zones["a.dev.example.com"].name == "dev.example.com"
    assert place(dns, ["a.dev.example.com"], "example.com").zones["a.dev.example.com"].name == (
        "example.com"
    )
    placement = place(dns, ["a.dev.example.com"], "example.com")
    placement.publish("h", IP, "", 10)
    assert ("_inletsctl.a.dev", "TXT") in {
        (r["name"], r["type"]) for r in droplets.domains["example.com"].values()
    }, "the record went to the zone asked for, with its name relative to it"


def test_an_address_the_user_changed_is_left_and_only_the_claim_goes(
    droplets: FakeDigitalOceanDns,
) -> None:
    droplets.add_domain("example.com")
    dns = DigitalOceanDns(DnsConfig(token=droplets.token, endpoint_url=droplets.base_url))
    placement = place(dns, ["app.example.com"])
    placement.publish("host-1", IP, "", 10)
    (ours,) = [r for r in droplets.domains["example.com"].values() if r["type"] == "A"]
    ours["data"] = "198.51.100.7"  # pointed elsewhere by hand: it is the user's now
    placement.purge("host-1")
    assert droplets.dns_records() == {("app.example.com", "A", "198.51.100.7")}


def test_route53_waits_for_insync_polling_at_the_given_interval(route53: MotoRoute53) -> None:
    route53.add_zone("example.com")
    route53.add_zone("example.com.internal", private=True)
    route53.proxy.pending_reads = 2
    sleeps: list[float] = []
    dns = Route53Dns(_aws(route53.endpoint), poll_interval=0.25, sleep=sleeps.append)
    assert [z.name for z in dns.zones()] == ["example.com"], "private zones serve no ACME"
    place(dns, ["app.example.com"]).publish("host-1", IP, "", 10)
    assert route53.proxy.change_reads == 3 and sleeps == [0.25, 0.25]


def test_route53_gives_up_at_the_timeout(route53: MotoRoute53) -> None:
    route53.add_zone("example.com")
    route53.proxy.pending_reads = 1000
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    dns = Route53Dns(_aws(route53.endpoint), poll_interval=5, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(ProvisionTimeout, match="still PENDING after 30s"):
        place(dns, ["app.example.com"]).publish("host-1", IP, "", 30)
    assert now[0] == 30


def test_a_rejected_token_names_its_variable(
    hetzner_dns: FakeHetznerDns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HETZNER_DNS_TOKEN", "wrong")
    dns = HetznerDns(DnsConfig(endpoint_url=hetzner_dns.base_url))
    with pytest.raises(ProviderAPIError, match="HETZNER_DNS_TOKEN") as err:
        dns.zones()
    assert "HETZNER_DNS_TOKEN" in (err.value.hint or "")
    monkeypatch.delenv("HETZNER_DNS_TOKEN")
    with pytest.raises(CredentialsMissing, match="no DNS API token") as missing:
        HetznerDns(DnsConfig())
    assert "HETZNER_DNS_TOKEN" in (missing.value.hint or "")


# -- the DNS step of a create, with the kit's faults ---------------------------------------

_FAULTS = (Fault.LOST, Fault.DROPPED, Fault.INTERRUPT, Fault.TERMINATE)
_RAISES = (InletsctlError, KeyboardInterrupt, kit.Terminated)


def _create(store: Store, droplets: FakeDigitalOceanDns, placement: Any) -> hosts.HostRecord:
    vm = DigitalOceanProvider(
        ProviderConfig(access_token=droplets.token, endpoint_url=droplets.base_url)
    )
    req = hosts.CreateRequest(
        provider="digitalocean", mode=TunnelMode.HTTP, domains=("app.example.com",)
    )
    spec = ProviderConformance().make_spec(vm)
    waiting = hosts.Waiting(until=Wait.running, backoff=hosts.constant(0), sleep=lambda _: None)
    return hosts.create(store, vm, req, spec, waiting, lambda *_: None, placement)


def test_create_publishes_once_the_ip_is_known_and_delete_removes_it(
    case: Case, droplets: FakeDigitalOceanDns, tmp_path: Path
) -> None:
    store = Store(tmp_path)
    record = _create(store, droplets, place(case.dns, ["app.example.com"]))
    assert ("app.example.com", "A", record.ip) in case.fake.dns_records()
    assert '"type": "A"' in record.dns and record.ip in record.dns
    hosts.delete(store, _vm(droplets), record, lambda _vm, _dns: _config_of(case))
    assert droplets.resources() == set()
    assert case.fake.dns_records() == USERS


def _vm(droplets: FakeDigitalOceanDns) -> DigitalOceanProvider:
    return DigitalOceanProvider(
        ProviderConfig(access_token=droplets.token, endpoint_url=droplets.base_url)
    )


def _config_of(case: Case) -> DnsConfig:
    if case.name == "route53":
        return _aws(case.fake.endpoint)
    return DnsConfig(token=case.fake.token, endpoint_url=case.fake.base_url)


@pytest.mark.parametrize("fault", _FAULTS, ids=[f.value for f in _FAULTS])
def test_a_fault_at_each_dns_step_leaves_no_record_and_no_vm(
    case: Case, droplets: FakeDigitalOceanDns, fault: Fault, tmp_path: Path
) -> None:
    store = Store(tmp_path)
    for step in case.steps:
        case.fake.arm(step, fault)
        with pytest.raises(_RAISES):
            _create(store, droplets, place(case.dns, ["app.example.com"]))
        assert case.fake.struck(step)
        assert droplets.resources() == set(), f"VM left after {fault.value} at {step}"
        assert case.fake.dns_records() == USERS, f"records left after {fault.value} at {step}"
    assert {r.status for r in store.all(include_deleted=True)} == {HostStatus.DELETED.value}


def test_records_that_cannot_be_removed_keep_the_vm_and_name_the_command(
    droplets: FakeDigitalOceanDns, tmp_path: Path
) -> None:
    droplets.add_domain("example.com")
    dns = DigitalOceanDns(DnsConfig(token=droplets.token, endpoint_url=droplets.base_url))
    droplets.arm("create_address", Fault.LOST)
    droplets.refuse(r"DELETE /v2/domains/.*", 503, "service_unavailable", "Try again later")
    store = Store(tmp_path)
    with pytest.raises(ProviderFailure) as err:
        _create(store, droplets, place(dns, ["app.example.com"]))
    (row,) = store.all(include_deleted=True)
    assert f"inletsctl delete --id {row.id}" in err.value.hint
    assert row.status == HostStatus.FAILED.value
    assert len(droplets.resources()) == 2, "the VM holds its IP while a name points at it"


def test_importing_the_dns_modules_imports_no_sdk() -> None:
    code = (
        "import sys, providers.dns.route53, providers.dns.digitalocean, providers.dns.hetzner;"
        "sys.exit(bool({'boto3', 'botocore', 'requests'} & set(sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_the_vm_clouds_credential_flags_reach_only_the_same_accounts_dns() -> None:
    from inletsctl.providers_config import Access, dns_config

    access = Access(access_token="key-id", secret_key="secret", profile="work")
    assert dns_config(access, "aws", "route53") == DnsConfig(
        token="key-id", secret_key="secret", profile="work"
    )
    assert dns_config(access, "digitalocean", "digitalocean").token == "key-id"
    for provider, dns in (("hetzner", "hetzner"), ("linode", "digitalocean"), ("aws", "hetzner")):
        assert dns_config(access, provider, dns) == DnsConfig(), (provider, dns)
