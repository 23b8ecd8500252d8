"""`inletsctl connect ID --generate systemd|kubernetes|ecs-anywhere`: what each prints or
writes, checked by the tools that will read it (systemd-analyze, the Kubernetes schemas),
and the systemd unit's own commands run here against a local exit server."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from inletsctl import release
from inletsctl.operator.resources import CLIENT_IMAGE
from inletsctl.store import READY, HostRecord, Store
from tests.conftest import free_port
from tests.fakes.release_server import release_server
from tests.inletsctl.conftest import run_cli
from tests.inletsctl.test_e2e_local import MARKER, get_through, upstream  # noqa: F401

VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
RELEASES = "https://releases.example/inletsctl"


def host(state_dir: Path, mode: str = "tcp") -> HostRecord:
    """A ready host in the state: generating needs no exit server."""
    return Store(state_dir).add(
        HostRecord(
            id="0123456789ab",
            provider="local",
            name="edge",
            status=READY,
            mode=mode,
            engine="tunnel-core",
            control_port=8123,
            data_port=8000,
            fingerprint="sha256:" + "cd" * 32,
            token="tok-" + "x" * 40,
            ip="2001:db8::7" if mode == "http" else "203.0.113.7",
            ports="2222:22,8080" if mode == "tcp" else "",
            upstream="" if mode == "tcp" else "http://127.0.0.1:3000",
            region="local",
        )
    )


def generate(record: HostRecord, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("connect", record.id, "--release-url", RELEASES, "--generate", *args)


def test_systemd_writes_a_hardened_unit_and_a_0600_token_file(
    state_dir: Path, tmp_path: Path
) -> None:
    record = host(state_dir)
    out = tmp_path / "unit"
    res = generate(record, "systemd", "--output-dir", str(out))
    assert res.returncode == 0, res.stderr
    assert record.token not in res.stdout + res.stderr, "the token is written, never printed"
    name = f"inletsctl-client-{record.id}"
    files = {p.name: p for p in out.iterdir()}
    assert set(files) == {f"{name}.service", "token.env", "fetch.py"}
    assert stat.S_IMODE(files["token.env"].stat().st_mode) == 0o600
    assert files["token.env"].read_text() == f"INLETS_TOKEN={record.token}\n"
    unit = files[f"{name}.service"].read_text()
    for line in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "CapabilityBoundingSet=", f"StateDirectory={name}",
                 f"EnvironmentFile=/etc/inletsctl/{record.id}/token.env"):  # fmt: skip
        assert line in unit.splitlines()
    assert record.token not in unit
    [start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert "--token-env INLETS_TOKEN" in start and "--ports 2222:22,8080" in start
    assert f"--tls-fingerprint {record.fingerprint}" in start
    artifact = release.artifact(RELEASES)
    [pre] = [line for line in unit.splitlines() if line.startswith("ExecStartPre=")]
    assert f"{artifact.url} {artifact.sha256}" in pre, "fetched and checked as cloud-init does"
    installs = res.stdout.splitlines()
    assert f"install -D -m 0600 {out}/token.env /etc/inletsctl/{record.id}/token.env" in installs
    assert installs[-1] == f"systemctl daemon-reload && systemctl enable --now {name}.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(state_dir: Path, tmp_path: Path) -> None:
    record = host(state_dir, mode="http")
    out = tmp_path / "unit"
    assert generate(record, "systemd", "--output-dir", str(out)).returncode == 0
    [unit] = out.glob("*.service")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Unknown" not in done.stderr and "Invalid" not in done.stderr, done.stderr


def _exec_line(unit: str, key: str, here: dict[str, str]) -> list[str]:
    """One Exec line's words with the unit's paths swapped for ``here``'s (``%S``...)."""
    [line] = [x for x in unit.splitlines() if x.startswith(f"{key}=")]
    text = line.removeprefix(f"{key}=")
    for theirs, ours in here.items():
        text = text.replace(theirs, ours)
    return shlex.split(text)


def test_the_units_own_commands_fetch_check_and_carry_a_connection(
    state_dir: Path,
    tmp_path: Path,
    upstream: int,  # noqa: F811 (the fixture)
) -> None:
    public = free_port()
    made = run_cli("create", "--tcp", "--ports", f"{public}:{upstream}", "-o", "json")
    assert made.returncode == 0, made.stderr
    host_id = json.loads(made.stdout)["id"]
    pyz = release.local_pyz()
    with release_server() as releases:
        releases.publish(release.tag(), {pyz.name: pyz.read_bytes()})
        out = tmp_path / "unit"
        res = run_cli("connect", host_id, "--generate", "systemd", "--output-dir", str(out),
                      "--release-url", releases.url)  # fmt: skip
        assert res.returncode == 0, res.stderr
        unit = next(out.glob("*.service")).read_text()
        here = {
            "%S": str(tmp_path / "var-lib"),
            f"/etc/inletsctl/{host_id}": str(out),
            "/usr/bin/python3": sys.executable,  # the unit's python3; this one is 3.10+ too
        }
        fetch = subprocess.run(_exec_line(unit, "ExecStartPre", here), capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        assert fetch.returncode == 0, fetch.stderr
        engine = tmp_path / "var-lib" / f"inletsctl-client-{host_id}" / "tunnel-core.pyz"
        assert release.sha256_file(engine) == release.sha256_file(pyz)
        assert releases.hits("tunnel-core.pyz"), "it came from the release server"
    key, _, token = (out / "token.env").read_text().strip().partition("=")
    env = {"PATH": os.environ["PATH"], key: token}
    client = subprocess.Popen(_exec_line(unit, "ExecStart", here), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert get_through(public, client) == MARKER
    finally:
        client.terminate()
        client.wait(timeout=10)
    assert run_cli("delete", "--id", host_id).returncode == 0


def test_systemd_needs_an_output_dir(state_dir: Path) -> None:
    res = generate(host(state_dir), "systemd")
    assert res.returncode == 2 and "--output-dir" in res.stderr
    assert "tok-" not in res.stdout + res.stderr


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_kubernetes_prints_the_operators_secret_and_deployment(state_dir: Path, mode: str) -> None:
    record = host(state_dir, mode)
    res = generate(record, "kubernetes")
    assert res.returncode == 0, res.stderr
    secret, deployment = yaml.safe_load_all(res.stdout)
    for doc in (secret, deployment):
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    assert secret["kind"] == "Secret" and secret["stringData"]["token"] == record.token
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == CLIENT_IMAGE
    [token] = [e for e in container["env"] if e["name"] == "INLETS_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    command = container["command"]
    assert record.fingerprint in command and record.token not in command
    if mode == "tcp":
        assert command[command.index("--ports") + 1] == "2222:22,8080"
    else:
        assert command[command.index("--url") + 1] == "wss://[2001:db8::7]:8123"
        assert command[command.index("--upstream") + 1] == "http://127.0.0.1:3000"


def test_ecs_anywhere_prints_an_external_host_network_task_definition(state_dir: Path) -> None:
    record = host(state_dir)
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:inletsctl/x/token-AbCdEf"
    role = "arn:aws:iam::123456789012:role/tunnel"
    res = generate(record, "ecs-anywhere", "--secret-arn", arn, "--execution-role-arn", role)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert record.token not in res.stdout
    assert doc["requiresCompatibilities"] == ["EXTERNAL"] and doc["networkMode"] == "host"
    assert doc["executionRoleArn"] == role
    assert "runtimePlatform" not in doc, "no architecture pinned: arm64 runs it too"
    [container] = doc["containerDefinitions"]
    assert container["image"] == CLIENT_IMAGE
    assert container["secrets"] == [{"name": "INLETS_TOKEN", "valueFrom": arn}]
    assert container["readonlyRootFilesystem"] is True
    assert record.fingerprint in container["command"]

    bare = generate(record, "ecs-anywhere")
    assert bare.returncode == 0 and "SECRET_ARN" in bare.stderr
    assert json.loads(bare.stdout)["containerDefinitions"][0]["secrets"][0]["valueFrom"] == (
        "SECRET_ARN"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["ecs-anywhere", "--register"], "--register and --cluster go together"),
        (["kubernetes", "--cluster", "c"], "go with --generate ecs-anywhere"),
        (["kubernetes", "--output-dir", "x"], "--output-dir goes with --generate systemd"),
        (["nomad"], "not one of systemd, kubernetes, ecs-anywhere"),
        (
            ["ecs-anywhere", "--register", "--cluster", "c", "--secret-arn", "a"],
            "--register creates the secret and the execution role",
        ),  # fmt: skip
    ],
)
def test_options_of_another_target_are_refused(state_dir: Path, args: list[str], says: str) -> None:
    res = generate(host(state_dir), *args)
    assert res.returncode == 2 and says in res.stderr


def test_an_s3_release_url_is_refused_for_a_generated_client(
    state_dir: Path, tmp_path: Path
) -> None:
    """Only an ecs-fargate task's role reads an s3:// engine; a client has no such role."""
    record = host(state_dir)
    done = run_cli(
        "connect", record.id, "--release-url", "s3://bucket/tunnel-core.pyz",
        "--generate", "systemd", "--output-dir", str(tmp_path / "unit"),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "s3:// is for create --provider ecs-fargate" in " ".join(done.stderr.split())
    assert not (tmp_path / "unit").exists()
