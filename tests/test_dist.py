"""The release build: reproducible, self-consistent, and a pyz that runs with nothing installed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from inletsctl import release

ROOT = Path(__file__).resolve().parent.parent
EPOCH = "1700000000"


def _build(out: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_dist.py"), "--out", str(out)],
        check=True,
        env=env,
        capture_output=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _build(out)
    return out


def _sums(dist: Path) -> dict[str, str]:
    return {
        name: digest
        for digest, name in (
            line.split("  ", 1) for line in (dist / release.SUMS_NAME).read_text().splitlines()
        )
    }


def _wheel(dist: Path) -> Path:
    return next(dist.glob("inletsctl-*.whl"))


def test_dist_has_every_asset_and_sums_match(dist: Path) -> None:
    sums = _sums(dist)
    assert release.PYZ_NAME in sums
    assert any(n.endswith(".whl") for n in sums) and any(n.endswith(".tar.gz") for n in sums)
    for name, digest in sums.items():
        assert hashlib.sha256((dist / name).read_bytes()).hexdigest() == digest, name


def test_two_builds_are_byte_identical(dist: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    _build(again)
    first = sorted(p.name for p in dist.iterdir())
    assert first == sorted(p.name for p in again.iterdir())
    for name in first:
        assert (dist / name).read_bytes() == (again / name).read_bytes(), name


def test_pyz_is_pure_python_with_fixed_metadata(dist: Path) -> None:
    data = (dist / release.PYZ_NAME).read_bytes()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert os.access(dist / release.PYZ_NAME, os.X_OK)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names)
    assert "__main__.py" in names
    for pkg in release.RUNTIME_PACKAGES:
        assert f"{pkg}/__init__.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyc", ".c"))]
    assert {i.date_time for i in infos} == {release.ZIP_DATE}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    assert any(n.startswith("licenses/h11/") for n in names)
    assert not [n for n in names if n.startswith(("websockets/", "licenses/websockets/"))]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        main_py = zf.read("__main__.py").decode()
    # The VM's python3 may be 3.10 (Ubuntu 22.04): every bundled dependency must allow it.
    assert "if sys.version_info < (3, 10):" in main_py


def test_wheel_and_sdist_pin_the_built_pyz(dist: Path) -> None:
    pyz_sha = _sums(dist)[release.PYZ_NAME]
    with zipfile.ZipFile(_wheel(dist)) as zf:
        pin = json.loads(zf.read(f"inletsctl/{release.PIN_FILE}"))
        assert zf.namelist()[-1].endswith(".dist-info/RECORD")
    assert pin == {"name": release.PYZ_NAME, "sha256": pyz_sha, "version": release.version()}
    sdist = next(dist.glob("inletsctl-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        pinned = [m for m in members if m.name.endswith(f"inletsctl/{release.PIN_FILE}")]
        assert len(pinned) == 1
        assert json.loads(tar.extractfile(pinned[0]).read()) == pin  # type: ignore[union-attr]
    assert {m.mtime for m in members} == {int(EPOCH)}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}


def test_installed_wheel_reports_its_pinned_artifact(dist: Path, tmp_path: Path) -> None:
    """A release install pins the published pyz without building anything."""
    site = tmp_path / "site"
    with zipfile.ZipFile(_wheel(dist)) as zf:
        zf.extractall(site)
    code = (
        "import json; from inletsctl import release; a = release.artifact('http://mirror.test/r');"
        "print(json.dumps([a.url, a.sha256, release.__file__]))"
    )
    # -S keeps the editable install's import hook out; its dependencies come from PYTHONPATH.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), deps])}
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    url, sha, module = json.loads(out.stdout)
    assert module.startswith(str(site))
    assert url == f"http://mirror.test/r/download/v{release.version()}/{release.PYZ_NAME}"
    assert sha == _sums(dist)[release.PYZ_NAME]


def test_source_checkout_builds_the_same_pyz_as_make_dist(dist: Path, tmp_path: Path) -> None:
    """What a local release server serves (local_pyz) is what the build publishes."""
    path = release.local_pyz(cache_dir=tmp_path)
    assert path.name == release.PYZ_NAME
    assert release.sha256_file(path) == _sums(dist)[release.PYZ_NAME]
    assert release.local_pyz(cache_dir=tmp_path) == path


def test_cloud_init_carries_the_url_and_hash_of_the_build(
    dist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloud_init._render import render
    from tests.certs import server_spec

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # where the source checkout's pyz goes
    monkeypatch.setenv(release.RELEASE_URL_ENV, "http://127.0.0.1:9/releases/")
    art = release.artifact()
    assert (tmp_path / "inletsctl" / "pyz" / art.sha256[:16] / release.PYZ_NAME).is_file()
    spec = replace(server_spec(), release_url=art.url, artifact_sha256=art.sha256)
    doc = yaml.safe_load(render(spec))
    fetch = next(cmd for cmd in doc["runcmd"] if isinstance(cmd, list) and "fetch" in cmd)
    want_url = f"http://127.0.0.1:9/releases/download/v{release.version()}/{release.PYZ_NAME}"
    assert want_url in fetch
    assert _sums(dist)[release.PYZ_NAME] in fetch


def test_download_installs_the_built_pyz_and_it_runs(dist: Path, tmp_path: Path) -> None:
    """The round trip users take: published assets -> inletsctl download -> a working engine."""
    from inletsctl.download import Request, Retry, download
    from tests.fakes.release_server import Asset, release_server

    with release_server() as srv:
        srv.publish(release.tag(), {release.PYZ_NAME: (dist / release.PYZ_NAME).read_bytes()})
        srv.put(release.tag(), release.SUMS_NAME, Asset((dist / release.SUMS_NAME).read_bytes()))
        req = Request(release_url=srv.url, download_to=tmp_path, os_name="linux")
        done = download(req, Retry(attempts=2, backoff=0.0))
    assert done.sha256 == _sums(dist)[release.PYZ_NAME]
    out = subprocess.run(
        [str(done.path), "--help"], capture_output=True, text=True, timeout=60
    )  # run through its shebang, as a user would
    assert out.returncode == 0, out.stderr
    assert "tcp" in out.stdout


def test_release_workflow_is_a_valid_github_workflow() -> None:
    workflow = ROOT / ".github" / "workflows" / "release.yml"
    exe = Path(sys.executable).with_name("check-jsonschema")
    out = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    doc = yaml.safe_load(workflow.read_text())
    assert doc[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True


# --- the pyz runs a real tunnel with nothing but the interpreter --------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _isolated(pyz: Path, *args: str, python: str = sys.executable) -> list[str]:
    """-I -S: no site-packages, no user site, no PYTHON* variables; only the zipapp."""
    return [python, "-I", "-S", str(pyz), *args]


def _python310() -> str | None:
    """A CPython 3.10, the oldest a VM may have (Ubuntu 22.04): pyenv's, or one on PATH
    (a pyenv shim on PATH may not run it, so each candidate is asked its version)."""
    candidates = [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.10.*/bin/python3.10"))]
    candidates += filter(None, [shutil.which("python3.10")])
    for candidate in candidates:
        version = subprocess.run(
            [candidate, "-I", "-S", "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if version.stdout.strip() == "(3, 10)":
            return candidate
    return None


@pytest.fixture(params=["this python", "python3.10"])
def python(request: pytest.FixtureRequest) -> str:
    if request.param == "this python":
        return sys.executable
    found = _python310()
    if found is None:
        pytest.skip("no python3.10 on this machine (e.g. pyenv install 3.10)")
    return found


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP upstream that answers each connection with what it read, upper-cased."""
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(30)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = conn.recv(65536)
                conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        srv.shutdown(socket.SHUT_RDWR)  # wakes the accept(); close() alone would not
        srv.close()
        thread.join(timeout=10)


def _wait_for(predicate: Callable[[], bool], what: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _health(control: int, fingerprint: str) -> dict[str, object] | None:
    """GET /healthz over TLS, checking the server's certificate is the pinned one."""
    import http.client
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # verified below by fingerprint, as the client does
    conn = http.client.HTTPSConnection("127.0.0.1", control, timeout=2, context=ctx)
    try:
        conn.connect()
        cert = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert "sha256:" + hashlib.sha256(cert).hexdigest() == fingerprint
        return json.loads(resp.read())  # type: ignore[no-any-return]
    except OSError:
        return None
    finally:
        conn.close()


def test_pyz_runs_a_tcp_tunnel_isolated(
    dist: Path, tmp_path: Path, echo_server: int, python: str
) -> None:
    pytest.importorskip("tunnel_core.cli", reason="the engine's CLI is not in the tree yet")
    from tests.certs import self_signed

    pyz = dist / release.PYZ_NAME
    cert, key, fingerprint = self_signed()
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)
    (tmp_path / "key.pem").chmod(0o600)
    (tmp_path / "token").write_text("s3cret-token-for-the-pyz-test\n")
    control, public = _free_port(), _free_port()
    token = ["--token-file", str(tmp_path / "token")]
    server_cmd = _isolated(
        pyz, "tcp", "server", "--bind", "127.0.0.1", "--control-port", str(control),
        *token, "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
        "--allow-ports", f"{public}-{public}", python=python,
    )  # fmt: skip
    client_cmd = _isolated(
        pyz, "tcp", "client", "--url", f"wss://127.0.0.1:{control}", *token,
        "--tls-fingerprint", fingerprint, "--upstream", "127.0.0.1",
        "--ports", f"{public}:{echo_server}", python=python,
    )  # fmt: skip
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp_path / "tunnel.log").open("wb")
    try:
        procs.append(subprocess.Popen(server_cmd, stdout=log, stderr=log))
        _wait_for(lambda: _health(control, fingerprint) is not None, "server health")
        procs.append(subprocess.Popen(client_cmd, stdout=log, stderr=log))
        _wait_for(
            lambda: (_health(control, fingerprint) or {}).get("clients") == 1, "client connected"
        )

        def through_tunnel() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", public), timeout=5) as conn:
                    conn.sendall(b"hello through the pyz")
                    return conn.recv(1024) == b"HELLO THROUGH THE PYZ"
            except OSError:
                return False

        _wait_for(through_tunnel, "traffic through the tunnel")
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log.close()
    assert [p.returncode for p in procs] == [0, 0], (tmp_path / "tunnel.log").read_text()


def test_the_engine_in_the_pyz_says_its_release(tmp_path: Path) -> None:
    """On a VM nothing but the pyz is installed: its own metadata answers --version."""
    pyz = release.local_pyz(tmp_path)
    with zipfile.ZipFile(pyz) as zf:
        assert f"tunnel_core-{release.version()}.dist-info/METADATA" in zf.namelist()
    res = subprocess.run(  # -S: no site-packages, so no installed inletsctl to ask
        [sys.executable, "-I", "-S", str(pyz), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"tunnel-core {release.version()}\n"
