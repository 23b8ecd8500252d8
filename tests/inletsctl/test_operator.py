"""The operator under kopf's own runner, against kmock's Kubernetes emulator.

Exit servers come from the ``local`` provider (a real tunnel-core server on loopback)
or the DigitalOcean fake (public-looking IPs that nothing dials: ``--wait running``).
What each test asserts is read back from the emulator and from the provider, never
from the operator's own state. The kill tests run ``inletsctl operator run`` as a
process of its own: a ``KopfRunner`` is a thread, and kopf waits for its handler
threads when stopped (by design it never abandons one), so only a process can die
between two writes the way a killed pod does.
"""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import pytest
from kopf.testing import KopfRunner

from inletsctl import release
from inletsctl.operator import handlers, resources as r
from inletsctl.providers_config import Access
from inletsctl.readiness import Wait
from providers.local import LOOPBACK, healthz
from providers.testing.faults import Fault
from providers.testing.jsonapi import serving
from tests.conftest import free_port, wait_for
from tests.fakes.digitalocean import FakeDigitalOcean
from tests.fakes.kubernetes import TEST_AGENT, KubeServer
from tests.fakes.release_server import release_server

pytestmark = pytest.mark.network

NS = "default"
SERVICES = r.namespaced(NS, "services")
#: Bound on every wait for the operator; each one ends at an event well before it.
DEADLINE_S = 30.0


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeServer]:
    server = KubeServer().start()
    crd = r.crd()["spec"]
    server.api.resources[f"{r.API_VERSION}/{r.TUNNELS}"] = kmock.ResourceInfo(
        kind=crd["names"]["kind"],
        singular=crd["names"]["singular"],
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
        subresources={"status"},
    )
    monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def do_fake() -> Iterator[FakeDigitalOcean]:
    yield from serving(FakeDigitalOcean())


def config(state_dir: Path, **kw: Any) -> handlers.OperatorConfig:
    return handlers.OperatorConfig(state_dir=state_dir, poll=0.01, timeout=30.0, **kw)


def do_config(state_dir: Path, fake: FakeDigitalOcean, **kw: Any) -> handlers.OperatorConfig:
    access = Access(access_token=fake.token, endpoint_url=fake.base_url)
    return config(state_dir, provider="digitalocean", wait=Wait.running, access=access, **kw)


@contextmanager
def operator(cfg: handlers.OperatorConfig) -> Iterator[KopfRunner]:
    registry, settings = handlers.build(cfg)
    runner = KopfRunner(
        ["run", "--all-namespaces", "--standalone", "--verbose"],
        registry=registry,
        settings=settings,
        timeout=DEADLINE_S,
    )
    with runner:
        yield runner
    assert runner.exception is None, runner.output


def service(name: str = "web", ports: tuple[int, ...] = (18080,), **notes: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "annotations": notes},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": name},
            "ports": [{"name": f"p{p}", "port": p, "protocol": "TCP"} for p in ports],
        },
    }


def until(kube: KubeServer, path: str, test: Callable[[Any], bool], what: str) -> Any:
    """The object at ``path`` once ``test`` holds for it (None: it is gone)."""
    seen: list[Any] = [None]

    def check() -> bool:
        seen[0] = kube.get(path)
        return bool(test(seen[0]))

    wait_for(check, DEADLINE_S, what)
    return seen[0]


def ready_tunnel(kube: KubeServer, name: str = "web", other_than: str = "") -> dict[str, Any]:
    def ready(t: Any) -> bool:
        status = (t or {}).get("status") or {}
        return status.get("phase") == "Ready" and status.get("hostId") != other_than

    return until(kube, r.tunnel_path(NS, name), ready, f"Tunnel {name} Ready")


def has_ingress(svc: Any) -> bool:
    return bool(((svc or {}).get("status") or {}).get("loadBalancer", {}).get("ingress"))


def ingress_of(kube: KubeServer, name: str = "web") -> list[dict[str, str]]:
    svc = until(kube, f"{SERVICES}/{name}", has_ingress, f"{name}'s status.loadBalancer")
    return list(svc["status"]["loadBalancer"]["ingress"])


def client_args(kube: KubeServer, name: str = "web") -> list[str]:
    dep = kube.get(r.namespaced(NS, "deployments", f"{name}-tunnel-client", "apps/v1"))
    return list(dep["spec"]["template"]["spec"]["containers"][0]["command"])


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def gone(kube: KubeServer, name: str = "web") -> None:
    until(kube, f"{SERVICES}/{name}", lambda svc: svc is None, f"Service {name} deleted")


def test_service_gets_a_local_exit_server_client_and_ip(kube, state_dir) -> None:
    with operator(config(state_dir, provider="local")):
        kube.request("POST", SERVICES, service(ports=(18080, 18443)))
        tunnel = ready_tunnel(kube)
        assert ingress_of(kube) == [{"ip": LOOPBACK}]
        status = tunnel["status"]
        # the exit server is a real tunnel-core server, answering with the recorded pin
        assert healthz(LOOPBACK, status["controlPort"], status["fingerprint"])["status"] == "ok"
        check_client(kube, state_dir, tunnel)
        # every field the operator wrote is in the CRD it ships (a real API server would
        # prune one that is not, and a restarted operator would miss it)
        schema = r.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in schema["properties"].values():
            part["additionalProperties"] = False
        jsonschema.validate({k: tunnel[k] for k in ("spec", "status")}, schema)
        kube.request("DELETE", f"{SERVICES}/web")
        gone(kube)

    assert not (state_dir / "local" / status["hostId"]).exists()
    with pytest.raises(OSError):
        healthz(LOOPBACK, status["controlPort"], status["fingerprint"])


def check_client(kube: KubeServer, state_dir: Path, tunnel: dict[str, Any]) -> None:
    status = tunnel["status"]
    assert tunnel["spec"]["ports"] == [18080, 18443]
    svc = kube.get(f"{SERVICES}/web")
    assert r.FINALIZER in svc["metadata"]["finalizers"]
    # the client dials that server with the pin, forwards every port to the cluster address
    args = client_args(kube)
    assert flag(args, "--url") == f"wss://{LOOPBACK}:{status['controlPort']}"
    assert flag(args, "--tls-fingerprint") == status["fingerprint"]
    assert flag(args, "--ports") == "18080,18443"
    assert flag(args, "--upstream") == svc["spec"]["clusterIP"]
    assert "--token" not in args
    secret = kube.get(r.namespaced(NS, "secrets", "web-tunnel-client"))
    token_file = state_dir / "local" / status["hostId"] / "token"
    assert secret["stringData"]["token"] == token_file.read_text()
    assert secret["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    # the operator's own calls carry the identity of the kubeconfig, as kopf's do
    ours = [
        q
        for q in list(kube.api)
        if q.resource and q.resource.plural == r.TUNNELS and q.headers["User-Agent"] != TEST_AGENT
    ]
    assert ours and {q.headers.get("Authorization") for q in ours} == {"Bearer emulator-token"}


@contextmanager
def echo_server(host: str, port: int) -> Iterator[None]:
    """The Service's pods, as the client reaches them at the cluster address."""
    srv = socketserver.ThreadingTCPServer((host, port), EchoHandler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


def through(port: int, payload: bytes) -> bytes:
    """Send ``payload`` to the exit server's public port; what comes back."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
        return got


def test_the_client_deployment_command_carries_traffic(kube, state_dir, tmp_path) -> None:
    """The Deployment's own command, run here: it fetches the engine from a release server,
    checks the pinned SHA-256, connects with the Secret's token, and the Service's port on
    the exit server reaches the cluster address (127.0.0.2 stands in for it)."""
    pyz = release.local_pyz()
    port = free_port()
    svc = service(ports=(port,))
    svc["spec"]["clusterIP"] = "127.0.0.2"
    with release_server() as releases, echo_server("127.0.0.2", port):
        releases.publish(release.tag(), {pyz.name: pyz.read_bytes()})
        with operator(config(state_dir, provider="local", release_url=releases.url)):
            kube.request("POST", SERVICES, svc)
            ready_tunnel(kube)
            dep = kube.get(r.namespaced(NS, "deployments", "web-tunnel-client", "apps/v1"))
            [container] = dep["spec"]["template"]["spec"]["containers"]
            secret = kube.get(r.namespaced(NS, "secrets", "web-tunnel-client"))
            env = {e["name"]: e.get("value") for e in container["env"]}
            env[r.TOKEN_ENV] = secret["stringData"][r.TOKEN_KEY]
            engine = tmp_path / "engine" / pyz.name  # the pod's emptyDir
            command = [a.replace(r.PYZ_PATH, str(engine)) for a in container["command"]]
            path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
            with open(tmp_path / "client.log", "wb") as log:
                client = subprocess.Popen(
                    command, env={**env, "PATH": path}, stdout=log, stderr=subprocess.STDOUT
                )
            try:
                wait_for(lambda: _answers(port), DEADLINE_S, "the tunnel to carry a connection")
                assert through(port, b"hello through the tunnel") == b"hello through the tunnel"
            finally:
                client.terminate()
                client.wait(timeout=DEADLINE_S)
            assert releases.hits(pyz.name)  # it fetched the engine from the release URL
            kube.request("DELETE", f"{SERVICES}/web")
            gone(kube)


def _answers(port: int) -> bool:
    try:
        return through(port, b"ping") == b"ping"
    except OSError:
        return False


def test_a_ports_change_moves_the_service_to_a_new_exit_server(kube, state_dir) -> None:
    with operator(config(state_dir, provider="local")):
        kube.request("POST", SERVICES, service(ports=(18080,)))
        first = ready_tunnel(kube)["status"]["hostId"]
        kube.request("PATCH", f"{SERVICES}/web", {"spec": {"ports": [{"port": 19090}]}})
        second = ready_tunnel(kube, other_than=first)
        assert flag(client_args(kube), "--ports") == "19090"
        assert ingress_of(kube) == [{"ip": LOOPBACK}]
        assert second["spec"]["ports"] == [19090]
        assert not (state_dir / "local" / first).exists()  # the old server was removed
        assert (state_dir / "local" / second["status"]["hostId"] / "host.json").is_file()
        kube.request("DELETE", f"{SERVICES}/web")
        gone(kube)


def test_a_service_that_stops_being_a_load_balancer_loses_its_server(kube, state_dir) -> None:
    with operator(config(state_dir, provider="local")):
        kube.request("POST", SERVICES, service())
        host_id = ready_tunnel(kube)["status"]["hostId"]
        kube.request("PATCH", f"{SERVICES}/web", {"spec": {"type": "ClusterIP"}})
        until(kube, r.tunnel_path(NS, "web"), lambda t: t is None, "the Tunnel removed")
        assert not (state_dir / "local" / host_id).exists()
        assert kube.get(r.namespaced(NS, "deployments", "web-tunnel-client", "apps/v1")) is None
        svc = until(kube, f"{SERVICES}/web", lambda svc: not has_ingress(svc), "IP withdrawn")
        assert svc["spec"]["type"] == "ClusterIP"


def test_a_tunnel_deleted_by_hand_takes_its_server_along(kube, state_dir) -> None:
    with operator(config(state_dir, provider="local")):
        kube.request("POST", SERVICES, service())
        host_id = ready_tunnel(kube)["status"]["hostId"]
        assert r.FINALIZER in kube.get(r.tunnel_path(NS, "web"))["metadata"]["finalizers"]
        kube.request("DELETE", r.tunnel_path(NS, "web"))
        until(kube, r.tunnel_path(NS, "web"), lambda t: t is None, "the Tunnel gone")
        assert not (state_dir / "local" / host_id).exists()
        kube.request("DELETE", f"{SERVICES}/web")
        gone(kube)


def test_annotations_choose_the_cloud_and_delete_leaves_nothing(kube, state_dir, do_fake) -> None:
    notes = {r.PROVIDER: "digitalocean", r.REGION: "fra1", r.PLAN: "s-1vcpu-1gb"}
    with operator(do_config(state_dir, do_fake, region="lon1")):
        kube.request("POST", SERVICES, service(**notes))
        tunnel = ready_tunnel(kube)
        [ip] = ingress_of(kube)
        [droplet] = do_fake.droplets.values()
        assert (droplet["region"]["slug"], droplet["size_slug"]) == ("fra1", "s-1vcpu-1gb")
        assert f"inletsctl-host-{tunnel['status']['hostId']}" in droplet["tags"]
        assert ip == {"ip": droplet["networks"]["v4"][0]["ip_address"]}
        assert len(do_fake.firewalls) == 1

        kube.request("DELETE", f"{SERVICES}/web")
        gone(kube)
        until(kube, r.tunnel_path(NS, "web"), lambda t: t is None, "the Tunnel gone")

    assert do_fake.resources() == set()
    for path in (
        r.tunnel_path(NS, "web"),
        r.namespaced(NS, "secrets", "web-tunnel-client"),
        r.namespaced(NS, "deployments", "web-tunnel-client", "apps/v1"),
    ):
        assert kube.get(path) is None, path


@pytest.mark.parametrize("fault", [Fault.LOST, Fault.DROPPED, Fault.ERROR])
def test_a_failed_create_is_undone_and_retried_into_one_server(
    kube, state_dir, do_fake, fault
) -> None:
    """The droplet made (or not), then a 5xx or a dropped connection: the kit removes
    it by tag, kopf retries, and the Service ends with exactly one droplet."""
    do_fake.arm("create_droplet", fault)
    with operator(do_config(state_dir, do_fake, retry_delay=0.1)):
        kube.request("POST", SERVICES, service())
        tunnel = ready_tunnel(kube)
        ingress_of(kube)
        assert do_fake.struck("create_droplet")
        [droplet] = do_fake.droplets.values()
        assert f"inletsctl-host-{tunnel['status']['hostId']}" in droplet["tags"]
        assert len(do_fake.firewalls) == 1
        kube.request("DELETE", f"{SERVICES}/web")
        gone(kube)
    assert do_fake.resources() == set()


def test_an_http_host_annotation_makes_an_http_tunnel(kube, state_dir) -> None:
    notes = {r.HTTP_HOST: "app.example.com"}
    with operator(config(state_dir, provider="local")):
        kube.request("POST", SERVICES, service(ports=(8080, 9090), **notes))
        status = ready_tunnel(kube)["status"]
        assert ingress_of(kube) == [{"ip": LOOPBACK}]
        args = client_args(kube)
        svc = kube.get(f"{SERVICES}/web")
        assert args[5:7] == ["http", "client"]
        assert flag(args, "--upstream") == f"app.example.com=http://{svc['spec']['clusterIP']}:8080"
        assert "--ports" not in args
        meta = (state_dir / "local" / status["hostId"] / "host.json").read_text()
        assert '"mode": "http"' in meta
        kube.request("DELETE", f"{SERVICES}/web")
        gone(kube)


def test_a_service_it_cannot_serve_is_refused_once_and_gets_nothing(kube, state_dir) -> None:
    udp_only = service()
    udp_only["spec"]["ports"] = [{"name": "dns", "port": 53, "protocol": "UDP"}]

    def handled(svc: Any) -> bool:
        notes = (svc or {}).get("metadata", {}).get("annotations") or {}
        return f"{r.GROUP}/last-handled-configuration" in notes

    with operator(config(state_dir, provider="local")) as runner:
        kube.request("POST", SERVICES, udp_only)
        until(kube, f"{SERVICES}/web", handled, "kopf done with the Service (not retrying)")
    assert "failed permanently: Service default/web has no TCP port" in runner.output
    assert kube.get(r.tunnel_path(NS, "web")) is None
    assert not (state_dir / "local").exists()


def test_annotated_only_leaves_other_services_alone(kube, state_dir, do_fake) -> None:
    with operator(do_config(state_dir, do_fake, annotated_only=True)):
        kube.request("POST", SERVICES, service("plain"))
        kube.request("POST", SERVICES, service("chosen", **{r.MANAGE: "true"}))
        ready_tunnel(kube, "chosen")
        ingress_of(kube, "chosen")

    assert len(do_fake.droplets) == 1
    assert kube.get(r.tunnel_path(NS, "plain")) is None
    assert not kube.get(f"{SERVICES}/plain")["metadata"].get("finalizers")


def run_operator_process(
    cfg_args: list[str], state_dir: Path, log: Path
) -> subprocess.Popen[bytes]:
    """``inletsctl operator run`` as its own process, so that it can really be killed -9."""
    env = {**os.environ, "INLETSCTL_STATE_DIR": str(state_dir)}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "inletsctl", "operator", "run", *cfg_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


@pytest.mark.parametrize("moment", ["tunnel-written", "droplet-made"])
def test_an_operator_killed_mid_create_leaves_one_server_then_none(
    kube, state_dir, do_fake, tmp_path, moment
) -> None:
    """Killed -9 right after the Tunnel names the new host id (before the droplet is
    asked for), or right after the droplet was made (its answer never read): the next
    operator finishes with one droplet, and deleting the Service leaves none."""
    args = ["--provider", "digitalocean", "--region", "lon1", "--wait", "running"]
    args += ["--poll", "10ms", "--access-token", do_fake.token, "--endpoint-url", do_fake.base_url]
    proc = run_operator_process(args, state_dir, tmp_path / "operator.log")
    killed: list[str] = []
    try:
        if moment == "droplet-made":
            do_fake.arm("create_droplet", Fault.KILL, victim=lambda: proc.pid)
        else:

            def kill_on_creating(request: kmock.Request) -> None:
                data = request.data if isinstance(request.data, dict) else {}
                status = data.get("status") or {}
                if status.get("phase") == "Creating" and not killed:
                    killed.append(status["hostId"])
                    os.kill(proc.pid, signal.SIGKILL)

            kube.api.after_write.append(kill_on_creating)

        kube.request("POST", SERVICES, service())
        assert proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = kube.get(r.tunnel_path(NS, "web"))["status"]
    assert left["phase"] == "Creating"
    assert len(do_fake.droplets) == (1 if moment == "droplet-made" else 0)

    with operator(do_config(state_dir, do_fake, region="lon1")):
        tunnel = ready_tunnel(kube, other_than=left["hostId"])
        ingress_of(kube)
        [droplet] = do_fake.droplets.values()
        assert f"inletsctl-host-{tunnel['status']['hostId']}" in droplet["tags"]
        kube.request("DELETE", f"{SERVICES}/web")
        gone(kube)

    assert do_fake.resources() == set()
