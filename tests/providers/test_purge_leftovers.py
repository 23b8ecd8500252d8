"""A purge that removed the VMs but not what they used says so, and how to finish it.

Hetzner, Linode and Vultr remove their firewalls through ``kit.remove_leftovers``;
each is run here against its fake with the firewall's DELETE refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from providers import kit
from providers.base import Provider
from providers.errors import HostNotFound, ProviderError
from providers.hetzner import HetznerProvider
from providers.linode import LinodeProvider
from providers.models import ProviderConfig
from providers.testing.conformance import spec_for
from providers.testing.jsonapi import JsonApiFake, serving
from providers.vultr import VultrProvider
from tests.fakes.hetzner import FakeHetzner
from tests.fakes.linode import FakeLinode
from tests.fakes.vultr import FakeVultr


def _hetzner(config: ProviderConfig) -> Provider:
    return HetznerProvider(config, poll_interval=0.0, retry_interval=lambda n: 0.0)


def _linode(config: ProviderConfig) -> Provider:
    return LinodeProvider(config, retry_interval=0.0)


Case = tuple[type[JsonApiFake], Callable[[ProviderConfig], Provider], str, str, str, str]
#: provider -> (fake, provider factory, the firewall's DELETE, what the VMs are called,
#: what the firewall is called in the error, its kind among the fake's resources)
CASES: dict[str, Case] = {
    "hetzner": (
        FakeHetzner, _hetzner, "DELETE /v1/firewalls/.*", "servers", "firewall", "firewall",
    ),
    "linode": (
        FakeLinode, _linode, "DELETE /v4/networking/firewalls/.*", "linodes", "firewall",
        "firewall",
    ),
    "vultr": (
        FakeVultr, VultrProvider, "DELETE /v2/firewalls/.*", "instances", "firewall group",
        "firewall_group",
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(CASES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake(name: str) -> Iterator[JsonApiFake]:
    yield from serving(CASES[name][0]())


def test_a_firewall_left_after_the_vms_is_named_with_the_way_to_finish(
    name: str, fake: Any
) -> None:
    _, open_provider, firewall_delete, vms, what, kind = CASES[name]
    provider = open_provider(ProviderConfig(access_token=fake.token, endpoint_url=fake.base_url))
    spec = spec_for(provider)
    host = provider.create(spec)
    fake.refuse(firewall_delete, 403, "forbidden", "not allowed to delete firewalls")
    with pytest.raises(ProviderError) as info:
        kit.delete_host(provider, spec.host_id)
    assert info.value.message.startswith(f"{name}: the {vms} are deleted, but not {what} ")
    assert "not allowed to delete firewalls" in info.value.message, "the API's own words"
    assert info.value.hint == "Run the same `inletsctl delete` again shortly."
    with pytest.raises(HostNotFound):
        provider.status(host.id)
    assert {r.split(":")[0] for r in fake.resources()} == {kind}, "the firewall alone is left"
