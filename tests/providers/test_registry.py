"""The registry reads entry points; these tests install real (throwaway) distributions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from providers import registry
from providers.errors import ProviderNotFound
from providers.local import LocalProvider

CLOUD_SDKS = (
    "azure",
    "boto3",
    "botocore",
    "hcloud",
    "digitalocean",
    "google.auth",
    "google.cloud.compute_v1",
    "linode_api4",
    "ovh",
    "paramiko",
    "requests",
    "scaleway",
    "scaleway_core",
)


def test_builtins_are_registered_sorted() -> None:
    names = registry.names()
    assert names == sorted(names)
    assert {"local", "ec2", "aws", "digitalocean", "hetzner", "linode", "qemu"} <= set(names)
    assert {"scaleway", "vultr"} <= set(names)
    assert "azure" in names
    assert "ovh" in names
    assert "gce" in names
    assert "ecs-fargate" in names


def test_load_local() -> None:
    assert registry.load("local") is LocalProvider


def test_unknown_provider_lists_installed_ones() -> None:
    with pytest.raises(ProviderNotFound) as info:
        registry.load("nope")
    assert "nope" in info.value.message
    assert "local" in info.value.hint and "ec2" in info.value.hint


def _fake_dist(tmp_path: Path, entries: str) -> dict[str, str]:
    """A distribution on PYTHONPATH whose entry points are ``entries``."""
    info = tmp_path / "thirdparty_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[inletsctl.providers]\n{entries}\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path), "NO_COLOR": "1"}


def _inletsctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_broken_plugin_is_named_and_breaks_nothing_else(tmp_path: Path) -> None:
    env = _fake_dist(tmp_path, "broken = no_such_module_xyz:Provider")
    assert _inletsctl(env, "--help").returncode == 0
    res = _inletsctl(env, "create", "--provider", "broken", "--tcp", "--ports", "8080")
    assert res.returncode == 1
    assert "provider 'broken' failed to load from no_such_module_xyz:Provider" in res.stderr
    assert "Traceback" not in res.stderr
    assert _inletsctl(env, "list", "-o", "json").returncode == 0


def test_name_claimed_twice_is_a_hard_error(tmp_path: Path) -> None:
    env = _fake_dist(tmp_path, "local = other_pkg:LocalProvider")
    res = _inletsctl(env, "create", "--tcp", "--ports", "8080")
    assert res.returncode == 1
    assert "claimed twice" in res.stderr
    assert "providers.local:LocalProvider" in res.stderr


@pytest.mark.parametrize("args", [["--help"], ["list", "-o", "json"], ["create", "--help"]])
def test_help_and_list_import_no_cloud_sdk(tmp_path: Path, args: list[str]) -> None:
    code = (
        "import sys, json, contextlib, io\n"
        "from inletsctl.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    rc = main({args!r})\n"
        f"print(json.dumps([rc, sorted(m for m in {CLOUD_SDKS!r} if m in sys.modules)]))\n"
    )
    env = {**os.environ, "INLETSCTL_STATE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    rc, imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0, out.stderr
    assert imported == []
