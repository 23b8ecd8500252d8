"""Build the release: wheel, sdist, tunnel-core.pyz and SHA256SUMS, byte-identical per commit.

Why each step looks the way it does:

* The pyz comes from :func:`inletsctl.release.build_pyz`, the same function a source
  checkout uses to pin its digest, so a file built here and one built by
  ``inletsctl create`` from the same sources are the same bytes.
* The wheel and sdist are built from a staging copy of the work tree (tracked and
  untracked-but-not-ignored files), so caches and build debris never leak into them
  and ``inletsctl/_artifact.json`` (the pyz digest) is added without touching the tree.
* setuptools runs in-process in a child interpreter, offline, then both archives are
  rewritten with sorted members, ``SOURCE_DATE_EPOCH`` timestamps, fixed modes and
  owners, and a gzip header without a name or time: that is what makes two builds
  byte-identical.

Usage: ``python scripts/build_dist.py [--out dist]`` (``make dist``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inletsctl import release  # noqa: E402

#: What the wheel and sdist are made of; everything else in the tree stays out.
SOURCES = ("pyproject.toml", "README.md", "inletsctl", "providers", "cloud_init", "tunnel_core")
#: Used when neither SOURCE_DATE_EPOCH nor git history is available (1980-01-01).
FALLBACK_EPOCH = 315532800


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH if set, else the last commit's time, so a commit always builds the same."""
    if env := os.environ.get("SOURCE_DATE_EPOCH"):
        return int(env)
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return FALLBACK_EPOCH
    return int(out) if out else FALLBACK_EPOCH


def source_files() -> list[str]:
    """Tracked plus untracked-but-not-ignored files under SOURCES, as relative paths."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "--", *SOURCES],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        names = out.splitlines()
    except (OSError, subprocess.SubprocessError):
        names = [p.relative_to(ROOT).as_posix() for top in SOURCES for p in _walk(ROOT / top)]
    return sorted(n for n in names if (ROOT / n).is_file())


def _walk(path: Path) -> list[Path]:
    """Without git: every file under ``path`` except bytecode caches."""
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def stage(dest: Path, pyz_sha256: str) -> None:
    for name in source_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, target)
    pin = release.pin_document(pyz_sha256, release.version())
    (dest / "inletsctl" / release.PIN_FILE).write_text(pin, encoding="utf-8")


def run_setuptools(staging: Path, out: Path, epoch: int) -> None:
    """One child interpreter per hook: setuptools keeps global state between them."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONDONTWRITEBYTECODE": "1"}
    for hook in ("build_sdist", "build_wheel"):
        code = f"import sys; from setuptools import build_meta; build_meta.{hook}(sys.argv[1])"
        proc = subprocess.run(
            [sys.executable, "-c", code, str(out)],
            cwd=staging,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            raise SystemExit(f"setuptools {hook} failed (exit {proc.returncode})")


def zip_date(epoch: int) -> tuple[int, int, int, int, int, int]:
    year, month, day, hour, minute, second = time.gmtime(max(epoch, FALLBACK_EPOCH))[:6]
    return (year, month, day, hour, minute, second)


def normalize_wheel(path: Path, epoch: int) -> None:
    """Sorted members with the dist-info last and RECORD at the very end, as installers expect."""
    with zipfile.ZipFile(path) as src:
        members = {info.filename: src.read(info) for info in src.infolist()}

    def order(name: str) -> tuple[bool, bool, str]:
        top = name.split("/", 1)[0]
        return (top.endswith(".dist-info"), name.endswith(".dist-info/RECORD"), name)

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for name in sorted(members, key=order):
            release.add_zip_entry(dst, name, members[name], date=zip_date(epoch))
    path.write_bytes(buf.getvalue())


def normalize_sdist(path: Path, epoch: int) -> None:
    """Sorted members, fixed mtime/owner/mode, and a gzip header with no name and no time."""
    with tarfile.open(path, "r:gz") as src:
        members = [(m, _member_bytes(src, m)) for m in src.getmembers()]
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for member, data in sorted(members, key=lambda pair: pair[0].name):
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if member.isdir() else 0o644
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if member.isfile() else None)
    gz_buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buf, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buf.getvalue())
    path.write_bytes(gz_buf.getvalue())


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member) if member.isfile() else None
    return fh.read() if fh else b""


def write_sums(out: Path, names: list[str]) -> str:
    """``sha256sum -c`` format, sorted by name."""
    lines = []
    for name in sorted(names):
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        lines.append(f"{digest}  {name}\n")
    text = "".join(lines)
    (out / release.SUMS_NAME).write_text(text, encoding="utf-8")
    return text


def build(out: Path) -> list[str]:
    """Build every asset into ``out`` (replacing earlier ones) and return their names."""
    epoch = source_date_epoch()
    out.mkdir(parents=True, exist_ok=True)
    pyz = release.build_pyz()
    release.write_atomic(out / release.PYZ_NAME, pyz, mode=0o755)
    with tempfile.TemporaryDirectory(prefix="inletsctl-dist-") as tmp:
        staging, built = Path(tmp) / "src", Path(tmp) / "out"
        built.mkdir()
        stage(staging, hashlib.sha256(pyz).hexdigest())
        run_setuptools(staging, built, epoch)
        for wheel in built.glob("*.whl"):
            normalize_wheel(wheel, epoch)
        for sdist in built.glob("*.tar.gz"):
            normalize_sdist(sdist, epoch)
        names = [release.PYZ_NAME]
        for asset in sorted(built.iterdir()):
            shutil.move(str(asset), out / asset.name)
            names.append(asset.name)
    write_sums(out, names)
    return sorted([*names, release.SUMS_NAME])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory")
    args = parser.parse_args(argv)
    for name in build(args.out):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
