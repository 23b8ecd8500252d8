"""Vultr through its REST API (requests' real HTTP traffic), against the local fake."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace

import pytest

from providers import kit
from providers.errors import (
    InvalidSpec,
    ProviderAPIError,
    ProviderError,
)
from providers.models import ProviderConfig, TunnelMode
from providers.testing.conformance import (
    ProviderConformance,
    check_deleted_host_is_gone,
    check_failed_undo,
    spec_for,
    wait_active,
)
from providers.testing.jsonapi import serving
from providers.vultr import VultrProvider
from tests.conftest import free_port
from tests.fakes.vultr import REGIONS, FakeVultr


@pytest.fixture
def vultr_fake() -> Iterator[FakeVultr]:
    yield from serving(FakeVultr())


@pytest.fixture
def retries() -> list[int]:
    """Every retry of a 429, by number; the wait itself is zero."""
    return []


@pytest.fixture
def vultr(vultr_fake: FakeVultr, retries: list[int]) -> VultrProvider:
    config = ProviderConfig(access_token=vultr_fake.token, endpoint_url=vultr_fake.base_url)
    return VultrProvider(config, retry_interval=lambda n: retries.append(n) or 0.0)


class TestVultrConformance(ProviderConformance):
    failure_points = tuple(FakeVultr.steps)

    @pytest.fixture
    def cli_env(self, vultr_fake: FakeVultr) -> dict[str, str]:
        return {"VULTR_API_KEY": vultr_fake.token, "VULTR_API_ENDPOINT": vultr_fake.base_url}

    @pytest.fixture
    def provider(self, vultr: VultrProvider) -> VultrProvider:
        return vultr

    @pytest.fixture
    def fake(self, vultr_fake: FakeVultr) -> FakeVultr:
        return vultr_fake


def test_instance_gets_user_data_tags_defaults_and_its_firewall_group(vultr, vultr_fake) -> None:
    spec = spec_for(vultr)
    host = vultr.create(spec)
    (create,) = vultr_fake.calls("POST", "/v2/instances")
    assert base64.b64decode(create.body["user_data"]).decode() == spec.user_data
    assert vultr_fake.user_data[host.id] == spec.user_data
    instance = vultr_fake.instances[host.id]
    assert instance["tags"] == ["inletsctl=exit-server", f"inletsctl-host={spec.host_id}"]
    assert (instance["region"], instance["plan"], instance["os_id"]) == ("lhr", "vc2-1c-1gb", 2136)
    assert instance["label"] == spec.name and "ipv6" in instance["features"]
    assert create.body["backups"] == "disabled", "Vultr bills for backups"
    group_id = host.additional["firewall_id"]
    group = vultr_fake.firewall_groups[group_id]
    assert group["description"] == f"inletsctl=exit-server inletsctl-host={spec.host_id}"
    assert group["instance_count"] == 1
    # the group and its rules exist before the instance is asked for: never unfiltered
    assert create.body["firewall_group_id"] == group_id
    methods = [(r.method, r.path) for r in vultr_fake.requests if r.method == "POST"]
    assert methods[-1] == ("POST", "/v2/instances")
    assert {p for _, p in methods[:-1]} == {"/v2/firewalls", f"/v2/firewalls/{group_id}/rules"}
    assert host.status.value == "creating" and host.ip == "", "pending: 0.0.0.0 is no address"
    active = wait_active(vultr, host)
    assert active.ip.startswith("192.0.2.") and active.ipv6.startswith("2001:db8:")
    assert active.additional["host_id"] == spec.host_id


def _rules(fake: FakeVultr) -> list[tuple[str, str, str]]:
    (rules,) = fake.rules.values()
    assert {(r["protocol"], r["action"]) for r in rules} == {("tcp", "accept")}
    return [(r["port"], r["ip_type"], f"{r['subnet']}/{r['subnet_size']}") for r in rules]


def _anywhere(*ports: str) -> list[tuple[str, str, str]]:
    return [rule for p in ports for rule in ((p, "v4", "0.0.0.0/0"), (p, "v6", "::/0"))]


@pytest.mark.parametrize(
    ("server_changes", "ports"),
    [
        ({}, ["8080", "8123"]),
        ({"ports": (), "control_port": 9000}, ["1024:65535"]),  # 9000 lies inside the range
        ({"mode": TunnelMode.HTTP, "data_port": 8080}, ["8080", "8123"]),
        ({"mode": TunnelMode.HTTP, "letsencrypt_domains": ("x.example",)}, ["80", "443", "8123"]),
    ],
)
def test_firewall_rules_match_the_ports(vultr, vultr_fake, server_changes, ports) -> None:
    spec = spec_for(vultr)
    vultr.create(replace(spec, server=replace(spec.server, **server_changes)))
    assert _rules(vultr_fake) == _anywhere(*ports)


def test_allow_ips_restrict_the_data_ports_but_not_the_control_port(vultr, vultr_fake) -> None:
    spec = spec_for(vultr)
    allowed = ("203.0.113.0/24", "2001:db8::/32")
    vultr.create(replace(spec, server=replace(spec.server, allow_ips=allowed)))
    assert _rules(vultr_fake) == [
        *_anywhere("8123"),
        ("8080", "v4", "203.0.113.0/24"),
        ("8080", "v6", "2001:db8::/32"),
    ]


def test_more_rules_than_a_group_holds_are_refused_before_any_call(vultr, vultr_fake) -> None:
    spec = spec_for(vultr)
    allowed = tuple(f"198.51.{n}.0/24" for n in range(50))
    with pytest.raises(InvalidSpec, match="52 rules") as info:
        vultr.create(replace(spec, server=replace(spec.server, allow_ips=allowed)))
    assert "--allow-ips" in info.value.hint
    assert vultr_fake.requests == []


def test_delete_removes_the_instance_then_its_group(vultr, vultr_fake) -> None:
    host = vultr.create(spec_for(vultr))
    vultr.delete(host_id=host.id)
    deletes = [r.path for r in vultr_fake.requests if r.method == "DELETE"]
    assert deletes == [
        f"/v2/instances/{host.id}",
        f"/v2/firewalls/{host.additional['firewall_id']}",
    ]
    assert vultr_fake.resources() == set()


def test_a_firewall_group_left_after_delete_is_named(vultr, vultr_fake) -> None:
    host = vultr.create(spec_for(vultr))
    vultr_fake.refuse("DELETE /v2/firewalls/.*", 503, "", "service unavailable")
    with pytest.raises(ProviderError) as info:
        vultr.delete(host_id=host.id)
    assert vultr_fake.instances == {}
    assert f"firewall group {host.additional['firewall_id']}" in str(info.value)
    assert "again" in info.value.hint


def test_a_group_of_someone_elses_is_never_purged(vultr, vultr_fake) -> None:
    spec = spec_for(vultr)
    vultr.create(spec)
    for description in ("web servers", f"inletsctl-host={spec.host_id}", "inletsctl=exit-server"):
        vultr_fake.firewall_groups[description] = {"id": description, "description": description}
    removed = kit.delete_host(vultr, spec.host_id)
    assert len(removed) == 2 and removed[0].startswith("instance ")
    assert set(vultr_fake.firewall_groups) == {
        "web servers",
        f"inletsctl-host={spec.host_id}",
        "inletsctl=exit-server",
    }


def test_429_is_retried_with_backoff_and_succeeds(vultr, vultr_fake, retries) -> None:
    vultr_fake.throttle_once("POST /v2/instances")
    host = vultr.create(spec_for(vultr))
    assert retries == [0]
    assert len(vultr_fake.calls("POST", "/v2/instances")) == 2
    assert list(vultr_fake.instances) == [host.id]


def test_429_that_does_not_stop_is_an_error_with_a_hint(vultr_fake, retries) -> None:
    config = ProviderConfig(access_token=vultr_fake.token, endpoint_url=vultr_fake.base_url)
    provider = VultrProvider(config, retry_interval=lambda n: retries.append(n) or 0.0)
    for _ in range(6):
        vultr_fake.throttle_once("GET /v2/instances")
    with pytest.raises(ProviderAPIError, match="HTTP 429") as info:
        provider.list()
    assert retries == [0, 1, 2, 3, 4]
    assert "30 requests a second" in info.value.hint


def test_the_default_backoff_grows_and_is_capped() -> None:
    from providers.vultr import _backoff

    assert [_backoff(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_401_is_one_line_naming_the_variable(vultr_fake, monkeypatch) -> None:
    monkeypatch.delenv("INLETS_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("VULTR_API_KEY", "not-the-key")
    monkeypatch.setenv("VULTR_API_ENDPOINT", vultr_fake.base_url)
    with pytest.raises(ProviderAPIError) as info:
        VultrProvider(ProviderConfig()).list()
    text = f"{info.value}\n{info.value.hint}"
    assert str(info.value).count("\n") == 0
    assert "VULTR_API_KEY" in str(info.value) and "401" in str(info.value)
    assert "not-the-key" not in text
    assert vultr_fake.requests[0].headers["authorization"] == "Bearer not-the-key"


def test_the_flag_wins_over_the_variable(vultr_fake, monkeypatch) -> None:
    monkeypatch.setenv("VULTR_API_KEY", "not-the-key")
    config = ProviderConfig(access_token=vultr_fake.token, endpoint_url=vultr_fake.base_url)
    assert VultrProvider(config).list() == []


def test_an_unreachable_endpoint_is_one_line_naming_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("VULTR_API_ENDPOINT", f"http://127.0.0.1:{free_port()}/v2")
    with pytest.raises(ProviderAPIError) as info:
        VultrProvider(ProviderConfig(access_token="x")).list()
    assert "Connection refused" in str(info.value) and "\n" not in str(info.value)
    assert "VULTR_API_ENDPOINT" in info.value.hint


@pytest.mark.parametrize(
    ("changes", "suggestion"),
    [
        ({"region": "lhr1"}, "lhr"),
        ({"plan": "vc2-1c-1g"}, "vc2-1c-1gb"),
        ({"image": "debian-12-x86"}, "debian-12-x64"),
        ({"region": "ams", "plan": "vhf-1c-1gb"}, "vc2-1c-1gb"),  # not offered there
    ],
)
def test_unknown_region_plan_or_image_suggests_the_closest(
    vultr, vultr_fake, changes, suggestion
) -> None:
    with pytest.raises(InvalidSpec) as info:
        vultr.create(spec_for(vultr, **changes))
    assert f"Did you mean {suggestion}" in info.value.hint
    assert vultr_fake.calls("POST", ".*") == []


def test_image_by_os_id_as_vultr_cli_takes_it(vultr, vultr_fake) -> None:
    host = vultr.create(spec_for(vultr, image="2284"))
    assert vultr_fake.instances[host.id]["os"] == "Ubuntu 24.04 LTS x64"
    host = vultr.create(spec_for(vultr, image="ubuntu-22.04-lts-x64"))
    assert vultr_fake.instances[host.id]["os_id"] == 1743


def test_an_error_of_the_api_is_its_message_and_leaves_nothing(vultr, vultr_fake) -> None:
    vultr_fake.refuse("POST /v2/instances", 400, "", "Server add failed: plan is sold out.")
    with pytest.raises(ProviderAPIError, match=r"plan is sold out\. \(HTTP 400\)"):
        kit.create_host(vultr, spec_for(vultr))
    assert vultr_fake.resources() == set()


def test_list_follows_the_cursor(vultr, vultr_fake) -> None:
    vultr_fake.max_per_page = 2
    made = {vultr.create(spec_for(vultr)).id for _ in range(3)}
    vultr_fake.foreign_vm()
    assert {h.id for h in vultr.list()} == made
    (first, second) = vultr_fake.calls("GET", "/v2/instances")
    assert "cursor" not in first.query and second.query["cursor"], "the second page by cursor"


def test_failed_undo_says_how_to_finish_it(vultr, vultr_fake) -> None:
    refusal = (503, "", "service unavailable")
    _, message = check_failed_undo(vultr, vultr_fake, "create_instance", refusal)
    (group_id,) = vultr_fake.firewall_groups
    assert f"firewall group {group_id}" in message


def test_a_deleted_host_is_not_found_by_id_or_ip(vultr) -> None:
    check_deleted_host_is_gone(vultr)


def test_known_regions_are_the_apis_region_ids(vultr, vultr_fake) -> None:
    assert vultr.known_regions() == list(REGIONS)
    assert vultr_fake.calls("GET", "/v2/regions")[0].query["per_page"] == ["500"]
