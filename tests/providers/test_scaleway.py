"""Scaleway through the official SDK's real HTTP traffic, against the local fake."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from providers import kit
from providers.errors import (
    CapacityError,
    CredentialsMissing,
    InvalidSpec,
    ProviderAPIError,
    ProviderError,
)
from providers.models import ProviderConfig, TunnelMode
from providers.scaleway import ScalewayProvider
from providers.testing.conformance import (
    ProviderConformance,
    check_deleted_host_is_gone,
    check_failed_undo,
    spec_for,
    wait_active,
)
from providers.testing.faults import Fault
from providers.testing.jsonapi import serving
from tests.fakes.scaleway import FakeScaleway, image_id

SCW_ENV = (
    "SCW_SECRET_KEY",
    "SCW_ACCESS_KEY",
    "SCW_DEFAULT_PROJECT_ID",
    "SCW_DEFAULT_ZONE",
    "SCW_API_URL",
    "SCW_PROFILE",
    "INLETS_ACCESS_TOKEN",
)
OURS = "inletsctl=exit-server"


@pytest.fixture
def scw_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No Scaleway variable of the developer's and no scw config file: the path returned."""
    for name in SCW_ENV:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "scw" / "config.yaml"
    monkeypatch.setenv("SCW_CONFIG_PATH", str(config))
    return config


@pytest.fixture
def scw_fake(scw_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeScaleway]:
    fake = FakeScaleway()
    monkeypatch.setenv("SCW_DEFAULT_PROJECT_ID", fake.project)
    yield from serving(fake)


@pytest.fixture
def sleeps() -> list[float]:
    """Every pause the provider took between polls; the pause itself is zero."""
    return []


@pytest.fixture
def scw(scw_fake: FakeScaleway, sleeps: list[float]) -> ScalewayProvider:
    config = ProviderConfig(access_token=scw_fake.token, endpoint_url=scw_fake.base_url)
    return ScalewayProvider(config, poll_interval=0.5, sleep=sleeps.append)


class TestScalewayConformance(ProviderConformance):
    failure_points = tuple(FakeScaleway.steps)

    @pytest.fixture
    def cli_env(self, scw_fake: FakeScaleway, scw_env: Path) -> dict[str, str]:
        scw_fake.transition_reads = 0  # the CLI's provider sleeps between polls
        return {
            "SCW_SECRET_KEY": scw_fake.token,
            "SCW_DEFAULT_PROJECT_ID": scw_fake.project,
            "SCW_API_URL": scw_fake.base_url,
            "SCW_CONFIG_PATH": str(scw_env),
        }

    @pytest.fixture
    def provider(self, scw: ScalewayProvider) -> ScalewayProvider:
        return scw

    @pytest.fixture
    def fake(self, scw_fake: FakeScaleway) -> FakeScaleway:
        return scw_fake


def request_lines(fake: FakeScaleway) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests]


def test_the_server_boots_stopped_then_gets_user_data_then_poweron(scw, scw_fake) -> None:
    spec = spec_for(scw)
    host = scw.create(spec)
    server = scw_fake.servers[host.id]
    assert scw_fake.user_data[host.id] == {"cloud-init": spec.user_data}
    assert (server["zone"], server["commercial_type"]) == ("fr-par-1", "STARDUST1-S")
    assert server["image"]["id"] == image_id("debian_bookworm", "fr-par-1", "instance_local")
    assert server["volumes"]["0"]["volume_type"] == "l_ssd"
    tags = [OURS, f"inletsctl-host={spec.host_id}"]
    assert server["tags"] == tags
    zone = "/instance/v1/zones/fr-par-1"
    lines = [line for line in request_lines(scw_fake) if not line.startswith("GET")]
    assert lines == [
        f"POST {zone}/security_groups",
        f"PUT {zone}/security_groups/{host.additional['security_group_id']}/rules",
        f"POST {zone}/ips",
        f"POST {zone}/servers",
        f"PATCH {zone}/servers/{host.id}/user_data/cloud-init",
        f"POST {zone}/servers/{host.id}/action",
    ], "the group and its rules exist before the server, user-data before it boots"
    (action,) = scw_fake.calls("POST", f"{zone}/servers/.*/action")
    assert action.body == {"action": "poweron"}
    (create,) = scw_fake.calls("POST", f"{zone}/servers")
    assert create.body["security_group"] == host.additional["security_group_id"]
    assert create.body["public_ips"] == [host.additional["ip_id"]]
    assert create.body["dynamic_ip_required"] is False
    assert create.body["project"] == scw_fake.project
    group = scw_fake.security_groups[host.additional["security_group_id"]]
    assert (group["inbound_default_policy"], group["outbound_default_policy"]) == ("drop", "accept")
    assert group["stateful"] is True and group["tags"] == tags
    assert scw_fake.ips[host.additional["ip_id"]]["tags"] == tags
    active = wait_active(scw, host)
    assert active.ip == scw_fake.ips[host.additional["ip_id"]]["address"] == host.ip
    assert active.additional == {"provider_status": "running", "host_id": spec.host_id}


@pytest.mark.parametrize(
    ("server_changes", "ports"),
    [
        ({}, [(8080, None), (8123, None)]),
        ({"ports": (), "control_port": 9000}, [(1024, 65535)]),  # 9000 lies inside the range
        ({"mode": TunnelMode.HTTP, "data_port": 8080}, [(8080, None), (8123, None)]),
        (
            {"mode": TunnelMode.HTTP, "letsencrypt_domains": ("x.example",)},
            [(80, None), (443, None), (8123, None)],
        ),
    ],
)
def test_security_group_rules_match_the_ports(scw, scw_fake, server_changes, ports) -> None:
    spec = spec_for(scw)
    host = scw.create(replace(spec, server=replace(spec.server, **server_changes)))
    rules = scw_fake.security_groups[host.additional["security_group_id"]]["rules"]
    expected = [(a, b, src) for a, b in ports for src in ("0.0.0.0/0", "::/0")]
    assert [(r["dest_port_from"], r.get("dest_port_to"), r["ip_range"]) for r in rules] == expected
    assert {(r["action"], r["direction"], r["protocol"]) for r in rules} == {
        ("accept", "inbound", "TCP")
    }
    assert [r["position"] for r in rules] == list(range(1, len(rules) + 1))


def test_allow_ips_restrict_the_data_ports_but_not_the_control_port(scw, scw_fake) -> None:
    spec = spec_for(scw)
    allowed = ("203.0.113.0/24", "2001:db8::/32")
    host = scw.create(replace(spec, server=replace(spec.server, allow_ips=allowed)))
    rules = scw_fake.security_groups[host.additional["security_group_id"]]["rules"]
    opened = sorted((r["dest_port_from"], r["ip_range"]) for r in rules)
    assert opened == [
        (8080, "2001:db8::/32"),
        (8080, "203.0.113.0/24"),
        (8123, "0.0.0.0/0"),
        (8123, "::/0"),
    ]


def test_a_running_host_is_terminated_then_its_ip_and_group_go(scw, scw_fake, sleeps) -> None:
    host = scw.create(spec_for(scw))
    wait_active(scw, host)
    scw_fake.requests.clear()
    scw.delete(host_id=host.id)
    lines = request_lines(scw_fake)
    zone = "/instance/v1/zones/fr-par-1"
    (terminate,) = scw_fake.calls("POST", f"{zone}/servers/{host.id}/action")
    assert terminate.body == {"action": "terminate"}
    assert f"DELETE {zone}/servers/{host.id}" not in lines, "a running server is terminated"
    gone = max(i for i, line in enumerate(lines) if line == f"GET {zone}/servers/{host.id}")
    ip_deleted = lines.index(f"DELETE {zone}/ips/{host.additional['ip_id']}")
    group = host.additional["security_group_id"]
    assert gone < ip_deleted < lines.index(f"DELETE {zone}/security_groups/{group}")
    assert sleeps == [0.5], "one pause while the server was stopping"
    assert scw_fake.resources() == {f"security_group:{g}" for g in scw_fake.security_groups}
    assert [g["project_default"] for g in scw_fake.security_groups.values()] == [True]


def test_a_server_that_never_booted_is_deleted_with_its_volume(scw, scw_fake) -> None:
    scw_fake.fail_at("poweron")
    spec = spec_for(scw)
    with pytest.raises(ProviderAPIError, match="internal_error"):
        kit.create_host(scw, spec)
    zone = "/instance/v1/zones/fr-par-1"
    assert len(scw_fake.calls("DELETE", f"{zone}/servers/.*")) == 1
    assert len(scw_fake.calls("DELETE", f"{zone}/volumes/.*")) == 1
    assert scw_fake.struck("poweron")
    assert scw_fake.servers == scw_fake.volumes == scw_fake.ips == {}


def test_a_security_group_left_after_delete_is_named(scw, scw_fake) -> None:
    host = scw.create(spec_for(scw))
    scw_fake.refuse("DELETE /instance/v1/zones/fr-par-1/security_groups/.*", 503, "x", "down")
    with pytest.raises(ProviderError) as info:
        scw.delete(host_id=host.id)
    assert scw_fake.servers == {} and scw_fake.ips == {}
    assert f"security group {host.additional['security_group_id']}" in str(info.value)
    assert "again" in info.value.hint


def test_401_is_one_line_naming_the_variable(scw_fake, monkeypatch) -> None:
    monkeypatch.setenv("SCW_SECRET_KEY", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("SCW_API_URL", scw_fake.base_url)
    with pytest.raises(ProviderAPIError) as info:
        ScalewayProvider(ProviderConfig()).list()
    text = f"{info.value}\n{info.value.hint}"
    assert str(info.value).count("\n") == 0
    assert "SCW_SECRET_KEY" in str(info.value) and "401" in str(info.value)
    assert "11111111-1111" not in text


def test_403_names_the_project_variable(scw, scw_fake) -> None:
    scw_fake.refuse("POST .*", 403, "permissions_denied", "insufficient permissions")
    with pytest.raises(ProviderAPIError) as info:
        kit.create_host(scw, spec_for(scw))
    assert "403 permissions_denied" in str(info.value)
    assert scw_fake.project in str(info.value)
    assert "SCW_DEFAULT_PROJECT_ID" in info.value.hint


def test_no_secret_key_names_every_way_to_give_one(scw_env) -> None:
    with pytest.raises(CredentialsMissing) as info:
        ScalewayProvider(ProviderConfig())
    text = f"{info.value}\n{info.value.hint}"
    for way in ("SCW_SECRET_KEY", "INLETS_ACCESS_TOKEN", "--access-token-file", "scw init"):
        assert way in text


def test_no_project_is_refused_before_any_call(scw, scw_fake, monkeypatch) -> None:
    monkeypatch.delenv("SCW_DEFAULT_PROJECT_ID")
    config = ProviderConfig(access_token=scw_fake.token, endpoint_url=scw_fake.base_url)
    with pytest.raises(CredentialsMissing) as info:
        ScalewayProvider(config).create(spec_for(scw))
    assert "SCW_DEFAULT_PROJECT_ID" in info.value.hint
    assert scw_fake.requests == []


def test_the_scw_config_profile_supplies_key_project_zone_and_url(
    scw_fake, scw_env, monkeypatch
) -> None:
    """As the scw CLI reads it: SCW_CONFIG_PATH, the top level, then the named profile."""
    monkeypatch.delenv("SCW_DEFAULT_PROJECT_ID")
    scw_env.parent.mkdir()
    scw_env.write_text(
        "secret_key: 22222222-2222-2222-2222-222222222222\n"
        f"api_url: {scw_fake.base_url}\n"
        "profiles:\n"
        "  work:\n"
        f"    secret_key: {scw_fake.token}\n"
        f"    default_project_id: {scw_fake.project}\n"
        "    default_zone: nl-ams-1\n"
    )
    provider = ScalewayProvider(ProviderConfig(profile="work"))
    host = provider.create(spec_for(provider, region="nl-ams-1"))
    assert scw_fake.servers[host.id]["project"] == scw_fake.project
    assert [h.id for h in provider.list()] == [host.id], "listed in the profile's zone"
    with pytest.raises(ProviderAPIError) as info:
        ScalewayProvider(ProviderConfig()).list()  # the top level's key is refused
    assert f"'default' profile of {scw_env}" in str(info.value)
    with pytest.raises(CredentialsMissing, match="'nope'"):
        ScalewayProvider(ProviderConfig(profile="nope"))


def test_a_host_made_outside_the_configured_zone_is_still_found(scw_fake, monkeypatch) -> None:
    """The CLI passes no --region on create: the spec has the default zone, while the
    provider's own zone comes from SCW_DEFAULT_ZONE."""
    monkeypatch.setenv("SCW_DEFAULT_ZONE", "nl-ams-1")
    config = ProviderConfig(access_token=scw_fake.token, endpoint_url=scw_fake.base_url)
    provider = ScalewayProvider(config, poll_interval=0.0)
    spec = spec_for(provider)
    host = provider.create(spec)
    assert host.region == "fr-par-1"
    assert wait_active(provider, host).status.value == "active"
    assert kit.delete_host(provider, spec.host_id)
    assert scw_fake.servers == {}


@pytest.mark.parametrize(
    ("changes", "kind", "suggestion"),
    [
        ({"region": "fr-pra-1"}, "zone", "fr-par-1"),
        ({"plan": "STARDUST1-M"}, "commercial type", "STARDUST1-S"),
    ],
)
def test_unknown_zone_or_type_suggests_the_closest(
    scw, scw_fake, changes, kind, suggestion
) -> None:
    with pytest.raises(InvalidSpec) as info:
        scw.create(spec_for(scw, **changes))
    assert kind in str(info.value)
    assert f"Did you mean {suggestion}" in info.value.hint
    assert [r for r in scw_fake.requests if r.method != "GET"] == []


def test_a_type_without_local_storage_is_refused_before_anything_is_made(scw, scw_fake) -> None:
    with pytest.raises(InvalidSpec, match="PLAY2-PICO"):
        kit.create_host(scw, spec_for(scw, plan="PLAY2-PICO"))
    assert [r for r in scw_fake.requests if r.method != "GET"] == []


def test_unknown_image_is_refused_before_anything_is_made(scw, scw_fake) -> None:
    with pytest.raises(InvalidSpec, match="debian_potato") as info:
        kit.create_host(scw, spec_for(scw, image="debian_potato"))
    assert "debian_bookworm" in info.value.hint
    assert scw_fake.resources() == {f"security_group:{g}" for g in scw_fake.security_groups}


def test_an_image_id_is_used_as_it_is(scw, scw_fake) -> None:
    image = image_id("ubuntu_noble", "fr-par-1", "instance_local")
    host = scw.create(spec_for(scw, image=image))
    assert scw_fake.servers[host.id]["image"]["id"] == image
    assert scw_fake.calls("GET", "/marketplace/v2/local-images") == []


def test_list_follows_pagination(scw, scw_fake) -> None:
    scw_fake.max_per_page = 2
    made = {scw.create(spec_for(scw)).id for _ in range(3)}
    assert {h.id for h in scw.list()} == made
    assert len(scw_fake.calls("GET", "/instance/v1/zones/fr-par-1/servers")) >= 2


def test_failed_undo_says_how_to_finish_it(scw, scw_fake) -> None:
    refusal = (503, "unavailable", "service unavailable")
    _, message = check_failed_undo(scw, scw_fake, "create_server", refusal)
    (ip,) = scw_fake.ips.values()
    assert f"not ip {ip['address']}" in message


def test_a_lost_poweron_answer_leaves_nothing_once_the_boot_settles(scw, scw_fake, sleeps) -> None:
    """The server is starting when the undo runs: it waits, then terminates it."""
    scw_fake.arm("poweron", Fault.LOST)
    with pytest.raises(ProviderAPIError):
        kit.create_host(scw, spec_for(scw))
    zone = "/instance/v1/zones/fr-par-1"
    actions = [r.body["action"] for r in scw_fake.calls("POST", f"{zone}/servers/.*/action")]
    assert actions == ["poweron", "terminate"]
    assert sleeps, "the undo waited for the boot to settle"
    assert scw_fake.servers == scw_fake.volumes == scw_fake.ips == {}


def test_a_deleted_host_is_not_found_by_id_or_ip(scw) -> None:
    check_deleted_host_is_gone(scw)


def test_verbose_logging_never_shows_the_user_data(scw, caplog) -> None:
    """At DEBUG the SDK logs request bodies; the user-data carries the tunnel's secrets."""
    spec = spec_for(scw)
    with caplog.at_level(logging.DEBUG):
        scw.create(spec)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert spec.server.token not in logged and spec.user_data not in logged


@pytest.mark.parametrize("kind", ["out_of_stock", "quotas_exceeded"])
def test_no_room_is_a_capacity_error_and_leaves_nothing(scw, scw_fake, kind) -> None:
    scw_fake.refuse("POST /instance/v1/zones/fr-par-1/servers", 400, kind, "no room")
    with pytest.raises(CapacityError) as info:
        kit.create_host(scw, spec_for(scw))
    assert f"({kind})" in str(info.value) and "--region" in info.value.hint
    assert scw_fake.servers == scw_fake.ips == {}
    assert scw.known_regions()[:3] == ["fr-par-1", "fr-par-2", "fr-par-3"]
