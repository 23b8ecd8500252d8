"""The release artifact `tunnel-core.pyz`: where it is published and how its SHA-256 is known.

An exit server installs the engine from the user-data by downloading one file and
refusing it unless its SHA-256 matches the one pinned in the user-data, so the
digest must be known on the user's machine *before* any VM exists. Decision:

* The pyz is a pure function of its inputs: the ``.py`` files of ``tunnel_core``
  and ``h11`` as installed, sorted, with fixed timestamps and modes
  (:func:`build_pyz`). No clock, no user name, no file system order enters it.
* ``make dist`` (``scripts/build_dist.py``) builds that pyz first and writes its
  digest into ``inletsctl/_artifact.json`` of the wheel and sdist it builds next.
  An install from those pins exactly the file published next to them.
* A source or editable checkout has no pin: :func:`artifact` then builds the pyz
  from the installed sources into the user cache and hashes it. A local release
  server that serves that same file (:func:`local_pyz`) therefore matches, which
  is how tests and the qemu provider boot a VM from an unreleased tree.

URLs follow GitHub's release layout, so the default needs no server of ours and a
mirror only has to copy files: ``<base>/download/<tag>/<file>`` for an asset, and
``<base>/latest`` redirecting to ``<base>/tag/<tag>`` for the newest release. The
base comes from ``--release-url``, else ``INLETSCTL_RELEASE_URL``, else
:data:`DEFAULT_RELEASE_URL`; tests, mirrors and air-gapped users serve their own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import platformdirs

from inletsctl.errors import InletsctlError

#: The project's GitHub releases; the one place the public release location is named.
DEFAULT_RELEASE_URL = "https://github.com/inletsctl/inletsctl-py/releases"
#: Environment variable that overrides :data:`DEFAULT_RELEASE_URL`.
RELEASE_URL_ENV = "INLETSCTL_RELEASE_URL"
PYZ_NAME = "tunnel-core.pyz"
SUMS_NAME = "SHA256SUMS"
#: Written by ``make dist`` into the wheel and sdist; absent in a source checkout.
PIN_FILE = "_artifact.json"
#: ``--release-url s3://BUCKET/KEY``: the object is the pyz (see :func:`is_object_url`).
S3_SCHEME = "s3://"

#: Packages inside the pyz: the engine and its pure-Python runtime dependencies. Not
#: websockets: the engine only uses its C ``apply_mask``, which a zipapp cannot carry.
RUNTIME_PACKAGES = ("tunnel_core", "h11")
SHEBANG = b"#!/usr/bin/env python3\n"
#: Every zip entry gets this timestamp (the earliest a zip can hold), so the
#: artifact is the same whenever and wherever it is built from the same sources.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_INCLUDED_SUFFIXES = (".py",)
_INCLUDED_NAMES = ("py.typed",)
_MIN_PYTHON = re.compile(r">=\s*(\d+)\.(\d+)")


class ReleaseError(InletsctlError):
    """The artifact cannot be built or described from this installation."""


@dataclass(frozen=True)
class Artifact:
    """The exact pyz a VM installs: where to fetch it and the digest it must have."""

    url: str
    sha256: str
    version: str
    name: str = PYZ_NAME
    #: built here from a source checkout, not pinned by ``make dist``: the release at
    #: ``url`` (if there is one) holds another file, which the VM would refuse
    local_build: bool = False


def version() -> str:
    """This installation's version, which is the release the VM must run."""
    try:
        return importlib.metadata.version("inletsctl")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ReleaseError(
            "inletsctl is not installed, so its release version is unknown",
            hint="Install it (make install, or pip install -e .) instead of running from a copy.",
        ) from exc


def tag(ver: str | None = None) -> str:
    """The release tag of a version (``v0.1.0``); a leading ``v`` is accepted."""
    ver = version() if ver is None else ver
    return ver if ver.startswith("v") else f"v{ver}"


def is_default_base(release_url: str | None = None) -> bool:
    """Nobody chose where releases come from (no flag, no environment variable)."""
    return not (release_url or os.environ.get(RELEASE_URL_ENV))


def release_base(release_url: str | None = None) -> str:
    """Flag beats environment beats the default; a trailing slash is dropped."""
    base = release_url or os.environ.get(RELEASE_URL_ENV) or DEFAULT_RELEASE_URL
    return base.rstrip("/")


def asset_url(name: str, ver: str | None = None, release_url: str | None = None) -> str:
    return f"{release_base(release_url)}/download/{tag(ver)}/{name}"


def is_object_url(release_url: str | None) -> bool:
    """``s3://BUCKET/KEY`` names the pyz itself, not a base of GitHub-style releases:
    an object in the user's own bucket, which only ``ecs-fargate``'s task role reads."""
    return bool(release_url and release_url.startswith(S3_SCHEME))


def artifact(release_url: str | None = None) -> Artifact:
    """The pyz of this version: the pinned digest of a release install, else a local build.

    Its URL is ``release_url`` itself when that is an object URL (:func:`is_object_url`);
    the digest is the same either way: an object there must be this version's pyz.
    """
    ver = version()
    pinned = pinned_sha256(ver)
    digest = pinned if pinned else sha256_file(local_pyz())
    if is_object_url(release_url):
        assert release_url is not None
        return Artifact(url=release_url, sha256=digest, version=ver, local_build=not pinned)
    url = asset_url(PYZ_NAME, ver, release_url)
    return Artifact(url=url, sha256=digest, version=ver, local_build=not pinned)


def local_pyz(cache_dir: Path | None = None) -> Path:
    """Build the pyz from the installed sources into the cache (content-addressed) and return it.

    The file name is stable (``tunnel-core.pyz``) so a directory of it can be served
    as-is; its parent is named by the digest, so concurrent builds never clash.
    """
    data = build_pyz()
    digest = hashlib.sha256(data).hexdigest()
    root = cache_dir or Path(platformdirs.user_cache_dir("inletsctl")) / "pyz"
    path = root / digest[:16] / PYZ_NAME
    if path.is_file() and sha256_file(path) == digest:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=0o755)
    return path


def build_pyz(packages: tuple[str, ...] = RUNTIME_PACKAGES) -> bytes:
    """The zipapp as bytes: shebang, sorted entries, fixed dates and modes, deflate level 9."""
    entries: dict[str, bytes] = {}
    for name in packages:
        for arcname, path in _package_files(name):
            entries[arcname] = path.read_bytes()
    entries.update(_license_entries(packages))
    entries["__main__.py"] = _main_py(_min_python(packages)).encode()
    entries.update(_engine_metadata(version()))
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w") as zf:
        for arcname in sorted(entries):
            add_zip_entry(zf, arcname, entries[arcname])
    return buf.getvalue()


def add_zip_entry(
    zf: zipfile.ZipFile,
    arcname: str,
    data: bytes,
    mode: int = 0o644,
    date: tuple[int, int, int, int, int, int] = ZIP_DATE,
) -> None:
    """One reproducible member: fixed date, Unix mode, no extra fields."""
    info = zipfile.ZipInfo(arcname, date_time=date)
    info.create_system = 3
    info.external_attr = (0o100000 | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data, compresslevel=9)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Temp file in the same directory, fsync, chmod, rename: readers see all or nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pin_document(sha256: str, ver: str) -> str:
    """The content of :data:`PIN_FILE` that ``make dist`` ships inside the wheel."""
    return json.dumps({"name": PYZ_NAME, "sha256": sha256, "version": ver}, sort_keys=True) + "\n"


def pinned_sha256(ver: str) -> str:
    """The digest ``make dist`` pinned, if this install came from its wheel or sdist."""
    pin = resources.files("inletsctl") / PIN_FILE
    if not pin.is_file():
        return ""
    doc = json.loads(pin.read_text(encoding="utf-8"))
    if not isinstance(doc, Mapping) or doc.get("version") != ver:
        return ""
    return str(doc.get("sha256", ""))


def _package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ReleaseError(
            f"cannot build {PYZ_NAME}: package {name!r} is not installed",
            hint="Install inletsctl with its dependencies (make install).",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _package_files(name: str) -> Iterator[tuple[str, Path]]:
    """Source files only: no bytecode, no C extensions."""
    root = _package_root(name)
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or not path.is_file():
            continue
        if path.suffix in _INCLUDED_SUFFIXES or path.name in _INCLUDED_NAMES:
            yield f"{name}/{rel.as_posix()}", path


def _distributions(packages: tuple[str, ...]) -> Iterator[importlib.metadata.Distribution]:
    """The installed distributions of the bundled third-party packages (not our engine)."""
    owners = importlib.metadata.packages_distributions()
    for name in packages:
        for dist_name in sorted(set(owners.get(name, ()))):
            if dist_name != "inletsctl":
                yield importlib.metadata.distribution(dist_name)


def _license_entries(packages: tuple[str, ...]) -> dict[str, bytes]:
    """Bundled dependencies travel with their licence texts."""
    out: dict[str, bytes] = {}
    for dist in _distributions(packages):
        for file in dist.files or ():
            if "licen" in file.name.lower() or file.name.lower().startswith("copying"):
                arcname = f"licenses/{dist.metadata['Name']}/{file.name}"
                out[arcname] = Path(file.locate()).read_bytes()
    return out


def _min_python(packages: tuple[str, ...]) -> tuple[int, int]:
    """The newest ``Requires-Python`` floor of the bundled dependencies, at least 3.10."""
    floor = (3, 10)
    for dist in _distributions(packages):
        for spec in dist.metadata.get_all("Requires-Python") or ():
            if match := _MIN_PYTHON.search(spec):
                floor = max(floor, (int(match.group(1)), int(match.group(2))))
    return floor


def _engine_metadata(ver: str) -> dict[str, bytes]:
    """A dist-info of the engine inside the pyz, so ``tunnel-core --version`` on a VM reads
    the release it came from the standard way (importlib.metadata searches zip files)."""
    metadata = f"Metadata-Version: 2.1\nName: tunnel-core\nVersion: {ver}\n"
    return {f"tunnel_core-{ver}.dist-info/METADATA": metadata.encode()}


def _main_py(min_python: tuple[int, int]) -> str:
    """Entry point of the zipapp; refuses an old python3 with a message instead of a traceback."""
    major, minor = min_python
    return (
        "import sys\n\n"
        f"if sys.version_info < ({major}, {minor}):\n"
        f'    sys.exit("tunnel-core needs Python {major}.{minor} or newer, this is "'
        " + sys.version.split()[0])\n\n"
        "from tunnel_core.cli import main\n\n"
        "sys.exit(main())\n"
    )
