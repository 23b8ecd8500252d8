"""``create --acme-directory URL --acme-ca-root FILE``: checked before any API call, rendered."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloud_init import ACME_CA_ROOT_PATH
from inletsctl.store import Store
from tests.certs import self_signed
from tests.conftest import free_port
from tests.inletsctl.conftest import run_cli

HTTPS = ["--letsencrypt-domain", "a.example.com", "--letsencrypt-email", "ops@example.com"]
DIRECTORY = "https://acme.example.com:14000/dir"


@pytest.fixture
def ca_root(tmp_path: Path) -> tuple[Path, str]:
    cert, _, _ = self_signed("acme.example.com")
    path = tmp_path / "root.pem"
    path.write_text(f"Our private CA\n{cert}")
    return path, cert


def _unworkable(tmp_path: Path, ca_root: Path) -> list[tuple[list[str], str, str]]:
    key = tmp_path / "key.pem"
    key.write_text(self_signed()[1])
    binary = tmp_path / "root.der"
    binary.write_bytes(b"\x30\x82\xff\xfe")
    return [
        (["--http", "--acme-directory", DIRECTORY], "need --letsencrypt-domain", "--letsencrypt"),
        ([*HTTPS, "--acme-ca-root", str(ca_root)], "none was given", "--acme-directory URL"),
        (
            [*HTTPS, "--acme-directory", DIRECTORY, "--letsencrypt-issuer", "staging"],
            "both choose the ACME directory",
            "Pass one",
        ),
        ([*HTTPS, "--acme-directory", "http://acme.example.com/dir"], "not the https://", ""),
        ([*HTTPS, "--acme-directory", "https://a.example.com/{env.X}"], "not the https://", ""),
        ([*HTTPS, "--acme-directory", "acme.example.com/dir"], "not the https://", ""),
        (
            [*HTTPS, "--acme-directory", DIRECTORY, "--acme-ca-root", str(tmp_path / "none.pem")],
            "cannot read it (No such file or directory)",
            "PEM file",
        ),
        (
            [*HTTPS, "--acme-directory", DIRECTORY, "--acme-ca-root", str(tmp_path)],
            "cannot read it (Is a directory)",
            "PEM file",
        ),
        (
            [*HTTPS, "--acme-directory", DIRECTORY, "--acme-ca-root", str(binary)],
            "cannot read it (not a text (PEM) file)",
            "PEM file",
        ),
        (
            [*HTTPS, "--acme-directory", DIRECTORY, "--acme-ca-root", str(key)],
            "no PEM certificate in the file",
            "BEGIN CERTIFICATE",
        ),
    ]


def test_unworkable_acme_options_exit_2_before_any_api_call(
    state_dir: Path, tmp_path: Path, ca_root: tuple[Path, str]
) -> None:
    """The provider's API is a port nobody listens on: reaching it would be exit 1."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    for args, message, hint in _unworkable(tmp_path, ca_root[0]):
        res = run_cli(
            "create", "-p", "digitalocean", "--access-token", "x", "--endpoint-url", endpoint,
            *args,
        )  # fmt: skip
        assert res.returncode == 2, (args, res.stderr)
        error, _, said = res.stderr.partition("Hint: ")
        assert message in error and hint in said, (args, res.stderr)
        assert "cannot reach" not in res.stderr and "Traceback" not in res.stderr
    assert Store(state_dir).all(include_deleted=True) == [], "nothing recorded, nothing made"


def test_acme_directory_and_root_reach_caddy_in_the_user_data(
    state_dir: Path, ca_root: tuple[Path, str]
) -> None:
    path, cert = ca_root
    res = run_cli(
        "create", "--dry-run", *HTTPS, "--acme-directory", DIRECTORY, "--acme-ca-root", str(path)
    )
    assert res.returncode == 0, res.stderr
    files = {f["path"]: f["content"] for f in yaml.safe_load(res.stdout)["write_files"]}
    caddyfile = files["/etc/caddy/Caddyfile"]
    assert f"    acme_ca {DIRECTORY}\n    acme_ca_root {ACME_CA_ROOT_PATH}\n" in caddyfile
    assert files[ACME_CA_ROOT_PATH] == cert, "the certificate alone, the label dropped"


def test_letsencrypt_production_is_named_when_nothing_is_chosen(state_dir: Path) -> None:
    res = run_cli("create", "--dry-run", *HTTPS)
    assert res.returncode == 0, res.stderr
    files = {f["path"]: f["content"] for f in yaml.safe_load(res.stdout)["write_files"]}
    caddyfile = files["/etc/caddy/Caddyfile"]
    assert "acme_ca https://acme-v02.api.letsencrypt.org/directory\n" in caddyfile
    assert ACME_CA_ROOT_PATH not in files
