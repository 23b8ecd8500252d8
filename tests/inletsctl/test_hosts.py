"""create/delete orchestration against a small stateful provider that follows the contract."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from inletsctl import hosts
from inletsctl.errors import ProviderFailure
from inletsctl.store import Store
from providers.errors import HostNotFound, ProviderAPIError
from providers.models import (
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
    TunnelMode,
)


class ScriptedCloud:
    """Holds VMs like a cloud; each VM walks through ``script`` one status per poll."""

    name: ClassVar[str] = "scripted"
    facts: ClassVar[ProviderFacts] = ProviderFacts("r1", "small", "debian", 16384)

    def __init__(self, config: ProviderConfig) -> None:
        self.vms: dict[str, list[HostStatus]] = {}
        self.script = [HostStatus.CREATING, HostStatus.CREATING, HostStatus.ACTIVE]
        self.fail_create = False
        self.fail_delete = False
        self.store: Store | None = None
        self.seen_on_create: list[str] = []

    def _host(self, vm: str) -> Host:
        return Host(vm, "n", self.name, "r1", self.vms[vm][0], ip="192.0.2.10")

    def create(self, spec: HostSpec) -> Host:
        assert self.store is not None
        self.seen_on_create.append(self.store.get(spec.host_id).status)
        if self.fail_create:
            raise ProviderAPIError(self.name, "quota exceeded", code="quota")
        vm = f"vm-{spec.host_id}"
        self.vms[vm] = list(self.script)
        return self._host(vm)

    def status(self, host_id: str) -> Host:
        if host_id not in self.vms:
            raise HostNotFound(host_id)
        if len(self.vms[host_id]) > 1:
            self.vms[host_id].pop(0)
        return self._host(host_id)

    def delete(self, host_id: str | None = None, ip: str | None = None) -> None:
        if self.fail_delete:
            raise ProviderAPIError(self.name, "API down")
        if host_id not in self.vms:
            raise HostNotFound(f"no {host_id}")
        del self.vms[host_id]

    def list(self) -> list[Host]:
        return [self._host(vm) for vm in self.vms]


@pytest.fixture
def env(tmp_path: Path) -> tuple[Store, ScriptedCloud]:
    store = Store(tmp_path)
    cloud = ScriptedCloud(ProviderConfig())
    cloud.store = store
    return store, cloud


REQ = hosts.CreateRequest(
    provider="scripted", mode=TunnelMode.TCP, ports=((80, 8080),), release_url="https://r.example"
)


def run_create(store: Store, cloud: ScriptedCloud, max_polls: int = 10):
    waits: list[int] = []
    lines: list[tuple[int, int, str]] = []
    spec = hosts.build_spec(REQ, cloud, hosts.new_host_id())

    def backoff(n: int) -> float:
        waits.append(n)
        return 0.0

    def progress(n: int, total: int, host: Host) -> None:
        lines.append((n, total, host.status.value))

    record = hosts.create(store, cloud, REQ, spec, max_polls, backoff, progress)
    return spec, record, waits, lines


def test_recorded_creating_before_the_first_api_call_then_polled_to_active(env) -> None:
    store, cloud = env
    spec, record, waits, lines = run_create(store, cloud)
    assert cloud.seen_on_create == ["creating"]
    assert record.status == "active" and record.ip == "192.0.2.10"
    assert record.provider_id == f"vm-{spec.host_id}"
    assert record.ports == "80:8080"
    assert lines == [(1, 10, "creating"), (2, 10, "creating"), (3, 10, "active")]
    assert waits == [1, 2], "backoff is asked for each wait, by poll number"


def test_failed_host_is_undone(env) -> None:
    store, cloud = env
    cloud.script = [HostStatus.CREATING, HostStatus.FAILED]
    with pytest.raises(ProviderFailure, match="failed while starting"):
        run_create(store, cloud)
    assert cloud.vms == {}
    (rec,) = store.all(include_deleted=True)
    assert rec.status == "deleted"


def test_timeout_is_undone(env) -> None:
    store, cloud = env
    cloud.script = [HostStatus.CREATING]
    with pytest.raises(ProviderFailure, match="not active after 3 polls"):
        run_create(store, cloud, max_polls=3)
    assert cloud.vms == {}
    assert store.all(include_deleted=True)[0].status == "deleted"


def test_undo_failing_leaves_host_for_delete(env) -> None:
    store, cloud = env
    cloud.script = [HostStatus.FAILED]
    cloud.fail_delete = True
    with pytest.raises(ProviderFailure) as info:
        run_create(store, cloud)
    (rec,) = store.all()
    assert rec.status == "failed"
    assert f"inletsctl delete --id {rec.id}" in info.value.hint
    cloud.fail_delete = False
    assert hosts.delete(store, cloud, rec).status == "deleted"
    assert cloud.vms == {}


def test_provider_create_error_is_a_failure_and_nothing_is_left(env) -> None:
    store, cloud = env
    cloud.fail_create = True
    with pytest.raises(ProviderFailure, match="quota exceeded"):
        run_create(store, cloud)
    assert store.all() == []
    assert store.all(include_deleted=True)[0].status == "deleted"


def test_interrupt_while_polling_undoes(env) -> None:
    store, cloud = env
    spec = hosts.build_spec(REQ, cloud, hosts.new_host_id())

    def interrupt(n: int, total: int, host: Host) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hosts.create(store, cloud, REQ, spec, 10, hosts.constant(0), interrupt)
    assert cloud.vms == {}


def test_delete_of_a_host_the_provider_no_longer_has(env) -> None:
    store, cloud = env
    _, record, _, _ = run_create(store, cloud)
    cloud.vms.clear()
    assert hosts.delete(store, cloud, record).status == "deleted"


def test_delete_api_failure_marks_failed(env) -> None:
    store, cloud = env
    _, record, _, _ = run_create(store, cloud)
    cloud.fail_delete = True
    with pytest.raises(ProviderFailure, match="API down"):
        hosts.delete(store, cloud, record)
    assert store.get(record.id).status == "failed"


def test_user_data_too_large_before_any_call(env) -> None:
    store, cloud = env

    class Tiny(ScriptedCloud):
        facts = ProviderFacts("r1", "small", "debian", 100)

    from inletsctl.errors import UsageError

    with pytest.raises(UsageError, match="limit is 100"):
        hosts.build_spec(REQ, Tiny(ProviderConfig()), "h1")
    assert store.all(include_deleted=True) == []
