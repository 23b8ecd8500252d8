"""Fetch a tunnel engine release onto this machine, verified, and install it atomically.

What makes it trustworthy: the checksum published with the release is fetched
first and the file is compared against it *before* it takes the place of anything;
the download goes to a temporary file in the target directory (so the final rename
is atomic and never crosses file systems), which is fsynced and made 0755 first.
Any failure removes the temporary file and leaves an existing install as it was.

What makes it robust: every request has a timeout; 5xx answers, resets, timeouts and
short bodies are retried with capped exponential backoff, resuming with ``Range``
where the server honours it. urllib's default opener honours ``http_proxy``,
``https_proxy`` and ``no_proxy``.

Errors::

    inletsctl.errors.InletsctlError
    └── DownloadError           a release, checksum or target problem (exit 1)
        └── ChecksumMismatch    the file is not the one the release published
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import platform
import re
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from inletsctl import release
from inletsctl.errors import InletsctlError, UsageError
from providers.cloudapi import network_cause
from providers.models import Engine

#: Upstream inlets-pro releases (GitHub layout, as for our own engine).
INLETS_PRO_RELEASES = "https://github.com/inlets/inlets-pro/releases"
LATEST = "latest"
CHUNK = 1 << 16

Progress = Callable[[int, "int | None"], None]
"""Called with (bytes so far, total or None) as the download advances."""


class DownloadError(InletsctlError):
    pass


class ChecksumMismatch(DownloadError):
    pass


#: ``platform.machine()`` spellings mapped to the Go names releases use.
_ARCHES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv6l": "armhf",
    "armv7l": "armhf",
    "arm": "armhf",
    "armhf": "armhf",
}
_OSES = ("linux", "darwin", "windows")
_PRO_ARCHES = {"linux": ("amd64", "arm64", "armhf"), "darwin": ("amd64", "arm64")}


@dataclass(frozen=True)
class Retry:
    """How hard to try; the defaults suit a person's network, tests pass zero backoff."""

    attempts: int = 5
    timeout: float = 30.0  # seconds, per connect and per read
    backoff: float = 0.5  # first pause; doubled each attempt
    max_backoff: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def pause(self, attempt: int) -> None:
        self.sleep(min(self.max_backoff, self.backoff * (2 ** (attempt - 1))))


@dataclass(frozen=True)
class Request:
    engine: Engine = Engine.TUNNEL_CORE
    version: str = ""  # "" = this inletsctl's release for our engine, latest for inlets-pro
    download_to: Path | None = None
    os_name: str = ""  # "" = this machine's
    arch: str = ""
    force: bool = False
    release_url: str | None = None


@dataclass(frozen=True)
class Installed:
    path: Path
    version: str
    sha256: str
    url: str
    engine: str
    changed: bool  # False when the same file was already installed
    on_path: bool


def download(req: Request, retry: Retry = Retry(), progress: Progress | None = None) -> Installed:
    """Resolve, fetch the checksum, fetch the file, verify, install; see the module docstring."""
    os_name, arch = host_platform(req.os_name, req.arch)
    target_dir = target_directory(req.download_to)  # fail before any network traffic
    base = _base(req)
    tag = _resolve_version(req, base, retry)
    name = asset_name(req.engine, os_name, arch)
    url = f"{base}/download/{tag}/{name}"
    want = _published_sha256(req.engine, base, tag, name, retry)
    _check_pin(req.engine, tag, want)
    target = target_dir / install_name(req.engine, os_name)
    if target.exists():
        if release.sha256_file(target) == want:
            return _installed(target, tag, want, url, req.engine, changed=False)
        if not req.force:
            raise DownloadError(
                f"{target} exists and is a different file",
                hint="Pass --force to replace it, or --download-to another directory.",
            )
    with _temp_file(target) as (tmp, fh):
        fetch(url, fh, retry, progress)
        fh.flush()
        os.fsync(fh.fileno())
        got = release.sha256_file(tmp)
        if got != want:
            raise ChecksumMismatch(
                f"{name} {tag} from {url} has sha256 {got}, the release published {want}; "
                f"nothing was installed",
                hint="The download was corrupted or truncated, or the mirror is wrong; "
                "try again or check --release-url.",
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    _fsync_dir(target_dir)
    return _installed(target, tag, want, url, req.engine, changed=True)


def host_platform(os_name: str = "", arch: str = "") -> tuple[str, str]:
    """(os, arch) in Go's spelling, from the flags or this machine."""
    os_name = (os_name or platform.system()).lower()
    machine = (arch or platform.machine()).lower()
    if os_name not in _OSES:
        raise UsageError(f"unsupported OS {os_name!r}", hint=f"Pass --os {' or '.join(_OSES)}.")
    if machine not in _ARCHES:
        raise UsageError(
            f"unsupported architecture {machine!r}", hint="Pass --arch amd64, arm64 or armhf."
        )
    return os_name, _ARCHES[machine]


def asset_name(engine: Engine, os_name: str, arch: str) -> str:
    """The release file for a platform; inlets-pro's names follow its own release layout."""
    if engine is Engine.TUNNEL_CORE:
        return release.PYZ_NAME  # one file for every platform: it runs on python3
    if os_name == "windows":
        return "inlets-pro.exe"
    if arch not in _PRO_ARCHES[os_name]:
        raise UsageError(
            f"inlets-pro publishes no {os_name}/{arch} build",
            hint=f"Pass --arch {' or '.join(_PRO_ARCHES[os_name])}.",
        )
    if os_name == "darwin":
        return "inlets-pro-darwin" if arch == "amd64" else "inlets-pro-darwin-arm64"
    return "inlets-pro" if arch == "amd64" else f"inlets-pro-{arch}"


def install_name(engine: Engine, os_name: str) -> str:
    """What the user types: ``tunnel-core`` (the pyz has a shebang), ``inlets-pro``."""
    if os_name == "windows":
        return "tunnel-core.pyz" if engine is Engine.TUNNEL_CORE else "inlets-pro.exe"
    return engine.value


def target_directory(download_to: Path | None) -> Path:
    """--download-to, else /usr/local/bin when writable, else ~/.local/bin (created)."""
    if download_to is not None:
        path = download_to.expanduser()
        if not path.is_dir():
            raise DownloadError(
                f"{path} is not a directory", hint="Create it, or pass another --download-to."
            )
        if not os.access(path, os.W_OK | os.X_OK):
            raise DownloadError(
                f"cannot write to {path}",
                hint="Pass --download-to a directory you can write, e.g. ~/.local/bin, "
                "or run with sudo.",
            )
        return path
    system = Path("/usr/local/bin")
    if system.is_dir() and os.access(system, os.W_OK | os.X_OK):
        return system
    user = Path.home() / ".local" / "bin"
    try:
        user.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create {user}: {exc.strerror}",
            hint="Pass --download-to a directory you can write.",
        ) from exc
    return user


def fetch(url: str, out: BinaryIO, retry: Retry, progress: Progress | None = None) -> None:
    """GET ``url`` into ``out`` (positioned at 0), retrying and resuming; see module docstring."""
    done = 0
    last: Exception | None = None
    for attempt in range(1, retry.attempts + 1):
        if attempt > 1:
            retry.pause(attempt - 1)
        headers = {"Range": f"bytes={done}-"} if done else {}
        try:
            with _open(url, retry.timeout, headers) as resp:
                if done and resp.status != 206:
                    out.seek(0)  # the server ignored Range: start over
                    out.truncate()
                    done = 0
                total = _total_length(resp, done)
                for chunk in iter(lambda: resp.read(CHUNK), b""):  # noqa: B023
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
                if total is not None and done < total:
                    raise http.client.IncompleteRead(b"", total - done)
                return
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection
            if exc.code == 416 and done:  # nothing left to send: we already have it all
                return
            if exc.code < 500 and exc.code != 429:
                raise DownloadError(
                    f"{url} answered {exc.code} {exc.reason}", hint=_hint_for(exc.code)
                ) from exc
            last = exc
        except (OSError, http.client.HTTPException) as exc:  # resets, timeouts, short bodies
            _fail_if_unresolvable(url, exc)
            last = exc
    cause = network_cause(last) if last else ""
    raise DownloadError(
        f"gave up on {url} after {retry.attempts} attempts: {cause or last}",
        hint="Check the network or proxy (https_proxy), then run the command again.",
    )


def _fail_if_unresolvable(url: str, exc: BaseException) -> None:
    """A name that does not resolve will not resolve a second later: say so at once."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, socket.gaierror):
        raise DownloadError(
            f"cannot resolve {urlsplit(url).hostname}: {reason.strerror or reason}",
            hint="Check the network and DNS (or https_proxy), and --release-url.",
        ) from exc


def fetch_text(url: str, retry: Retry) -> str:
    """A small document (a checksum file) with the same retries, kept in memory."""
    buf = io.BytesIO()
    fetch(url, buf, retry)
    return buf.getvalue()[: 1 << 20].decode("utf-8", errors="replace")


def latest_tag(base: str, retry: Retry) -> str:
    """The newest release, read from where ``<base>/latest`` redirects (as GitHub does)."""
    url = f"{base}/latest"
    opener = urllib.request.build_opener(_NoRedirect)
    why = ""
    for attempt in range(1, retry.attempts + 1):
        if attempt > 1:
            retry.pause(attempt - 1)
        try:
            with opener.open(urllib.request.Request(url, method="HEAD"), timeout=retry.timeout):
                why = "it answered without redirecting to a release tag"
                break
        except urllib.error.HTTPError as exc:
            exc.close()
            location = exc.headers.get("Location", "") if exc.code in (301, 302, 303, 307) else ""
            if location:
                found = location.rstrip("/").rsplit("/", 1)[-1]
                if re.fullmatch(r"v?\d+(\.\d+)*([-+.][0-9A-Za-z.-]+)?", found):
                    return found
                why = f"it redirected to {location}, which names no release tag"
            else:
                why = f"it answered {exc.code} {exc.reason}"
            if exc.code < 500:
                break
        except OSError as exc:
            _fail_if_unresolvable(url, exc)
            why = network_cause(exc) or str(exc)
    raise DownloadError(
        f"cannot find the latest release at {url}: {why}",
        hint="Pass --version vX.Y.Z, or check --release-url.",
    )


def parse_sums(text: str, name: str) -> str:
    """The digest for ``name`` in ``sha256sum`` output (one or many lines, ``*`` binary mark)."""
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and parts[1].lstrip("*") == name and _is_sha256(parts[0]):
            return parts[0].lower()
        if len(parts) == 1 and _is_sha256(parts[0]):  # a bare digest in a per-file .sha256
            return parts[0].lower()
    raise DownloadError(
        f"the release's checksum file has no entry for {name}",
        hint="The release looks incomplete; pass another --version or --release-url.",
    )


def _base(req: Request) -> str:
    if req.engine is Engine.TUNNEL_CORE:
        return release.release_base(req.release_url)
    return (req.release_url or INLETS_PRO_RELEASES).rstrip("/")


def _resolve_version(req: Request, base: str, retry: Retry) -> str:
    wanted = req.version or (LATEST if req.engine is Engine.INLETS_PRO else release.version())
    if wanted == LATEST:
        return latest_tag(base, retry)
    if req.engine is Engine.TUNNEL_CORE:
        return release.tag(wanted)
    return wanted  # inlets-pro tags have no "v"


def _published_sha256(engine: Engine, base: str, tag: str, name: str, retry: Retry) -> str:
    """Our releases publish SHA256SUMS; inlets-pro publishes ``<file>.sha256`` per asset."""
    sums = release.SUMS_NAME if engine is Engine.TUNNEL_CORE else f"{name}.sha256"
    return parse_sums(fetch_text(f"{base}/download/{tag}/{sums}", retry), name)


def _check_pin(engine: Engine, tag: str, published: str) -> None:
    """A release install knows its pyz's digest already: a mirror cannot swap file and sums."""
    ver = release.version()
    pinned = release.pinned_sha256(ver) if engine is Engine.TUNNEL_CORE else ""
    if pinned and tag == release.tag(ver) and pinned != published:
        raise ChecksumMismatch(
            f"the release's {release.SUMS_NAME} lists {published} for {release.PYZ_NAME} {tag}, "
            f"but this inletsctl was built with {pinned}; nothing was installed",
            hint="The release server is not serving the published release; check --release-url.",
        )


def _total_length(resp: http.client.HTTPResponse, done: int) -> int | None:
    length = resp.headers.get("Content-Length")
    return done + int(length) if length and length.isdigit() else None


def _open(url: str, timeout: float, headers: dict[str, str]) -> http.client.HTTPResponse:
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"not an http(s) URL: {url}", hint="Check --release-url.")
    # A fresh opener reads the *_proxy variables now; urlopen's global one froze them
    # at its first use in this process.
    opener = urllib.request.build_opener()
    resp = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    return resp  # type: ignore[no-any-return]


def _hint_for(code: int) -> str:
    if code == 404:
        return "No such release or file: check --version (e.g. v0.1.0 or latest) and --release-url."
    if code in (401, 403):
        return "The server refused access; check --release-url or your proxy."
    return "Check --version and --release-url."


def _is_sha256(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


@contextlib.contextmanager
def _temp_file(target: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """A hidden temp file beside ``target``; removed unless it was renamed into place."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise DownloadError(
            f"cannot write to {target.parent}: {exc.strerror}",
            hint="Pass --download-to a directory you can write, e.g. ~/.local/bin.",
        ) from exc
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield tmp, fh
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _installed(
    path: Path, tag: str, sha: str, url: str, engine: Engine, changed: bool
) -> Installed:
    dirs = [Path(p).resolve() for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    on_path = path.parent.resolve() in dirs or shutil.which(path.name) == str(path)
    return Installed(path, tag, sha, url, engine.value, changed, on_path)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Surface the redirect itself: the tag is in its Location."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: object,
        code: int,
        msg: str,
        headers: object,
        newurl: str,
    ) -> None:
        return None
