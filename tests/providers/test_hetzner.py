"""Hetzner Cloud through hcloud's real HTTP traffic, against the local fake."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from providers import kit
from providers.errors import InvalidSpec, ProviderAPIError, ProviderError
from providers.hetzner import HetznerProvider
from providers.models import ProviderConfig, TunnelMode
from providers.testing.conformance import (
    ProviderConformance,
    check_deleted_host_is_gone,
    check_failed_undo,
    spec_for,
    wait_active,
)
from providers.testing.faults import Fault
from providers.testing.jsonapi import serving
from tests.fakes.hetzner import FakeHetzner


@pytest.fixture
def hz_fake() -> Iterator[FakeHetzner]:
    yield from serving(FakeHetzner())


@pytest.fixture
def retries() -> list[int]:
    """Every retry the SDK made, by number; the wait itself is zero."""
    return []


@pytest.fixture
def hz(hz_fake: FakeHetzner, retries: list[int]) -> HetznerProvider:
    config = ProviderConfig(access_token=hz_fake.token, endpoint_url=hz_fake.base_url)
    return HetznerProvider(
        config, poll_interval=0.0, retry_interval=lambda n: retries.append(n) or 0.0
    )


class TestHetznerConformance(ProviderConformance):
    failure_points = tuple(FakeHetzner.steps)

    @pytest.fixture
    def cli_env(self, hz_fake: FakeHetzner) -> dict[str, str]:
        hz_fake.running_reads = 0  # the CLI's SDK client waits 1 s between action polls
        return {"HCLOUD_TOKEN": hz_fake.token, "HCLOUD_ENDPOINT": hz_fake.base_url}

    @pytest.fixture
    def provider(self, hz: HetznerProvider) -> HetznerProvider:
        return hz

    @pytest.fixture
    def fake(self, hz_fake: FakeHetzner) -> FakeHetzner:
        return hz_fake


def test_server_gets_user_data_labels_defaults_and_its_firewall(hz, hz_fake) -> None:
    spec = spec_for(hz)
    host = hz.create(spec)
    server = hz_fake.servers[int(host.id)]
    assert hz_fake.user_data[int(host.id)] == spec.user_data
    labels = {"inletsctl": "exit-server", "inletsctl-host": spec.host_id}
    assert server["labels"] == labels
    assert (server["location"]["name"], server["server_type"]["name"]) == ("hel1", "cx23")
    assert server["image"]["name"] == "debian-13"
    firewall_id = int(host.additional["firewall_id"])
    assert hz_fake.firewalls[firewall_id]["labels"] == labels
    assert hz_fake.firewalls[firewall_id]["applied_to"] == [
        {"type": "server", "server": {"id": int(host.id)}}
    ]
    # the firewall exists before the server asks for it: never an unfiltered moment
    (create,) = hz_fake.calls("POST", "/v1/servers")
    assert create.body["firewalls"] == [{"firewall": firewall_id}]
    active = wait_active(hz, host)
    assert (active.ip, active.ipv6) == (host.ip, "2001:db8::1")
    assert active.additional["host_id"] == spec.host_id


@pytest.mark.parametrize(
    ("server_changes", "ports"),
    [
        ({}, ["8080", "8123"]),
        ({"ports": (), "control_port": 9000}, ["1024-65535"]),  # 9000 lies inside the range
        ({"mode": TunnelMode.HTTP, "data_port": 8080}, ["8080", "8123"]),
        ({"mode": TunnelMode.HTTP, "letsencrypt_domains": ("x.example",)}, ["80", "443", "8123"]),
    ],
)
def test_firewall_rules_match_the_ports(hz, hz_fake, server_changes, ports) -> None:
    spec = spec_for(hz)
    hz.create(replace(spec, server=replace(spec.server, **server_changes)))
    (firewall,) = hz_fake.firewalls.values()
    assert [r["port"] for r in firewall["rules"]] == ports
    assert {(r["direction"], r["protocol"]) for r in firewall["rules"]} == {("in", "tcp")}
    assert all(r["source_ips"] == ["0.0.0.0/0", "::/0"] for r in firewall["rules"])


def test_allow_ips_restrict_the_data_ports_but_not_the_control_port(hz, hz_fake) -> None:
    spec = spec_for(hz)
    allowed = ("203.0.113.0/24", "2001:db8::/32")
    hz.create(replace(spec, server=replace(spec.server, allow_ips=allowed)))
    (firewall,) = hz_fake.firewalls.values()
    rules = {r["port"]: r["source_ips"] for r in firewall["rules"]}
    assert rules == {"8123": ["0.0.0.0/0", "::/0"], "8080": list(allowed)}


def test_delete_waits_for_the_server_action_then_removes_the_firewall(hz, hz_fake) -> None:
    host = hz.create(spec_for(hz))
    hz.delete(host_id=host.id)
    (delete,) = [a for a in hz_fake.actions.values() if a["command"] == "delete_server"]
    assert hz_fake.calls("GET", f"/v1/actions/{delete['id']}"), "the action was polled"
    assert delete["status"] == "success"
    assert hz_fake.resources() == set()


def test_a_failed_delete_action_is_an_error_naming_the_action(hz, hz_fake) -> None:
    host = hz.create(spec_for(hz))
    hz_fake.action_error = {"code": "server_error", "message": "host is locked"}
    with pytest.raises(ProviderAPIError, match="delete_server failed"):
        hz.delete(host_id=host.id)


def test_a_firewall_left_after_delete_is_named(hz, hz_fake) -> None:
    host = hz.create(spec_for(hz))
    hz_fake.refuse("DELETE /v1/firewalls/.*", 503, "unavailable", "service unavailable")
    with pytest.raises(ProviderError) as info:
        hz.delete(host_id=host.id)
    assert hz_fake.servers == {}
    assert f"firewall {host.additional['firewall_id']}" in str(info.value)
    assert "again" in info.value.hint


def test_429_is_retried_by_the_sdk_and_succeeds(hz, hz_fake, retries) -> None:
    hz_fake.throttle_once("POST /v1/servers")
    host = hz.create(spec_for(hz))
    assert retries == [0]
    assert len(hz_fake.calls("POST", "/v1/servers")) == 2
    assert list(hz_fake.servers) == [int(host.id)]


def test_401_is_one_line_naming_the_variable(hz_fake, monkeypatch) -> None:
    monkeypatch.delenv("INLETS_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("HCLOUD_TOKEN", "not-the-token")
    monkeypatch.setenv("HCLOUD_ENDPOINT", hz_fake.base_url)
    with pytest.raises(ProviderAPIError) as info:
        HetznerProvider(ProviderConfig()).list()
    text = f"{info.value}\n{info.value.hint}"
    assert str(info.value).count("\n") == 0
    assert "HCLOUD_TOKEN" in str(info.value) and "401" in str(info.value)
    assert "not-the-token" not in text


@pytest.mark.parametrize(
    ("changes", "suggestion"),
    [({"region": "hel2"}, "hel1"), ({"plan": "cx22"}, "cx23")],
)
def test_unknown_location_or_type_suggests_the_closest(hz, hz_fake, changes, suggestion) -> None:
    with pytest.raises(InvalidSpec) as info:
        hz.create(spec_for(hz, **changes))
    assert f"Did you mean {suggestion}" in info.value.hint
    assert hz_fake.calls("POST", ".*") == []


def test_unknown_image_is_the_apis_error_and_leaves_nothing(hz, hz_fake) -> None:
    with pytest.raises(ProviderAPIError, match="invalid_input"):
        kit.create_host(hz, spec_for(hz, image="debian-99"))
    assert hz_fake.resources() == set()


def test_list_follows_pagination(hz, hz_fake) -> None:
    hz_fake.max_per_page = 2
    made = {hz.create(spec_for(hz)).id for _ in range(3)}
    assert {h.id for h in hz.list()} == made


def test_failed_undo_says_how_to_finish_it(hz, hz_fake) -> None:
    refusal = (503, "unavailable", "service unavailable")
    _, message = check_failed_undo(hz, hz_fake, "create_server", refusal)
    (firewall_id,) = hz_fake.firewalls
    assert f"firewall {firewall_id}" in message


def test_a_502_after_the_server_was_made_is_retried_and_still_leaves_nothing(
    hz, hz_fake, retries
) -> None:
    """hcloud retries a POST answered 502; the retry meets uniqueness_error."""
    hz_fake.fault_answer = (502, "bad_gateway", "bad gateway")
    hz_fake.arm("create_server", Fault.LOST)
    spec = spec_for(hz)
    with pytest.raises(ProviderAPIError, match="uniqueness_error"):
        kit.create_host(hz, spec)
    assert retries == [0], "the SDK retried the POST once"
    assert len(hz_fake.calls("POST", "/v1/servers")) == 2
    assert hz_fake.resources() == set()


def test_a_deleted_host_is_not_found_by_id_or_ip(hz) -> None:
    check_deleted_host_is_gone(hz)
