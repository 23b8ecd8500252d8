"""DigitalOcean through python-digitalocean's real HTTP traffic, against the local fake."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from providers import kit
from providers.digitalocean import DigitalOceanProvider
from providers.errors import InvalidSpec, ProviderAPIError
from providers.models import ProviderConfig, TunnelMode
from providers.testing.conformance import (
    ProviderConformance,
    check_deleted_host_is_gone,
    check_failed_undo,
    wait_active,
)
from providers.testing.jsonapi import serving
from tests.fakes.digitalocean import FakeDigitalOcean


@pytest.fixture
def do_fake() -> Iterator[FakeDigitalOcean]:
    yield from serving(FakeDigitalOcean())


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def do(do_fake: FakeDigitalOcean, sleeps: list[float]) -> DigitalOceanProvider:
    config = ProviderConfig(access_token=do_fake.token, endpoint_url=do_fake.base_url)
    return DigitalOceanProvider(config, sleep=sleeps.append, backoff=0.5, clock=lambda: 1000.0)


class TestDigitalOceanConformance(ProviderConformance):
    failure_points = tuple(FakeDigitalOcean.steps)

    @pytest.fixture
    def cli_env(self, do_fake: FakeDigitalOcean) -> dict[str, str]:
        return {
            "DIGITALOCEAN_ACCESS_TOKEN": do_fake.token,
            "DIGITALOCEAN_END_POINT": do_fake.base_url,
        }

    @pytest.fixture
    def provider(self, do: DigitalOceanProvider) -> DigitalOceanProvider:
        return do

    @pytest.fixture
    def fake(self, do_fake: FakeDigitalOcean) -> FakeDigitalOcean:
        return do_fake


def spec_for(provider: DigitalOceanProvider, **server_kw: object):
    spec = ProviderConformance().make_spec(provider)
    if server_kw:
        spec = replace(spec, server=replace(spec.server, **server_kw))
    return spec


def test_droplet_gets_user_data_tags_and_default_slugs(do, do_fake) -> None:
    spec = spec_for(do)
    host = do.create(spec)
    droplet = do_fake.droplets[int(host.id)]
    assert do_fake.user_data[int(host.id)] == spec.user_data
    assert droplet["tags"] == ["inletsctl", f"inletsctl-host-{spec.host_id}"]
    assert (droplet["region"]["slug"], droplet["size_slug"], droplet["image"]["slug"]) == (
        "lon1",
        "s-1vcpu-512mb-10gb",
        "debian-13-x64",
    )
    assert host.additional["host_id"] == spec.host_id
    assert wait_active(do, host).additional["host_id"] == spec.host_id


@pytest.mark.parametrize(
    ("server_kw", "ports"),
    [
        ({}, ["8080", "8123"]),
        ({"ports": ()}, ["1024-65535"]),  # the control port lies inside the allow-list
        ({"mode": TunnelMode.HTTP, "ports": ()}, ["8000", "8123"]),
        (
            {"mode": TunnelMode.HTTP, "letsencrypt_domains": ("a.example.com",)},
            ["80", "443", "8123"],
        ),
    ],
)
def test_firewall_opens_exactly_the_tunnel_ports(do, do_fake, server_kw, ports) -> None:
    spec = spec_for(do, **server_kw)
    host = do.create(spec)
    (firewall,) = do_fake.firewalls.values()
    assert firewall["id"] == host.additional["firewall_id"]
    assert firewall["tags"] == [f"inletsctl-host-{spec.host_id}"]
    assert [r["ports"] for r in firewall["inbound_rules"]] == ports
    assert {r["protocol"] for r in firewall["inbound_rules"]} == {"tcp"}
    assert firewall["inbound_rules"][0]["sources"]["addresses"] == ["0.0.0.0/0", "::/0"]
    # outbound stays open, or cloud-init could not fetch the engine
    assert {(r["protocol"], r["ports"]) for r in firewall["outbound_rules"]} == {
        ("tcp", "0"),
        ("udp", "0"),
        ("icmp", "0"),
    }


def test_allow_ips_restrict_the_data_ports_but_not_the_control_port(do, do_fake) -> None:
    allowed = ("203.0.113.0/24", "2001:db8::/32")
    do.create(spec_for(do, mode=TunnelMode.HTTP, ports=(), allow_ips=allowed))
    (firewall,) = do_fake.firewalls.values()
    rules = {r["ports"]: r["sources"]["addresses"] for r in firewall["inbound_rules"]}
    assert rules == {"8123": ["0.0.0.0/0", "::/0"], "8000": list(allowed)}


def test_429_on_a_read_waits_what_retry_after_says(do, do_fake, sleeps) -> None:
    do_fake.throttle_once("GET /v2/droplets/?")
    assert do.list() == []
    assert sleeps == [float(do_fake.retry_after)]
    assert len(do_fake.calls("GET", r"/v2/droplets/?")) == 2


def test_429_without_retry_after_waits_until_ratelimit_reset(do, do_fake, sleeps) -> None:
    do_fake.retry_after = None
    do_fake.reset_at = 1030  # the provider's clock says 1000
    do_fake.throttle_once("GET /v2/droplets/?")
    assert do.list() == []
    assert sleeps == [30.0]


def test_429_on_create_is_retried_and_the_droplet_made_once(do, do_fake, sleeps) -> None:
    do_fake.throttle_once("POST /v2/droplets/?")
    host = do.create(spec_for(do))
    assert list(do_fake.droplets) == [int(host.id)]
    # a POST's headers are out of the SDK's reach: the backoff (0.5 s) is used
    assert sleeps == [0.5]


def test_429_gives_up_after_max_retries(do_fake, sleeps) -> None:
    config = ProviderConfig(access_token=do_fake.token, endpoint_url=do_fake.base_url)
    provider = DigitalOceanProvider(config, max_retries=1, sleep=sleeps.append)
    do_fake.throttle_once("GET .*")
    do_fake.throttle_once("GET .*")
    with pytest.raises(ProviderAPIError) as info:
        provider.list()
    assert info.value.code == "429"
    assert len(sleeps) == 1


@pytest.mark.parametrize("method", ["list", "create"])
def test_401_is_one_line_naming_the_variable(do_fake, monkeypatch, method) -> None:
    monkeypatch.delenv("INLETS_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", "wrong-token")
    provider = DigitalOceanProvider(ProviderConfig(endpoint_url=do_fake.base_url))
    with pytest.raises(ProviderAPIError) as info:
        if method == "list":
            provider.list()
        else:
            provider.create(spec_for(provider))
    message = str(info.value)
    assert "DIGITALOCEAN_ACCESS_TOKEN" in message and "401" in message
    assert "\n" not in message and "wrong-token" not in message + info.value.hint


def test_401_on_a_post_is_recognised_by_its_documented_message(do, do_fake) -> None:
    do_fake.refuse("POST .*", 401, "unauthorized", "Unable to authenticate you")
    with pytest.raises(ProviderAPIError, match="--access-token.*401"):
        do.create(spec_for(do))


@pytest.mark.parametrize(("field", "typo", "suggestion"), [("region", "lon2", "lon1")])
def test_unknown_region_suggests_the_closest(do, do_fake, field, typo, suggestion) -> None:
    with pytest.raises(InvalidSpec) as info:
        do.create(replace(spec_for(do), **{field: typo}))
    assert typo in str(info.value) and f"Did you mean {suggestion}" in info.value.hint
    assert do_fake.calls("POST", r".*") == []


def test_unknown_size_suggests_the_closest(do, do_fake) -> None:
    with pytest.raises(InvalidSpec) as info:
        do.create(replace(spec_for(do), plan="s-1vcpu-512mb"))
    assert "s-1vcpu-512mb-10gb" in info.value.hint
    assert do_fake.calls("POST", r".*") == []


def test_a_size_the_region_does_not_offer_is_refused_up_front(do, do_fake) -> None:
    do_fake.region_sizes["sgp1"] = ["s-1vcpu-1gb"]
    with pytest.raises(InvalidSpec, match="size in sgp1") as info:
        do.create(replace(spec_for(do), region="sgp1"))
    assert "s-1vcpu-1gb" in info.value.hint
    assert do_fake.calls("POST", r".*") == []


def test_unknown_image_is_the_apis_error_and_leaves_nothing(do, do_fake) -> None:
    with pytest.raises(ProviderAPIError, match="invalid image"):
        do.create(replace(spec_for(do), image="debian-99-x64"))
    assert do_fake.resources() == set()


def test_list_follows_pagination_links(do, do_fake) -> None:
    do_fake.max_per_page = 1
    made = {do.create(spec_for(do)).id for _ in range(3)}
    assert {h.id for h in do.list()} == made
    assert len(do_fake.calls("GET", r"/v2/droplets/?")) == 3


def test_failed_undo_names_the_command_that_finishes_it(do, do_fake) -> None:
    refusal = (500, "server_error", "Unexpected server-side error")
    check_failed_undo(do, do_fake, "create_firewall", refusal)
    assert len(do_fake.droplets) == 1


def test_droplet_is_deleted_before_its_firewall(do, do_fake) -> None:
    spec = spec_for(do)
    kit.create_host(do, spec)
    do.purge(spec.host_id)
    deletes = [r.path.split("/")[2] for r in do_fake.requests if r.method == "DELETE"]
    assert deletes == ["droplets", "firewalls"], "never a VM without its firewall"


def test_token_and_endpoint_from_the_sdk_variables(do_fake, monkeypatch) -> None:
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("INLETS_ACCESS_TOKEN", do_fake.token)
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", do_fake.base_url)
    assert DigitalOceanProvider(ProviderConfig()).list() == []
    assert do_fake.requests[-1].headers["authorization"] == f"Bearer {do_fake.token}"


def test_a_deleted_host_is_not_found_by_id_or_ip(do) -> None:
    check_deleted_host_is_gone(do)
