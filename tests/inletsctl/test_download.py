"""`inletsctl download` against a misbehaving release server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from inletsctl import release
from inletsctl.cli import main
from inletsctl.download import (
    ChecksumMismatch,
    DownloadError,
    Request,
    Retry,
    asset_name,
    download,
    host_platform,
)
from inletsctl.errors import UsageError
from providers.models import Engine
from tests.fakes.release_server import Asset, ReleaseServer, release_server

TAG = release.tag()
PYZ = b"#!/usr/bin/env python3\n" + bytes(range(256)) * 512  # 128 KiB: several chunks
OLD = b"the previous install\n"
FAST = Retry(attempts=4, timeout=5.0, backoff=0.0)


@pytest.fixture
def server() -> Iterator[ReleaseServer]:
    with release_server() as srv:
        srv.publish(TAG, {release.PYZ_NAME: PYZ})
        yield srv


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


def _req(server: ReleaseServer, bindir: Path, **kw: object) -> Request:
    return Request(release_url=server.url, download_to=bindir, os_name="linux", **kw)  # type: ignore[arg-type]


def _leftovers(bindir: Path) -> list[str]:
    return sorted(p.name for p in bindir.iterdir() if p.name.startswith("."))


def test_installs_the_verified_file_executable(server: ReleaseServer, bindir: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    done = download(_req(server, bindir), FAST, progress=lambda n, t: seen.append((n, t)))
    target = bindir / "tunnel-core"
    assert done.path == target and done.changed
    assert target.read_bytes() == PYZ
    assert target.stat().st_mode & 0o777 == 0o755
    assert done.sha256 == hashlib.sha256(PYZ).hexdigest()
    assert done.version == TAG
    assert done.url == f"{server.url}/download/{TAG}/{release.PYZ_NAME}"
    assert seen[-1] == (len(PYZ), len(PYZ)) and len(seen) > 1
    assert _leftovers(bindir) == []


@pytest.mark.parametrize(
    "served",
    [
        pytest.param(PYZ[:1000] + bytes([PYZ[1000] ^ 0x01]) + PYZ[1001:], id="bit-flip"),
        pytest.param(PYZ[: len(PYZ) // 3], id="truncated"),
    ],
)
def test_refuses_a_file_that_is_not_the_published_one(
    server: ReleaseServer, bindir: Path, served: bytes
) -> None:
    server.publish(TAG, {release.PYZ_NAME: served}, sums={release.PYZ_NAME: PYZ})
    (bindir / "tunnel-core").write_bytes(OLD)
    with pytest.raises(ChecksumMismatch, match="nothing was installed") as err:
        download(_req(server, bindir, force=True), FAST)
    assert hashlib.sha256(PYZ).hexdigest() in err.value.message
    assert (bindir / "tunnel-core").read_bytes() == OLD
    assert _leftovers(bindir) == []


def test_a_release_install_trusts_its_pin_over_the_servers_sums(
    server: ReleaseServer, bindir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel from `make dist` pins the pyz digest; a mirror serving other bytes is refused."""
    monkeypatch.setattr(release, "pinned_sha256", lambda ver: "ab" * 32)
    with pytest.raises(ChecksumMismatch, match="was built with abab"):
        download(_req(server, bindir), FAST)
    assert server.hits(release.PYZ_NAME) == []
    assert list(bindir.iterdir()) == []
    monkeypatch.setattr(release, "pinned_sha256", lambda ver: hashlib.sha256(PYZ).hexdigest())
    assert download(_req(server, bindir), FAST).path.read_bytes() == PYZ


def test_missing_release_is_a_clear_error(server: ReleaseServer, bindir: Path) -> None:
    with pytest.raises(DownloadError, match="404") as err:
        download(_req(server, bindir, version="v9.9.9"), FAST)
    assert "--version" in err.value.hint
    assert list(bindir.iterdir()) == []


def test_retries_server_errors(server: ReleaseServer, bindir: Path) -> None:
    server.asset(TAG, release.PYZ_NAME).fail_first = 2
    done = download(_req(server, bindir), FAST)
    assert done.path.read_bytes() == PYZ
    assert len(server.hits(release.PYZ_NAME)) == 3


def test_gives_up_after_the_configured_attempts(server: ReleaseServer, bindir: Path) -> None:
    server.asset(TAG, release.PYZ_NAME).fail_first = 100
    with pytest.raises(DownloadError, match="after 4 attempts"):
        download(_req(server, bindir), FAST)
    assert len(server.hits(release.PYZ_NAME)) == 4
    assert list(bindir.iterdir()) == []


def test_backoff_grows_and_is_capped() -> None:
    pauses: list[float] = []
    retry = Retry(backoff=1.0, max_backoff=3.0, sleep=pauses.append)
    for attempt in range(1, 5):
        retry.pause(attempt)
    assert pauses == [1.0, 2.0, 3.0, 3.0]


def test_resumes_after_a_dropped_connection(server: ReleaseServer, bindir: Path) -> None:
    server.asset(TAG, release.PYZ_NAME).drop_first = 1
    done = download(_req(server, bindir), FAST)
    assert done.path.read_bytes() == PYZ
    first, second = server.hits(release.PYZ_NAME)
    assert first.range is None
    assert second.range == f"bytes={len(PYZ) // 2}-"


def test_starts_over_when_the_server_ignores_range(server: ReleaseServer, bindir: Path) -> None:
    asset = server.asset(TAG, release.PYZ_NAME)
    asset.drop_first, asset.ranges = 1, False
    assert download(_req(server, bindir), FAST).path.read_bytes() == PYZ


def test_a_stalled_response_times_out_and_is_retried(server: ReleaseServer, bindir: Path) -> None:
    server.asset(TAG, release.PYZ_NAME).stall_first = 1
    retry = Retry(attempts=3, timeout=0.5, backoff=0.0)
    assert download(_req(server, bindir), retry).path.read_bytes() == PYZ
    assert len(server.hits(release.PYZ_NAME)) == 2


def test_latest_follows_the_github_redirect(server: ReleaseServer, bindir: Path) -> None:
    newer = b"#!/usr/bin/env python3\nnewer\n"
    server.publish("v9.1.0", {release.PYZ_NAME: newer})
    server.latest = "v9.1.0"
    done = download(_req(server, bindir, version="latest"), FAST)
    assert done.version == "v9.1.0"
    assert done.path.read_bytes() == newer


def test_same_file_already_installed_is_not_downloaded(server: ReleaseServer, bindir: Path) -> None:
    (bindir / "tunnel-core").write_bytes(PYZ)
    done = download(_req(server, bindir), FAST)
    assert not done.changed
    assert server.hits(release.PYZ_NAME) == []


def test_a_different_existing_file_needs_force(server: ReleaseServer, bindir: Path) -> None:
    (bindir / "tunnel-core").write_bytes(OLD)
    with pytest.raises(DownloadError, match="exists") as err:
        download(_req(server, bindir), FAST)
    assert "--force" in err.value.hint
    assert (bindir / "tunnel-core").read_bytes() == OLD
    assert download(_req(server, bindir, force=True), FAST).path.read_bytes() == PYZ


def test_an_unwritable_target_names_the_fix(server: ReleaseServer, bindir: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/proc")  # even root cannot create a file there
    else:
        bindir.chmod(0o555)
        target = bindir
    with pytest.raises(DownloadError) as err:
        download(_req(server, target), FAST)
    assert "--download-to" in err.value.hint
    assert server.hits(release.PYZ_NAME) == []


def test_proxy_environment_is_honoured(
    server: ReleaseServer, bindir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake doubles as an HTTP proxy: a host that does not exist is reached through it."""
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{server.port}")
    req = Request(
        release_url="http://releases.invalid/releases", download_to=bindir, os_name="linux"
    )
    assert download(req, FAST).path.read_bytes() == PYZ
    (hit,) = server.hits(release.PYZ_NAME)
    assert hit.target.startswith("http://releases.invalid/")


@pytest.mark.parametrize(
    ("os_name", "arch", "name"),
    [
        ("linux", "x86_64", "inlets-pro"),
        ("linux", "aarch64", "inlets-pro-arm64"),
        ("linux", "armv7l", "inlets-pro-armhf"),
        ("darwin", "amd64", "inlets-pro-darwin"),
        ("darwin", "arm64", "inlets-pro-darwin-arm64"),
        ("windows", "amd64", "inlets-pro.exe"),
    ],
)
def test_inlets_pro_file_names_follow_its_releases(os_name: str, arch: str, name: str) -> None:
    assert asset_name(Engine.INLETS_PRO, *host_platform(os_name, arch)) == name


def test_unknown_platforms_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="darwin/armhf") as err:
        asset_name(Engine.INLETS_PRO, "darwin", "armhf")
    assert "--arch amd64 or arm64" in err.value.hint
    with pytest.raises(UsageError, match="plan9") as err:
        host_platform("plan9", "amd64")
    assert "--os" in err.value.hint


def test_inlets_pro_is_verified_with_its_per_file_checksum(bindir: Path) -> None:
    binary = b"\x7fELF fake inlets-pro arm64"
    digest = hashlib.sha256(binary).hexdigest()
    with release_server() as srv:
        srv.put("0.9.40", "inlets-pro-arm64", Asset(binary))
        srv.put(
            "0.9.40", "inlets-pro-arm64.sha256", Asset(f"{digest}  inlets-pro-arm64\n".encode())
        )
        srv.latest = "0.9.40"
        req = Request(
            engine=Engine.INLETS_PRO,
            release_url=srv.url,
            download_to=bindir,
            os_name="linux",
            arch="arm64",
        )
        done = download(req, FAST)
    assert done.path == bindir / "inlets-pro"
    assert done.version == "0.9.40"
    assert done.path.read_bytes() == binary


# --- the command ------------------------------------------------------------------


def test_command_prints_json_for_scripts(
    server: ReleaseServer, bindir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["download", "--release-url", server.url, "--download-to", str(bindir), "-o", "json"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["path"] == str(bindir / "tunnel-core")
    assert doc["version"] == TAG
    assert doc["sha256"] == hashlib.sha256(PYZ).hexdigest()
    assert "Downloading" not in err  # no progress bar in a pipe


def test_command_fails_on_a_corrupt_file_and_keeps_the_old_one(
    server: ReleaseServer, bindir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.publish(TAG, {release.PYZ_NAME: PYZ[:-1]}, sums={release.PYZ_NAME: PYZ})
    (bindir / "tunnel-core").write_bytes(OLD)
    args = ["download", "--release-url", server.url, "--download-to", str(bindir), "--force"]
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 1
    assert "sha256" in err and "nothing was installed" in err
    assert (bindir / "tunnel-core").read_bytes() == OLD


def test_command_pro_flag_is_inlets_pro(bindir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = b"fake inlets-pro for linux amd64"
    with release_server() as srv:
        srv.put("0.9.40", "inlets-pro", Asset(binary))
        srv.put("0.9.40", "inlets-pro.sha256", Asset(hashlib.sha256(binary).hexdigest().encode()))
        args = ["download", "--pro", "--version", "0.9.40", "--release-url", srv.url]
        code = main([*args, "--download-to", str(bindir), "--os", "linux", "--arch", "amd64"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Installed inlets-pro 0.9.40" in out
    assert (bindir / "inlets-pro").read_bytes() == binary


def test_a_name_that_does_not_resolve_fails_at_once_naming_dns(
    bindir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No retries, no backoff: the resolver's answer will not change in the next 8 s."""
    import socket

    asked: list[str] = []
    paused: list[float] = []

    def no_such_name(host: str, *args: object, **kwargs: object) -> object:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    retry = Retry(attempts=5, timeout=5.0, backoff=1.0, sleep=paused.append)
    req = Request(release_url="http://releases.invalid/r", download_to=bindir, os_name="linux")
    with pytest.raises(DownloadError, match="cannot resolve releases.invalid") as info:
        download(req, retry)
    assert "Name or service not known" in info.value.message and "DNS" in info.value.hint
    assert (asked, paused) == (["releases.invalid"], [])
    pro = Request(engine=Engine.INLETS_PRO, release_url="http://releases.invalid/r",
                  download_to=bindir, os_name="linux")  # fmt: skip
    with pytest.raises(DownloadError, match="cannot resolve releases.invalid"):
        download(pro, retry)  # looking up the latest release fails just as fast
    assert paused == []


def test_no_latest_release_says_what_the_server_answered(
    server: ReleaseServer, bindir: Path
) -> None:
    pro = _req(server, bindir, engine=Engine.INLETS_PRO)
    with pytest.raises(DownloadError, match="cannot find the latest release") as info:
        download(pro, FAST)
    assert "it answered 404" in info.value.message
    assert "--version" in info.value.hint
