"""Linode through linode_api4's real HTTP traffic, against the local fake."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace

import pytest

from providers import kit
from providers.errors import (
    CapacityError,
    InvalidSpec,
    ProviderAPIError,
    ProviderError,
)
from providers.linode import LinodeProvider, endpoint_url
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
from tests.fakes.linode import FakeLinode


@pytest.fixture
def ln_fake() -> Iterator[FakeLinode]:
    yield from serving(FakeLinode())


@pytest.fixture
def ln(ln_fake: FakeLinode) -> LinodeProvider:
    config = ProviderConfig(access_token=ln_fake.token, endpoint_url=ln_fake.base_url)
    return LinodeProvider(config, retry_interval=0.0)


def root_url(fake: FakeLinode) -> str:
    """What LINODE_URL holds: scheme and host, the version is the client's to add."""
    return fake.base_url.removesuffix(fake.prefix)


class TestLinodeConformance(ProviderConformance):
    failure_points = tuple(FakeLinode.steps)

    @pytest.fixture
    def cli_env(self, ln_fake: FakeLinode) -> dict[str, str]:
        return {"LINODE_TOKEN": ln_fake.token, "LINODE_URL": root_url(ln_fake)}

    @pytest.fixture
    def provider(self, ln: LinodeProvider) -> LinodeProvider:
        return ln

    @pytest.fixture
    def fake(self, ln_fake: FakeLinode) -> FakeLinode:
        return ln_fake


def test_instance_gets_user_data_tags_defaults_and_its_firewall(ln, ln_fake) -> None:
    spec = spec_for(ln)
    host = ln.create(spec)
    instance = ln_fake.instances[int(host.id)]
    assert ln_fake.user_data[int(host.id)] == spec.user_data
    (create,) = ln_fake.calls("POST", "/v4/linode/instances")
    sent = create.body["metadata"]["user_data"]
    assert base64.b64decode(sent).decode() == spec.user_data, "base64, as the API wants it"
    tags = ["inletsctl", f"inletsctl-host-{spec.host_id}"]
    assert instance["tags"] == tags
    assert (instance["region"], instance["type"]) == ("us-ord", "g6-nanode-1")
    assert (instance["image"], instance["label"]) == ("linode/debian12", spec.name)
    firewall_id = int(host.additional["firewall_id"])
    assert ln_fake.firewalls[firewall_id]["tags"] == tags
    assert ln_fake.devices[firewall_id] == [int(host.id)]
    # the firewall exists before the instance names it: never an unfiltered moment
    assert create.body["firewall_id"] == firewall_id
    (made_first,) = ln_fake.calls("POST", "/v4/networking/firewalls")
    assert ln_fake.requests.index(made_first) < ln_fake.requests.index(create)
    active = wait_active(ln, host)
    assert (active.ip, active.ipv6) == (host.ip, instance["ipv6"].split("/")[0])
    assert active.additional["host_id"] == spec.host_id


def test_the_root_password_is_random_and_kept_nowhere(ln, ln_fake) -> None:
    first, second = ln.create(spec_for(ln)), ln.create(spec_for(ln))
    passwords = {ln_fake.root_passwords[int(h.id)] for h in (first, second)}
    assert len(passwords) == 2 and all(len(p) >= 32 for p in passwords)
    for password in passwords:
        assert password not in repr(first) + repr(second)


@pytest.mark.parametrize(
    ("server_changes", "ports"),
    [
        ({}, ["8080", "8123"]),
        ({"ports": (), "control_port": 9000}, ["1024-65535"]),  # 9000 lies inside the range
        ({"mode": TunnelMode.HTTP, "data_port": 8080}, ["8080", "8123"]),
        ({"mode": TunnelMode.HTTP, "letsencrypt_domains": ("x.example",)}, ["80", "443", "8123"]),
    ],
)
def test_firewall_rules_match_the_ports(ln, ln_fake, server_changes, ports) -> None:
    spec = spec_for(ln)
    ln.create(replace(spec, server=replace(spec.server, **server_changes)))
    (firewall,) = ln_fake.firewalls.values()
    rules = firewall["rules"]
    assert (rules["inbound_policy"], rules["outbound_policy"]) == ("DROP", "ACCEPT")
    assert [r["ports"] for r in rules["inbound"]] == ports
    assert {(r["protocol"], r["action"]) for r in rules["inbound"]} == {("TCP", "ACCEPT")}
    everyone = {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}
    assert all(r["addresses"] == everyone for r in rules["inbound"])


def test_allow_ips_restrict_the_data_ports_but_not_the_control_port(ln, ln_fake) -> None:
    spec = spec_for(ln)
    allowed = ("203.0.113.0/24", "2001:db8::/32")
    ln.create(replace(spec, server=replace(spec.server, allow_ips=allowed)))
    (firewall,) = ln_fake.firewalls.values()
    rules = {r["ports"]: r["addresses"] for r in firewall["rules"]["inbound"]}
    assert rules == {
        "8123": {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]},
        "8080": {"ipv4": ["203.0.113.0/24"], "ipv6": ["2001:db8::/32"]},
    }


def test_delete_removes_the_instance_before_its_firewall(ln, ln_fake) -> None:
    host = ln.create(spec_for(ln))
    ln.delete(host_id=host.id)
    deletes = [r.path for r in ln_fake.requests if r.method == "DELETE"]
    firewall_id = host.additional["firewall_id"]
    assert deletes == [
        f"/v4/linode/instances/{host.id}",
        f"/v4/networking/firewalls/{firewall_id}",
    ]
    assert ln_fake.resources() == set()


def test_a_firewall_left_after_delete_is_named(ln, ln_fake) -> None:
    host = ln.create(spec_for(ln))
    ln_fake.refuse("DELETE /v4/networking/firewalls/.*", 503, "unavailable", "Unavailable")
    with pytest.raises(ProviderError) as info:
        ln.delete(host_id=host.id)
    assert ln_fake.instances == {}
    assert f"firewall {host.additional['firewall_id']}" in str(info.value)
    assert "again" in info.value.hint


def test_a_list_filter_that_is_dropped_on_the_way_never_widens_a_purge(ln, ln_fake) -> None:
    """A proxy that strips X-Filter hands back the whole account: only our tag counts."""
    vm, _ = ln_fake.foreign_vm()
    spec = spec_for(ln)
    ln.create(spec)
    original = ln_fake.dispatch

    def without_filter(request):
        request.headers.pop("x-filter", None)
        return original(request)

    ln_fake.dispatch = without_filter  # type: ignore[method-assign]
    assert [h.additional["host_id"] for h in ln.list()] == [spec.host_id]
    assert len(kit.delete_host(ln, spec.host_id)) == 2
    assert ln_fake.resources() == {f"linode:{vm}"}


def test_429_is_retried_by_the_sdk_and_succeeds(ln, ln_fake) -> None:
    ln_fake.throttle_once("POST /v4/linode/instances")
    host = ln.create(spec_for(ln))
    assert len(ln_fake.calls("POST", "/v4/linode/instances")) == 2
    assert list(ln_fake.instances) == [int(host.id)]


def test_a_502_after_the_instance_was_made_is_retried_and_still_leaves_nothing(ln, ln_fake) -> None:
    """linode_api4 retries a POST answered 502; the retry meets the unique-label rule."""
    ln_fake.fault_answer = (502, "bad_gateway", "Bad Gateway")
    ln_fake.arm("create_linode", Fault.LOST)
    with pytest.raises(ProviderAPIError, match="label: Label must be unique"):
        kit.create_host(ln, spec_for(ln))
    assert len(ln_fake.calls("POST", "/v4/linode/instances")) == 2
    assert ln_fake.resources() == set()


def test_401_is_one_line_naming_the_variable(ln_fake, monkeypatch) -> None:
    for name in ("INLETS_ACCESS_TOKEN", "LINODE_CLI_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINODE_TOKEN", "not-the-token")
    monkeypatch.setenv("LINODE_URL", root_url(ln_fake))
    with pytest.raises(ProviderAPIError) as info:
        LinodeProvider(ProviderConfig()).list()
    text = f"{info.value}\n{info.value.hint}"
    assert str(info.value).count("\n") == 0
    assert "LINODE_TOKEN" in str(info.value) and "401" in str(info.value)
    assert "LINODE_TOKEN" in info.value.hint
    assert "not-the-token" not in text


def test_linode_clis_token_is_read_when_linode_token_is_not_set(ln_fake, monkeypatch) -> None:
    for name in ("INLETS_ACCESS_TOKEN", "LINODE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LINODE_CLI_TOKEN", ln_fake.token)
    monkeypatch.setenv("LINODE_URL", root_url(ln_fake))
    assert LinodeProvider(ProviderConfig()).list() == []
    assert ln_fake.requests[-1].headers["authorization"] == f"Bearer {ln_fake.token}"


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "https://api.linode.com/v4"),
        ({"LINODE_URL": "http://127.0.0.1:8080"}, "http://127.0.0.1:8080/v4"),
        ({"LINODE_URL": "https://api.example/", "LINODE_API_VERSION": "v4beta"}, None),
        ({"LINODE_URL": "https://api.example/v4beta"}, "https://api.example/v4beta"),
    ],
)
def test_the_endpoint_is_read_as_linodego_reads_it(environ, url) -> None:
    assert endpoint_url(ProviderConfig(), environ) == (url or "https://api.example/v4beta")
    flag = ProviderConfig(endpoint_url="http://127.0.0.1:1/v4/")
    assert endpoint_url(flag, environ) == "http://127.0.0.1:1/v4", "--endpoint-url wins"


@pytest.mark.parametrize(
    ("changes", "suggestion"),
    [({"region": "us-ordd"}, "us-ord"), ({"plan": "g6-nanode-2"}, "g6-nanode-1")],
)
def test_unknown_region_or_type_suggests_the_closest(ln, ln_fake, changes, suggestion) -> None:
    with pytest.raises(InvalidSpec) as info:
        ln.create(spec_for(ln, **changes))
    assert f"Did you mean {suggestion}" in info.value.hint
    assert ln_fake.calls("POST", ".*") == []


def test_a_region_without_metadata_is_refused_before_anything_is_made(ln, ln_fake) -> None:
    with pytest.raises(InvalidSpec, match="region with Metadata") as info:
        ln.create(spec_for(ln, region="us-east"))
    assert "us-east" not in info.value.hint.split("Valid values: ")[1]
    assert ln_fake.calls("POST", ".*") == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"image": "linode/debian99"}, "image: image is not valid"),
        ({"name": "my--exit"}, "label: Label must begin and end"),
    ],
)
def test_what_the_api_refuses_is_its_own_words_and_leaves_nothing(
    ln, ln_fake, changes, reason
) -> None:
    with pytest.raises(ProviderAPIError, match=reason) as info:
        kit.create_host(ln, spec_for(ln, **changes))
    assert "(400)" in str(info.value)
    assert ln_fake.resources() == set()


@pytest.mark.parametrize(
    "reason",
    [
        "Account Limit reached. Please open a support ticket.",
        "No capacity is available in this region for the requested type.",
    ],
)
def test_a_full_region_or_account_is_capacity_and_leaves_nothing(ln, ln_fake, reason) -> None:
    spec = spec_for(ln)
    ln_fake.refusals_in[spec.region] = (400, "bad_request", reason)
    with pytest.raises(CapacityError, match=reason) as info:
        kit.create_host(ln, spec)
    assert "--region" in info.value.hint
    assert ln_fake.calls("POST", "/v4/networking/firewalls"), "made before the refusal"
    assert ln_fake.resources() == set()


def test_other_400s_are_not_capacity_and_known_regions_are_those_with_metadata(ln, ln_fake) -> None:
    spec = spec_for(ln)
    ln_fake.refusals_in[spec.region] = (
        400,
        "bad_request",
        "root_pass: Password does not meet strength requirement",
    )
    with pytest.raises(ProviderAPIError) as info:
        kit.create_host(ln, spec)
    assert not isinstance(info.value, CapacityError)
    assert sorted(ln.known_regions()) == ["fr-par", "us-iad", "us-ord"]


def test_list_follows_pagination(ln, ln_fake) -> None:
    ln_fake.default_page_size = 2
    made = {ln.create(spec_for(ln)).id for _ in range(3)}
    assert {h.id for h in ln.list()} == made
    assert any(r.query.get("page") == ["2"] for r in ln_fake.calls("GET", "/v4/linode/instances"))


def test_failed_undo_says_how_to_finish_it(ln, ln_fake) -> None:
    _, message = check_failed_undo(
        ln, ln_fake, "create_linode", (503, "unavailable", "Unavailable")
    )
    (firewall_id,) = ln_fake.firewalls
    assert f"firewall {firewall_id}" in message


def test_a_deleted_host_is_not_found_by_id_or_ip(ln) -> None:
    check_deleted_host_is_gone(ln)
