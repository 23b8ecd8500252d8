"""The conformance suite every provider runs against its fake (ours and third parties').

Use it by subclassing in a test module and providing two fixtures::

    class TestMyCloud(ProviderConformance):
        @pytest.fixture
        def provider(self, my_fake) -> Provider: ...      # pointed at the fake
        @pytest.fixture
        def fake(self, my_fake) -> FakeCloud: ...         # the same fake's control handle

and, optionally, override ``make_spec`` (the default builds a TCP spec with a real
certificate and a tiny user-data document).

A fake must keep state like the real API: what ``create`` makes exists until deleted,
and ``resources()`` reports every live resource we could be billed for or that would
be left behind (VMs, firewalls, security groups, ...), whatever its type.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

import pytest

from providers.base import Provider
from providers.errors import HostNotFound, ProviderError
from providers.models import Host, HostSpec, HostStatus
from tests.certs import server_spec

#: polls allowed before a fake host must be active; fakes should need one or two.
MAX_POLLS = 20


class FakeCloud(Protocol):
    #: step names at which ``fail_at`` can make the next call of that step fail,
    #: e.g. ("create_firewall", "create_server", "attach_firewall").
    failure_points: Sequence[str]

    def resources(self) -> set[str]:
        """Ids (any stable string) of every live resource at the fake."""
        ...

    def fail_at(self, step: str) -> None:
        """Make the next call of ``step`` fail the way the real API fails."""
        ...


def wait_active(provider: Provider, host: Host) -> Host:
    for _ in range(MAX_POLLS):
        host = provider.status(host.id)
        if host.status is HostStatus.ACTIVE:
            return host
        assert host.status is HostStatus.CREATING, host
    raise AssertionError(f"host {host.id} not active after {MAX_POLLS} polls")


class ProviderConformance:
    """Behaviour every provider must have; see the module docstring."""

    def make_spec(self, provider: Provider) -> HostSpec:
        facts = provider.facts
        host_id = uuid.uuid4().hex[:12]
        return HostSpec(
            host_id=host_id,
            name=f"inlets-conformance-{host_id[:6]}",
            region=facts.default_region,
            plan=facts.default_plan,
            image=facts.default_image,
            user_data="#cloud-config\nruncmd: [[echo, hello]]\n",
            server=server_spec(),
        )

    def test_create_polls_to_active(self, provider: Provider) -> None:
        spec = self.make_spec(provider)
        host = provider.create(spec)
        assert host.id
        assert host.status in (HostStatus.CREATING, HostStatus.ACTIVE)
        active = wait_active(provider, host)
        assert active.id == host.id
        assert active.ip, "an active host has a public IP"
        assert active.provider == provider.name

    def test_delete_removes_every_resource(self, provider: Provider, fake: FakeCloud) -> None:
        before = fake.resources()
        host = wait_active(provider, provider.create(self.make_spec(provider)))
        assert fake.resources() > before, "create made something at the provider"
        provider.delete(host_id=host.id)
        assert fake.resources() == before

    def test_list_finds_host_by_tag(self, provider: Provider) -> None:
        host = wait_active(provider, provider.create(self.make_spec(provider)))
        assert host.id in {h.id for h in provider.list()}
        provider.delete(host_id=host.id)
        live = {h.id for h in provider.list() if h.status is not HostStatus.DELETED}
        assert host.id not in live

    def test_delete_by_ip(self, provider: Provider, fake: FakeCloud) -> None:
        before = fake.resources()
        host = wait_active(provider, provider.create(self.make_spec(provider)))
        provider.delete(ip=host.ip)
        assert fake.resources() == before

    def test_status_of_unknown_host(self, provider: Provider) -> None:
        with pytest.raises(HostNotFound):
            provider.status("does-not-exist-0000")

    def test_create_failing_midway_leaves_no_orphan(
        self, provider: Provider, fake: FakeCloud
    ) -> None:
        assert fake.failure_points, "a fake names the steps it can fail"
        for step in fake.failure_points:
            before = fake.resources()
            fake.fail_at(step)
            with pytest.raises(ProviderError):
                provider.create(self.make_spec(provider))
            assert fake.resources() == before, f"orphans left after failing at {step}"
