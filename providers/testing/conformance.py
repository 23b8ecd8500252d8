"""The conformance suite every provider runs against its fake (ours and third parties').

Subclass it in a test module, name the fake's steps, and provide three fixtures::

    class TestMyCloud(ProviderConformance):
        failure_points = FakeMyCloud.failure_points   # the steps of create, in order

        @pytest.fixture
        def provider(self, my_fake) -> Provider: ...   # pointed at the fake
        @pytest.fixture
        def fake(self, my_fake) -> FakeCloud: ...      # the same fake's control handle
        @pytest.fixture
        def cli_env(self, my_fake) -> dict[str, str]:  # how `inletsctl` reaches the fake
            return {"MYCLOUD_TOKEN": my_fake.token, "MYCLOUD_ENDPOINT": my_fake.base_url}

Every fault case ends the way terraform-plugin-testing's ``CheckDestroy`` does: it asks
the fake's API (``fake.resources()``), never our own state, whether anything is left.
The cases: a 5xx before the work, a 5xx or a dropped connection after it (the cloud
made the resource; the answer never arrived), Ctrl-C and SIGTERM while the answer is
awaited, and ``kill -9`` of the real ``inletsctl create`` followed by one
``inletsctl delete --id``. Untagged VMs (``fake.foreign_vm()``) are never touched.

A fake keeps state like the real API: what ``create`` makes exists until deleted,
and ``resources()`` reports every live resource we could be billed for or that would
be left behind (VMs, firewalls, security groups, volumes, ...), whatever its type.
:class:`providers.testing.jsonapi.JsonApiFake` does the plumbing for JSON APIs;
:class:`providers.testing.faults.FaultProxy` puts the faults in front of an emulator.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pytest

from providers import kit
from providers.base import Provider
from providers.errors import HostNotFound, NotOurs, ProviderError, UndoFailed
from providers.models import Host, HostSpec, HostStatus, ServerSpec, TunnelMode
from providers.testing.faults import IN_PROCESS, Fault
from providers.testing.jsonapi import JsonApiFake
from tunnel_core.tls import self_signed

__all__ = [
    "FakeCloud",
    "ProviderConformance",
    "check_deleted_host_is_gone",
    "check_failed_undo",
    "make_server_spec",
    "run_cli",
    "spec_for",
    "wait_active",
]

#: polls allowed before a fake host must be active; fakes should need one or two.
MAX_POLLS = 20
#: bound on each `inletsctl` process the kill -9 cases start
CLI_TIMEOUT_S = 120.0


class FakeCloud(Protocol):
    #: the steps of ``create`` at which faults can be armed, in the order it reaches them
    failure_points: Sequence[str]

    def resources(self) -> set[str]:
        """Ids (any stable string) of every live resource at the fake."""
        ...

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        """The next call of ``step`` meets ``fault``; ``victim()`` is the PID ``KILL`` kills."""
        ...

    def struck(self, step: str) -> bool:
        """Whether a fault armed for ``step`` was reached (so no case passes vacuously)."""
        ...

    def foreign_vm(self) -> tuple[str, str] | None:
        """Make a VM without our tags, as the user's own; its (provider id, IP), or None
        where the provider has no such thing."""
        ...


def make_server_spec(
    mode: TunnelMode = TunnelMode.TCP, ports: tuple[int, ...] = (8080,)
) -> ServerSpec:
    """A real ServerSpec: a fresh certificate and token, as ``create`` would make them."""
    cert, key, fingerprint = self_signed(["127.0.0.1"])
    return ServerSpec(
        mode=mode,
        token=secrets.token_urlsafe(32),
        tls_cert_pem=cert,
        tls_key_pem=key,
        tls_fingerprint=fingerprint,
        ports=ports,
    )


def spec_for(provider: Provider, **changes: Any) -> HostSpec:
    """A spec on the provider's defaults with a fresh host id, and ``changes`` applied
    (``region="x"``): what a provider's own tests create beside the suite's cases."""
    facts = provider.facts
    host_id = uuid.uuid4().hex[:12]
    spec = HostSpec(
        host_id=host_id,
        name=f"inlets-conformance-{host_id[:6]}",
        region=facts.default_region,
        plan=facts.default_plan,
        image=facts.default_image,
        user_data="#cloud-config\nruncmd: [[echo, hello]]\n",
        server=make_server_spec(),
    )
    return replace(spec, **changes)


def wait_active(
    provider: Provider, host: Host, max_polls: int = MAX_POLLS, interval: float = 0.0
) -> Host:
    """Poll until active; a real boot (qemu) needs ``interval``, fakes answer at once."""
    for _ in range(max_polls):
        host = provider.status(host.id)
        if host.status is HostStatus.ACTIVE:
            return host
        assert host.status is HostStatus.CREATING, host
        time.sleep(interval)
    raise AssertionError(f"host {host.id} not active after {max_polls} polls")


#: what each fault must surface as when ``create`` does not finish
_RAISES: dict[Fault, type[BaseException]] = {
    Fault.ERROR: ProviderError,
    Fault.LOST: ProviderError,
    Fault.DROPPED: ProviderError,
    Fault.INTERRUPT: KeyboardInterrupt,
    Fault.TERMINATE: kit.Terminated,
}


def check_deleted_host_is_gone(provider: Provider) -> None:
    """A host deleted by its id is no longer found by it (``status``) nor by its IP
    (``delete --ip``), even while the cloud may still be tearing the VM down."""
    host = wait_active(provider, provider.create(spec_for(provider)))
    provider.delete(host_id=host.id)
    with pytest.raises(HostNotFound):
        provider.status(host.id)
    with pytest.raises(HostNotFound):
        provider.delete(ip=host.ip)


def check_failed_undo(
    provider: Provider, fake: JsonApiFake, step: str, refusal: tuple[int, str, str]
) -> tuple[HostSpec, str]:
    """``create`` fails at ``step`` and the undo too, every DELETE refused with
    ``refusal`` (status, code, message): the error's hint names the ``inletsctl delete
    --id`` that finishes the job. Returns the spec and the error's message, for the
    provider's own check that it names what is left."""
    fake.fail_at(step)
    fake.refuse("DELETE .*", *refusal)
    spec = spec_for(provider)
    with pytest.raises(UndoFailed) as info:
        kit.create_host(provider, spec)
    assert f"inletsctl delete --id {spec.host_id}" in info.value.hint
    return spec, str(info.value)


class ProviderConformance:
    """Behaviour every provider must have; see the module docstring."""

    #: the steps of ``create``; set it to the fake's ``failure_points``
    failure_points: ClassVar[Sequence[str]] = ()
    #: the in-process faults the fake can inject (a local provider has no lost answers)
    faults: ClassVar[Sequence[Fault]] = IN_PROCESS
    #: extra ``inletsctl create`` arguments for the kill -9 cases (``--wait none``: no
    #: readiness probe ever aims at the public-looking addresses a fake hands out)
    cli_create_args: ClassVar[Sequence[str]] = ("--tcp", "--ports", "8080", "--wait", "none")
    #: how the lifecycle case polls a host to active (a fake needs no pause)
    max_polls: ClassVar[int] = MAX_POLLS
    poll_interval: ClassVar[float] = 0.0

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "fault" in metafunc.fixturenames:
            cases = list(itertools.product(self.failure_points, self.faults))
            metafunc.parametrize(("step", "fault"), cases, ids=[f"{s}-{f.value}" for s, f in cases])
        elif "step" in metafunc.fixturenames:
            metafunc.parametrize("step", self.failure_points)

    def make_spec(self, provider: Provider) -> HostSpec:
        return spec_for(provider)

    # -- the happy path ---------------------------------------------------------------

    def test_lifecycle_create_poll_list_status_delete_by_ip(
        self, provider: Provider, fake: FakeCloud
    ) -> None:
        before = fake.resources()
        spec = self.make_spec(provider)
        host = kit.create_host(provider, spec)
        assert host.id
        assert host.status in (HostStatus.CREATING, HostStatus.ACTIVE)
        active = wait_active(provider, host, self.max_polls, self.poll_interval)
        assert active.id == host.id and active.provider == provider.name
        assert active.ip, "an active host has a public IP"
        assert fake.resources() > before, "create made something at the provider"
        listed = {h.id: h for h in provider.list()}
        assert host.id in listed, "list finds the host by tag"
        assert listed[host.id].additional.get("host_id") == spec.host_id
        assert provider.status(host.id).additional.get("host_id") == spec.host_id
        provider.delete(ip=active.ip)
        assert fake.resources() == before
        live = {h.id for h in provider.list() if h.status is not HostStatus.DELETED}
        assert host.id not in live

    def test_delete_by_provider_id_removes_every_resource(
        self, provider: Provider, fake: FakeCloud
    ) -> None:
        before = fake.resources()
        host = kit.create_host(provider, self.make_spec(provider))
        provider.delete(host_id=host.id)
        assert fake.resources() == before

    def test_purge_finds_everything_by_our_host_id_alone(
        self, provider: Provider, fake: FakeCloud
    ) -> None:
        before = fake.resources()
        spec = self.make_spec(provider)
        kit.create_host(provider, spec)
        assert kit.delete_host(provider, spec.host_id), "purge says what it removed"
        assert fake.resources() == before
        assert provider.purge(spec.host_id) == [], "purge is idempotent"
        with pytest.raises(HostNotFound):
            kit.delete_host(provider, spec.host_id)

    def test_status_of_unknown_host(self, provider: Provider) -> None:
        with pytest.raises(HostNotFound):
            provider.status("does-not-exist-0000")

    # -- faults -----------------------------------------------------------------------

    def test_fault_during_create_leaves_nothing(
        self, provider: Provider, fake: FakeCloud, step: str, fault: Fault
    ) -> None:
        before = fake.resources()
        spec = self.make_spec(provider)
        fake.arm(step, fault)
        try:
            kit.create_host(provider, spec)
        except _RAISES[fault]:
            pass
        else:  # an SDK retried the 5xx and it went through: then one delete suffices
            assert fault not in (Fault.INTERRUPT, Fault.TERMINATE), f"{fault.value} swallowed"
            kit.delete_host(provider, spec.host_id)
        assert fake.struck(step), f"create never reached {step}"
        assert fake.resources() == before, f"left after {fault.value} at {step}"

    def test_killed_cli_is_finished_by_one_delete(
        self, provider: Provider, fake: FakeCloud, step: str, cli_env: dict[str, str],
        tmp_path: Path,
    ) -> None:  # fmt: skip
        before = fake.resources()
        env = {**os.environ, **cli_env, "INLETSCTL_STATE_DIR": str(tmp_path / "state")}
        env["NO_COLOR"] = "1"
        started = threading.Event()
        pid: list[int] = []

        def victim() -> int:
            started.wait(CLI_TIMEOUT_S)
            return pid[0]

        fake.arm(step, Fault.KILL, victim)
        argv = [sys.executable, "-m", "inletsctl", "create", "--provider", provider.name]
        with _cli(argv + list(self.cli_create_args), env) as proc:
            pid.append(proc.pid)
            started.set()
            assert proc.wait(CLI_TIMEOUT_S) == -9, "killed at the step"
        assert fake.struck(step)
        hosts = json.loads(run_cli(env, "list", "--all", "-o", "json").stdout)
        assert len(hosts) == 1, hosts
        gone = run_cli(env, "delete", "--id", hosts[0]["id"])
        assert gone.returncode == 0, gone.stderr
        assert fake.resources() == before, f"left after kill -9 at {step} and one delete"

    # -- ownership --------------------------------------------------------------------

    def test_a_vm_we_did_not_make_is_never_touched(
        self, provider: Provider, fake: FakeCloud
    ) -> None:
        foreign = fake.foreign_vm()
        if foreign is None:
            pytest.skip("this provider has no VMs of its own to compare with")
        vm, ip = foreign
        other = fake.foreign_vm()
        assert other is not None
        with pytest.raises(HostNotFound):
            provider.status(vm)
        with pytest.raises(NotOurs) as refused:
            provider.delete(host_id=vm)
        assert "--force" in refused.value.hint
        with pytest.raises(HostNotFound):
            provider.delete(ip=ip)
        assert vm not in {h.id for h in provider.list()}
        spec = self.make_spec(provider)
        kit.create_host(provider, spec)
        kit.delete_host(provider, spec.host_id)
        assert provider.purge(uuid.uuid4().hex[:12]) == []
        with_foreign = fake.resources()
        provider.delete(host_id=vm, force=True)
        assert fake.resources() < with_foreign
        with pytest.raises(HostNotFound):
            provider.delete(host_id=vm, force=True)
        with pytest.raises(NotOurs):  # still there: --force deleted that VM only
            provider.delete(host_id=other[0])


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``inletsctl *args`` as a shell script runs it: a child process with ``env`` alone."""
    return subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


@contextmanager
def _cli(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A CLI process that is killed by PID if the test fails before it ends."""
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(CLI_TIMEOUT_S)
