"""The nftables host firewall, for clouds whose API has no firewall to create."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cloud_init import UnsafeValue, host_firewall_rules, render
from providers.models import Engine, ServerSpec, TunnelMode
from providers.testing.conformance import make_server_spec

RELEASE = {"release_url": "https://example.com/tunnel-core.pyz", "artifact_sha256": "a" * 64}


def spec(**changes: object) -> ServerSpec:
    return dataclasses.replace(make_server_spec(), **RELEASE, **changes)  # type: ignore[arg-type]


def accepts(rules: str) -> list[str]:
    """The port rules of the input chain, in order (without the fixed ones before them)."""
    return re.findall(r"^\s+((?:ip6? saddr .*? )?tcp dport .*) accept$", rules, re.M)


def files(user_data: str) -> dict[str, dict[str, object]]:
    return {f["path"]: f for f in yaml.safe_load(user_data)["write_files"]}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ["tcp dport 8080", "tcp dport 8123"]),
        ({"ports": (), "control_port": 9000}, ["tcp dport 1024-65535"]),
        ({"mode": TunnelMode.HTTP, "data_port": 8000}, ["tcp dport 8000", "tcp dport 8123"]),
        (
            {"mode": TunnelMode.HTTP, "letsencrypt_domains": ("a.example.com",)},
            ["tcp dport 80", "tcp dport 443", "tcp dport 8123"],
        ),
        (
            {"allow_ips": ("203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32")},
            [
                "tcp dport 8123",
                "ip saddr { 203.0.113.0/24, 198.51.100.7/32 } tcp dport 8080",
                "ip6 saddr { 2001:db8::/32 } tcp dport 8080",
            ],
        ),
    ],
)
def test_the_ruleset_opens_exactly_the_ports_of_the_cloud_firewalls(changes, expected) -> None:
    rules = host_firewall_rules(spec(**changes))
    assert accepts(rules) == expected
    assert "policy drop;" in rules, "everything else, ssh included, is dropped"
    assert "tcp dport 22 " not in rules


def test_without_the_flag_nothing_changes() -> None:
    server = spec()
    assert "nftables" not in render(server)
    assert yaml.safe_load(render(server))["package_update"] is False


@pytest.mark.parametrize("engine", list(Engine))
def test_the_server_unit_requires_the_loaded_ruleset(engine: Engine) -> None:
    out = render(spec(engine=engine), host_firewall=True)
    doc = yaml.safe_load(out)
    assert "nftables" in doc["packages"] and doc["package_update"] is True
    ruleset = files(out)["/etc/nftables.conf"]
    assert ruleset["defer"] is True, "written after the package, which ships its own file"
    assert ruleset["content"] == host_firewall_rules(spec(engine=engine))
    unit = "inlets-pro.service" if engine is Engine.INLETS_PRO else "tunnel-core.service"
    dropin = files(out)[f"/etc/systemd/system/{unit}.d/host-firewall.conf"]["content"]
    assert "Requires=nftables.service" in str(dropin) and "After=nftables.service" in str(dropin)
    assert doc["runcmd"][0] == ["systemctl", "enable", "--now", "nftables.service"]
    assert doc["bootcmd"][0][-1] == ruleset["content"], "loaded at once where nft exists"


def test_https_installs_caddy_and_nftables() -> None:
    server = spec(
        mode=TunnelMode.HTTP, letsencrypt_domains=("a.example.com",), letsencrypt_email="a@b.co"
    )
    assert yaml.safe_load(render(server, host_firewall=True))["packages"] == ["caddy", "nftables"]


def test_a_source_that_is_no_network_never_reaches_the_ruleset() -> None:
    with pytest.raises(UnsafeValue, match="not a network"):
        host_firewall_rules(spec(allow_ips=("10.0.0.0/8 } accept; tcp dport 22",)))


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is not installed")
def test_cloud_init_schema_accepts_it(tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text(render(spec(allow_ips=("203.0.113.0/24",)), host_firewall=True))
    res = subprocess.run(
        ["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
