"""create/delete orchestration against a small stateful provider that follows the contract.

The cloud keeps its resources like a real one (a VM and its firewall, each tagged with
our host id), so every test asks the cloud, not our state, whether anything is left.
Time is a fake clock that only ``sleep`` advances: no test waits or depends on speed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from inletsctl import hosts
from inletsctl.errors import HostUnknown, NotReady, ProviderFailure, UsageError
from inletsctl.readiness import Wait
from inletsctl.store import HostRecord, Store
from providers import kit
from providers.errors import HostNotFound, NotOurs, ProviderAPIError, UndoFailed
from providers.models import (
    HOST_ID_TAG,
    TAG_KEY,
    TAG_VALUE,
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
    TunnelMode,
)


@dataclass
class Resource:
    kind: str  # "vm" or "firewall"
    tags: dict[str, str]
    script: list[HostStatus] = field(default_factory=list)
    ip: str = ""


class ScriptedCloud:
    """Holds tagged VMs and firewalls like a cloud; each VM walks through ``script``."""

    name: ClassVar[str] = "scripted"
    facts: ClassVar[ProviderFacts] = ProviderFacts("r1", "small", "debian", 16384)

    def __init__(self, config: ProviderConfig) -> None:
        self.resources: dict[str, Resource] = {}
        self.script = [HostStatus.CREATING, HostStatus.CREATING, HostStatus.ACTIVE]
        self.fail_create = False
        #: the VM and firewall are made, then the answer is lost (a 5xx after the work)
        self.lose_create_answer = False
        self.fail_delete = False
        self.store: Store | None = None
        self.seen_on_create: list[str] = []
        self.status_calls = 0

    def _host(self, vm: str) -> Host:
        res = self.resources[vm]
        return Host(vm, "n", self.name, "r1", res.script[0], ip=res.ip)

    def _ours(self, rid: str) -> bool:
        return rid in self.resources and kit.is_ours(self.resources[rid].tags)

    def create(self, spec: HostSpec) -> Host:
        assert self.store is not None
        self.seen_on_create.append(self.store.get(spec.host_id).status)
        if self.fail_create:
            raise ProviderAPIError(self.name, "quota exceeded", code="quota")
        tags = {TAG_KEY: TAG_VALUE, HOST_ID_TAG: spec.host_id}
        self.resources[f"fw-{spec.host_id}"] = Resource("firewall", dict(tags))
        vm = f"vm-{spec.host_id}"
        self.resources[vm] = Resource("vm", dict(tags), list(self.script), ip="192.0.2.10")
        if self.lose_create_answer:
            raise ProviderAPIError(self.name, "502 Bad Gateway", code="502")
        return self._host(vm)

    def status(self, host_id: str) -> Host:
        self.status_calls += 1
        if not self._ours(host_id) or self.resources[host_id].kind != "vm":
            raise HostNotFound(host_id)
        script = self.resources[host_id].script
        if len(script) > 1:
            script.pop(0)
        return self._host(host_id)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        if self.fail_delete:
            raise ProviderAPIError(self.name, "API down")
        vms = [r for r, res in self.resources.items() if res.kind == "vm"]
        found = [r for r in vms if r == host_id or (ip and self.resources[r].ip == ip)]
        if not found:
            raise HostNotFound(f"no {host_id or ip}")
        vm = found[0]
        kit.require_ours(self.name, f"VM {vm}", self.resources[vm].tags, force)
        ours = self.resources.pop(vm).tags.get(HOST_ID_TAG)
        if ours:  # the firewall made with it
            self.resources.pop(f"fw-{ours}", None)

    def purge(self, host_id: str) -> list[str]:
        if self.fail_delete:
            raise ProviderAPIError(self.name, "API down")
        tagged = [r for r, res in self.resources.items() if res.tags.get(HOST_ID_TAG) == host_id]
        tagged.sort(key=lambda r: self.resources[r].kind != "vm")  # the VM first
        for rid in tagged:
            del self.resources[rid]
        return tagged

    def list(self) -> list[Host]:
        return [self._host(r) for r in self.resources if self._ours(r) and r.startswith("vm-")]

    def foreign_vm(self) -> str:
        self.resources["vm-users-own"] = Resource("vm", {}, [HostStatus.ACTIVE], ip="192.0.2.99")
        return "vm-users-own"


class Clock:
    """Time that passes only when ``create`` sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class Tunnel:
    """A scripted readiness probe: one verdict per call, the last one repeated."""

    def __init__(self, *verdicts: str | None) -> None:
        self.verdicts = list(verdicts)
        self.calls: list[tuple[str, int, str, float]] = []

    def __call__(self, ip: str, port: int, fingerprint: str, timeout: float) -> str | None:
        self.calls.append((ip, port, fingerprint, timeout))
        return self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]


@pytest.fixture
def env(tmp_path: Path) -> tuple[Store, ScriptedCloud]:
    store = Store(tmp_path)
    cloud = ScriptedCloud(ProviderConfig())
    cloud.store = store
    return store, cloud


REQ = hosts.CreateRequest(
    provider="scripted", mode=TunnelMode.TCP, ports=((80, 8080),), release_url="https://r.example"
)


def sigterm() -> None:
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN), (
        "create must turn SIGTERM into an exception while it polls"
    )
    signal.raise_signal(signal.SIGTERM)


def ctrl_c() -> None:
    raise KeyboardInterrupt


@dataclass
class Run:
    """One ``hosts.create`` with 1 s between polls on a fake clock; what it showed."""

    store: Store
    cloud: ScriptedCloud
    clock: Clock = field(default_factory=Clock)
    waits: list[int] = field(default_factory=list)
    lines: list[tuple[int, str, str]] = field(default_factory=list)
    #: poll number -> what happens while it is shown (Ctrl-C, SIGTERM, ...)
    on_poll: dict[int, Callable[[], None]] = field(default_factory=dict)
    spec: HostSpec | None = None

    def create(
        self, until: Wait = Wait.running, timeout: float = 60.0, probe: Tunnel | None = None
    ) -> HostRecord:
        self.spec = hosts.build_spec(REQ, self.cloud, hosts.new_host_id())
        waiting = hosts.Waiting(
            until=until,
            timeout=timeout,
            backoff=self.backoff,
            probe=probe or Tunnel(None),
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        return hosts.create(self.store, self.cloud, REQ, self.spec, waiting, self.progress)

    def backoff(self, n: int) -> float:
        self.waits.append(n)
        return 1.0

    def progress(self, n: int, host: Host, tunnel: str) -> None:
        self.lines.append((n, host.status.value, tunnel))
        if n in self.on_poll:
            self.on_poll[n]()


@pytest.fixture
def run(env: tuple[Store, ScriptedCloud]) -> Run:
    return Run(*env)


def test_recorded_creating_before_the_first_api_call_then_polled_to_running(run: Run) -> None:
    record = run.create(Wait.running)
    assert run.cloud.seen_on_create == ["creating"]
    assert record.status == "active" and record.ip == "192.0.2.10"
    assert run.spec is not None and record.provider_id == f"vm-{run.spec.host_id}"
    assert record.ports == "80:8080"
    assert run.lines == [(1, "creating", ""), (2, "creating", ""), (3, "active", "")]
    assert run.waits == [1, 2], "backoff is asked for each wait, by poll number"


def test_ready_probes_the_pinned_certificate_until_the_server_answers(run: Run) -> None:
    tunnel = Tunnel("connection refused", "certificate mismatch", None)
    record = run.create(Wait.ready, probe=tunnel)
    assert record.status == "ready"
    assert run.lines == [
        (1, "creating", ""),
        (2, "creating", ""),
        (3, "active", "connection refused"),
        (4, "active", "certificate mismatch"),
        (5, "active", "ready"),
    ]
    assert run.spec is not None
    assert {c[:3] for c in tunnel.calls} == {
        ("192.0.2.10", record.control_port, run.spec.server.tls_fingerprint)
    }
    assert run.cloud.status_calls == 2, "once running, only the probe can tell more"
    assert len(run.cloud.list()) == 1, "a ready host is kept"


def test_wait_none_returns_after_the_create_call(run: Run) -> None:
    record = run.create(Wait.none)
    assert record.status == "creating" and record.provider_id.startswith("vm-")
    assert run.lines == [] and run.cloud.status_calls == 0


def test_failed_host_is_undone(run: Run) -> None:
    run.cloud.script = [HostStatus.CREATING, HostStatus.FAILED]
    with pytest.raises(ProviderFailure, match="failed while starting"):
        run.create()
    assert run.cloud.resources == {}, "the VM and its firewall are gone"
    (rec,) = run.store.all(include_deleted=True)
    assert rec.status == "deleted"


def test_not_running_by_the_timeout_is_kept_as_unready(run: Run) -> None:
    run.cloud.script = [HostStatus.CREATING]
    with pytest.raises(NotReady) as info:
        run.create(Wait.ready, timeout=3.0)
    assert [n for n, _, _ in run.lines] == [1, 2, 3, 4], "polls at t=0, 1, 2, 3 s"
    assert run.clock.now == 103.0, "the deadline counts from the start of create"
    (rec,) = run.store.all()
    assert rec.status == "unready"
    assert len(run.cloud.list()) == 1, "kept: its console output tells why"
    assert "is not running after 3s (status: creating)" in info.value.message
    assert info.value.host_id == rec.id
    assert f"inletsctl logs {rec.id}" in info.value.hint
    assert f"inletsctl delete --id {rec.id}" in info.value.hint


def test_another_certificate_is_never_ready(run: Run) -> None:
    run.cloud.script = [HostStatus.ACTIVE]
    with pytest.raises(NotReady, match=r"not ready after 5s \(certificate mismatch\)") as info:
        run.create(Wait.ready, timeout=5.0, probe=Tunnel("certificate mismatch"))
    assert run.lines[-1] == (6, "active", "certificate mismatch")
    assert run.store.get(info.value.host_id).status == "unready"
    assert len(run.cloud.list()) == 1


def test_no_probe_outlives_the_deadline_by_much(run: Run) -> None:
    run.cloud.script = [HostStatus.ACTIVE]
    tunnel = Tunnel("timed out")
    with pytest.raises(NotReady):
        run.create(Wait.ready, timeout=12.0, probe=tunnel)
    timeouts = [c[3] for c in tunnel.calls]
    assert timeouts[0] == hosts.PROBE_TIMEOUT_S
    assert timeouts[-1] == hosts.MIN_PROBE_TIMEOUT_S


def test_undo_failing_leaves_failed_with_the_command_that_finishes_it(run: Run) -> None:
    run.cloud.script = [HostStatus.FAILED]
    run.cloud.fail_delete = True
    with pytest.raises(ProviderFailure) as info:
        run.create()
    (rec,) = run.store.all()
    assert rec.status == "failed", "never 'deleted' while something may be left"
    assert "failed while starting" in info.value.message and "API down" in info.value.message
    assert f"inletsctl delete --id {rec.id}" in info.value.hint
    assert len(run.cloud.resources) == 2
    run.cloud.fail_delete = False
    assert hosts.delete(run.store, run.cloud, rec).status == "deleted"
    assert run.cloud.resources == {}


def test_provider_create_error_is_a_failure_and_nothing_is_left(run: Run) -> None:
    run.cloud.fail_create = True
    with pytest.raises(ProviderFailure, match="quota exceeded"):
        run.create()
    assert run.store.all() == []
    assert run.store.all(include_deleted=True)[0].status == "deleted"


def test_a_lost_create_answer_is_undone_by_tag(run: Run) -> None:
    run.cloud.lose_create_answer = True
    with pytest.raises(ProviderFailure, match="502"):
        run.create()
    assert run.cloud.resources == {}, "found by our host-id tag though no id came back"
    (rec,) = run.store.all(include_deleted=True)
    assert rec.status == "deleted" and rec.provider_id == ""


def test_a_lost_create_answer_whose_undo_fails_is_left_failed(run: Run) -> None:
    run.cloud.lose_create_answer = run.cloud.fail_delete = True
    with pytest.raises(ProviderFailure) as info:
        run.create()
    (rec,) = run.store.all()
    assert rec.status == "failed"
    assert f"inletsctl delete --id {rec.id}" in info.value.hint
    run.cloud.fail_delete = False
    assert hosts.delete(run.store, run.cloud, rec).status == "deleted"
    assert run.cloud.resources == {}


@pytest.mark.parametrize(
    ("strike", "raised"),
    [(ctrl_c, KeyboardInterrupt), (sigterm, kit.Terminated)],
    ids=["ctrl-c", "sigterm"],
)
def test_interrupt_while_polling_leaves_nothing(
    run: Run, strike: Callable[[], None], raised: type[BaseException]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    run.on_poll[2] = strike
    with pytest.raises(raised):
        run.create(Wait.ready)
    assert run.cloud.resources == {}
    (rec,) = run.store.all(include_deleted=True)
    assert rec.status == "deleted"
    assert signal.getsignal(signal.SIGTERM) is before, "the SIGTERM handler is put back"


def test_sigterm_while_probing_leaves_nothing(run: Run) -> None:
    run.cloud.script = [HostStatus.ACTIVE]
    run.on_poll[3] = sigterm
    with pytest.raises(kit.Terminated):
        run.create(Wait.ready, probe=Tunnel("connection refused"))
    assert run.lines[-1] == (3, "active", "connection refused")
    assert run.cloud.resources == {}
    assert run.store.all(include_deleted=True)[0].status == "deleted"


def test_interrupt_whose_undo_fails_says_so_and_leaves_failed(run: Run) -> None:
    def api_down_then_ctrl_c() -> None:
        run.cloud.fail_delete = True
        raise KeyboardInterrupt

    run.on_poll[2] = api_down_then_ctrl_c
    with pytest.raises(ProviderFailure) as info:
        run.create()
    (rec,) = run.store.all()
    assert rec.status == "failed"
    assert info.value.message.startswith("interrupted (Ctrl-C); looking up and removing what")
    assert f"inletsctl delete --id {rec.id}" in info.value.hint
    assert isinstance(info.value.__cause__, UndoFailed)
    assert len(run.cloud.resources) == 2, "the VM and firewall are still there, as it says"


def test_delete_of_a_host_the_provider_no_longer_has(run: Run) -> None:
    record = run.create()
    run.cloud.resources.clear()
    assert hosts.delete(run.store, run.cloud, record).status == "deleted"


def test_delete_finishes_a_create_killed_before_the_provider_id_was_recorded(env) -> None:
    store, cloud = env
    spec = hosts.build_spec(REQ, cloud, hosts.new_host_id())
    record = store.add(hosts.record_for(REQ, spec))  # as a create killed -9 in its call
    cloud.create(spec)
    assert record.provider_id == "" and len(cloud.resources) == 2
    assert hosts.delete(store, cloud, record).status == "deleted"
    assert cloud.resources == {}


def test_delete_api_failure_marks_failed(run: Run) -> None:
    record = run.create()
    run.cloud.fail_delete = True
    with pytest.raises(ProviderFailure, match="API down"):
        hosts.delete(run.store, run.cloud, record)
    assert run.store.get(record.id).status == "failed"


def test_delete_unrecorded_by_our_id_or_the_providers(env) -> None:
    store, cloud = env
    a = hosts.build_spec(REQ, cloud, "aaaaaaaaaaaa")
    b = hosts.build_spec(REQ, cloud, "bbbbbbbbbbbb")
    for spec in (a, b):
        store.add(hosts.record_for(REQ, spec))
        cloud.create(spec)
    hosts.delete_unrecorded(cloud, host_id="aaaaaaaaaaaa")  # our id: the tag
    hosts.delete_unrecorded(cloud, host_id="vm-bbbbbbbbbbbb")  # the provider's id
    assert cloud.resources == {}
    with pytest.raises(HostUnknown, match="no nothing-here"):
        hosts.delete_unrecorded(cloud, host_id="nothing-here")


def test_a_vm_we_did_not_make_needs_force(env) -> None:
    _, cloud = env
    vm = cloud.foreign_vm()
    with pytest.raises(ProviderFailure) as info:
        hosts.delete_unrecorded(cloud, host_id=vm)
    assert "--force" in info.value.hint and isinstance(info.value.__cause__, NotOurs)
    with pytest.raises(ProviderFailure, match="not made by inletsctl"):
        hosts.delete_unrecorded(cloud, ip="192.0.2.99")
    assert vm in cloud.resources
    hosts.delete_unrecorded(cloud, ip="192.0.2.99", force=True)
    assert cloud.resources == {}


def test_user_data_too_large_before_any_call(env) -> None:
    store, cloud = env

    class Tiny(ScriptedCloud):
        facts = ProviderFacts("r1", "small", "debian", 100)

    with pytest.raises(UsageError, match="limit is 100"):
        hosts.build_spec(REQ, Tiny(ProviderConfig()), "h1")
    assert store.all(include_deleted=True) == []
