"""User-data rendering: golden files, cloud-init's own schema check, quoting, size."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import cloud_init
from cloud_init import UnsafeValue, check_size, render, template_name
from providers.errors import UserDataTooLarge
from providers.models import Engine, Issuer, ProviderFacts, ServerSpec, TunnelMode
from tests.certs import self_signed

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
KNOWN_TOP_LEVEL = {"package_update", "packages", "write_files", "runcmd"}
CERT = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n"
ACME_ROOT = "-----BEGIN CERTIFICATE-----\nMIIBacmeroot\n-----END CERTIFICATE-----\n"

BASE = ServerSpec(
    mode=TunnelMode.TCP,
    token="tok-0123456789",
    tls_cert_pem=CERT,
    tls_key_pem=KEY,
    tls_fingerprint="sha256:" + "ab" * 32,
    ports=(80, 443),
    allow_ports="80,443",
    release_url="https://releases.example.com/download/v0.1.0/tunnel-core.pyz",
    artifact_sha256="0123456789abcdef" * 4,
)
VARIANTS = {
    "tcp": BASE,
    "http": dataclasses.replace(BASE, mode=TunnelMode.HTTP, ports=()),
    "https": dataclasses.replace(
        BASE,
        mode=TunnelMode.HTTP,
        ports=(),
        letsencrypt_domains=("a.example.com", "b.example.com"),
        letsencrypt_email="ops@example.com",
    ),
    "inlets-pro": dataclasses.replace(BASE, engine=Engine.INLETS_PRO),
}
#: Same templates as VARIANTS, with options that change the rendered unit.
OPTION_VARIANTS = {
    "tcp-allow-ips": dataclasses.replace(BASE, allow_ips=("203.0.113.0/24", "2001:db8::/32")),
    "http-allow-ips": dataclasses.replace(VARIANTS["http"], allow_ips=("198.51.100.7/32",)),
    "https-acme-directory": dataclasses.replace(
        VARIANTS["https"],
        acme_directory="https://10.0.2.100:14000/dir",
        acme_ca_root=ACME_ROOT,
    ),
}
GOLDEN_VARIANTS = {**VARIANTS, **OPTION_VARIANTS}
VARIANTS_CHECKED_BY_SCHEMA = {
    **GOLDEN_VARIANTS,
    "https-staging": dataclasses.replace(VARIANTS["https"], letsencrypt_issuer=Issuer.STAGING),
}


@pytest.mark.parametrize("variant", sorted(GOLDEN_VARIANTS))
def test_golden(variant: str) -> None:
    out = render(GOLDEN_VARIANTS[variant])
    path = GOLDEN / f"{variant}.yaml"
    if UPDATE:
        path.write_text(out)
    assert out == path.read_text(), f"rerun with UPDATE_GOLDEN=1 and review {path}"


def test_each_variant_has_its_own_template() -> None:
    names = {template_name(s) for s in VARIANTS.values()}
    assert len(names) == len(VARIANTS)


def _files(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    files = doc["write_files"]
    assert isinstance(files, list)
    return {f["path"]: f for f in files}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_structure_and_secret_file_modes(variant: str) -> None:
    doc = yaml.safe_load(render(VARIANTS[variant]))
    assert set(doc) <= KNOWN_TOP_LEVEL
    files = _files(doc)
    secrets = [p for p in files if p.endswith(("token.env", "token", "tls.key", "tls.crt"))]
    assert secrets
    for path in secrets:
        assert files[path]["permissions"] == "0600", path


def test_tunnel_core_unit_and_install() -> None:
    doc = yaml.safe_load(render(BASE))
    files = _files(doc)
    assert files["/etc/tunnel-core/token.env"]["content"] == "INLETS_TOKEN=tok-0123456789\n"
    unit = files["/etc/systemd/system/tunnel-core.service"]["content"]
    assert "--token-env INLETS_TOKEN" in unit
    assert "tok-0123456789" not in unit
    assert "tcp server --control-port 8123" in unit and "--allow-ports 80,443" in unit
    assert files["/etc/tunnel-core/tls.key"]["content"] == KEY
    (cmd,) = doc["runcmd"]
    assert cmd[-3:] == [BASE.release_url, BASE.artifact_sha256, cmd[-1]]


def test_fetch_script_refuses_a_mismatched_download(tmp_path: Path) -> None:
    """The script the VM runs, run here against a file:// URL."""
    files = _files(yaml.safe_load(render(BASE)))
    script = tmp_path / "fetch.py"
    script.write_text(str(files["/usr/local/lib/tunnel-core/fetch.py"]["content"]))
    payload = tmp_path / "artifact"
    payload.write_bytes(b"engine")
    import hashlib

    good = hashlib.sha256(b"engine").hexdigest()
    dest = tmp_path / "out" / "tunnel-core.pyz"
    bad = subprocess.run(
        ["python3", "-I", str(script), payload.as_uri(), "0" * 64, str(dest)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0 and "refusing" in bad.stderr
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    ok = subprocess.run(
        ["python3", "-I", str(script), payload.as_uri(), good, str(dest)], timeout=30
    )
    assert ok.returncode == 0 and dest.read_bytes() == b"engine"


def test_https_caddy_in_front_of_the_data_port() -> None:
    doc = yaml.safe_load(render(VARIANTS["https"]))
    assert doc["packages"] == ["caddy"]
    caddy = _files(doc)["/etc/caddy/Caddyfile"]
    assert caddy["defer"] is True
    assert "a.example.com, b.example.com {" in caddy["content"]
    assert "reverse_proxy 127.0.0.1:8000" in caddy["content"]
    assert "email ops@example.com" in caddy["content"]


def test_letsencrypt_staging_points_caddy_at_the_staging_directory() -> None:
    staging = dataclasses.replace(VARIANTS["https"], letsencrypt_issuer=Issuer.STAGING)
    caddy = str(_files(yaml.safe_load(render(staging)))["/etc/caddy/Caddyfile"]["content"])
    assert caddy.startswith(
        "{\n    email ops@example.com\n"
        "    acme_ca https://acme-staging-v02.api.letsencrypt.org/directory\n}\n"
    )
    prod = str(_files(yaml.safe_load(render(VARIANTS["https"])))["/etc/caddy/Caddyfile"]["content"])
    assert "    acme_ca https://acme-v02.api.letsencrypt.org/directory\n}\n" in prod, (
        "production is named, so Caddy falls back to no other CA"
    )
    assert "acme_ca_root" not in prod, "Let's Encrypt's roots are the system's"


def test_acme_directory_and_its_root_reach_caddy() -> None:
    doc = yaml.safe_load(render(OPTION_VARIANTS["https-acme-directory"]))
    files = _files(doc)
    caddy = str(files["/etc/caddy/Caddyfile"]["content"])
    assert caddy.startswith(
        "{\n    email ops@example.com\n    acme_ca https://10.0.2.100:14000/dir\n"
        f"    acme_ca_root {cloud_init.ACME_CA_ROOT_PATH}\n}}\n"
    )
    root = files[cloud_init.ACME_CA_ROOT_PATH]
    assert root["content"] == ACME_ROOT
    assert root["permissions"] == "0644" and root["defer"] is True, "written after the package"


@pytest.mark.parametrize(
    "url",
    [
        "http://acme.example.com/dir",
        "ftp://acme.example.com/dir",
        "https:///dir",
        "https://acme.example.com:99999/dir",
        "https://user:pw@acme.example.com/dir",
        "https://acme.example.com/dir#frag",
        "https://acme.example.com/dir {\n}\nevil.example.com {",
        "https://{env.HOME}/dir",
        'https://acme.example.com/"dir"',
        "https://acme.example.com/a dir",
        "https://acme.example.com/dir\nruncmd: [[reboot]]",
    ],
)
def test_acme_directory_that_is_not_one_caddyfile_https_token_is_refused(url: str) -> None:
    with pytest.raises(UnsafeValue) as info:
        render(dataclasses.replace(OPTION_VARIANTS["https-acme-directory"], acme_directory=url))
    assert "--acme-directory" in str(info.value) and "https://" in info.value.hint


def test_ca_root_is_parsed_and_written_out_again() -> None:
    cert, key, _ = self_signed()
    assert cloud_init.check_ca_root(f"my CA\n{cert}\ntrailing words\n") == cert
    assert cloud_init.check_ca_root(cert + cert) == cert + cert
    for junk in (key, "", "not a certificate\n"):
        with pytest.raises(UnsafeValue) as info:
            cloud_init.check_ca_root(junk)
        assert "BEGIN CERTIFICATE" in info.value.hint


def test_inlets_pro_version_picks_the_release_downloaded() -> None:
    pinned = yaml.safe_load(render(VARIANTS["inlets-pro"]))["runcmd"][0]
    assert pinned[-1] == cloud_init.INLETS_PRO_URL
    chosen = dataclasses.replace(VARIANTS["inlets-pro"], inlets_pro_version="0.10.1")
    (cmd,) = yaml.safe_load(render(chosen))["runcmd"]
    assert cmd[-1] == "https://github.com/inlets/inlets-pro/releases/download/0.10.1/inlets-pro"


@pytest.mark.parametrize("version", ["v0.9.34", "latest", "0.9.34/../x", "0.9.34\nruncmd: []"])
def test_inlets_pro_version_must_be_a_release_tag(version: str) -> None:
    with pytest.raises(UnsafeValue, match="not an inlets-pro release") as info:
        render(dataclasses.replace(VARIANTS["inlets-pro"], inlets_pro_version=version))
    assert "--inlets-version" in info.value.hint


HOSTILE = [
    'x"; rm -rf / #',
    "x\nruncmd: [[reboot]]",
    "$(reboot)",
    "`reboot`",
    "x' && reboot '",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_domain_is_refused(value: str) -> None:
    spec = dataclasses.replace(VARIANTS["https"], letsencrypt_domains=(value,))
    with pytest.raises(UnsafeValue):
        render(spec)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_email_is_refused(value: str) -> None:
    with pytest.raises(UnsafeValue):
        render(dataclasses.replace(VARIANTS["https"], letsencrypt_email=value))


@pytest.mark.parametrize("value", [v for v in HOSTILE if any(c in v for c in " \n'\"")])
def test_token_that_could_break_its_file_is_refused(value: str) -> None:
    with pytest.raises(UnsafeValue, match="token"):
        render(dataclasses.replace(BASE, token=value))


@pytest.mark.parametrize("value", ["$(reboot)", "`reboot`", "a;b|c&d>e"])
def test_token_with_shell_characters_lands_verbatim(value: str) -> None:
    doc = yaml.safe_load(render(dataclasses.replace(BASE, token=value)))
    assert _files(doc)["/etc/tunnel-core/token.env"]["content"] == f"INLETS_TOKEN={value}\n"
    assert value not in str(doc["runcmd"])


@pytest.mark.parametrize(
    "url", ['https://x.example.com/a"b\nruncmd: [[reboot]]', "https://x/$(reboot)"]
)
def test_release_url_is_a_quoted_argument(url: str) -> None:
    doc = yaml.safe_load(render(dataclasses.replace(BASE, release_url=url)))
    assert set(doc) <= KNOWN_TOP_LEVEL
    (cmd,) = doc["runcmd"]
    assert cmd[0:2] == ["sh", "-c"] and '"$1"' in cmd[2] and cmd[4] == url


@pytest.mark.parametrize("variant", sorted(v for v, s in OPTION_VARIANTS.items() if s.allow_ips))
def test_allow_ips_reach_the_unit(variant: str) -> None:
    spec = OPTION_VARIANTS[variant]
    unit = _files(yaml.safe_load(render(spec)))["/etc/systemd/system/tunnel-core.service"]
    (exec_start,) = [
        line for line in str(unit["content"]).splitlines() if line.startswith("ExecStart=")
    ]
    assert exec_start.endswith(" --allow-ips " + ",".join(spec.allow_ips))


def test_allow_ips_cannot_inject_into_the_unit() -> None:
    with pytest.raises(UnsafeValue):
        render(dataclasses.replace(BASE, allow_ips=("10.0.0.0/8 --token x",)))


def test_allow_ports_cannot_inject_into_the_unit() -> None:
    with pytest.raises(UnsafeValue):
        render(dataclasses.replace(BASE, allow_ports="80\nExecStartPre=/bin/reboot"))


def test_missing_release_is_a_clear_error() -> None:
    with pytest.raises(UnsafeValue, match="release URL") as info:
        render(dataclasses.replace(BASE, release_url=""))
    assert "--release-url" in info.value.hint


def test_letsencrypt_needs_email() -> None:
    with pytest.raises(UnsafeValue, match="email"):
        render(dataclasses.replace(VARIANTS["https"], letsencrypt_email=""))


def test_real_certificate_round_trips() -> None:
    cert, key, _ = self_signed()
    doc = yaml.safe_load(render(dataclasses.replace(BASE, tls_cert_pem=cert, tls_key_pem=key)))
    assert _files(doc)["/etc/tunnel-core/tls.crt"]["content"] == cert
    assert _files(doc)["/etc/tunnel-core/tls.key"]["content"] == key


def test_size_limit() -> None:
    out = render(BASE)
    raw = ProviderFacts("r", "p", "i", user_data_limit=len(out.encode()))
    check_size(out, raw)
    b64 = dataclasses.replace(raw, user_data_encoding="base64")
    with pytest.raises(UserDataTooLarge, match=f"limit is {len(out.encode())}"):
        check_size(out, b64, "ec2")
    assert cloud_init.encoded_size(out, b64) > len(out.encode())


@pytest.mark.skipif(
    shutil.which("cloud-init") is None,
    reason="cloud-init is not installed (Debian: apt-get install cloud-init; make test does it)",
)
@pytest.mark.parametrize("variant", sorted(VARIANTS_CHECKED_BY_SCHEMA))
def test_cloud_init_schema_accepts_it(variant: str, tmp_path: Path) -> None:
    path = tmp_path / "user-data"
    path.write_text(render(VARIANTS_CHECKED_BY_SCHEMA[variant]))
    res = subprocess.run(
        ["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Valid" in res.stdout


def test_public_api_is_exactly_all() -> None:
    public = {n for n in vars(cloud_init) if not n.startswith("_")}
    public -= {"annotations", "errors"}
    assert cloud_init.__all__ == sorted(cloud_init.__all__)
    assert set(cloud_init.__all__) == public
