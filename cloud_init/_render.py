"""Render a ServerSpec into a ``#cloud-config`` document.

Every value that reaches the document passes a filter that either quotes it for the
place it lands (``yaml``: a double-quoted YAML scalar; ``block``: an indented literal
block) or rejects it (``unit_arg``, ``domain``, ``email``). Commands in ``runcmd``
are exec lists that receive values as positional arguments, so no value is ever
parsed by a shell. StrictUndefined turns a missing variable into an error instead
of an empty string that would ship a broken server.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import jinja2

from cloud_init.errors import UnsafeValue
from providers.errors import UserDataTooLarge
from providers.models import Engine, Issuer, ProviderFacts, ServerSpec, TunnelMode
from providers.ports import ANYWHERE, inbound_rules, port_spec

#: Upstream inlets-pro release installed by ``--engine inlets-pro`` unless told otherwise.
INLETS_PRO_VERSION = "0.9.34"
INLETS_PRO_RELEASES = "https://github.com/inlets/inlets-pro/releases/download"
INLETS_PRO_URL = f"{INLETS_PRO_RELEASES}/{INLETS_PRO_VERSION}/inlets-pro"
#: Let's Encrypt's ACME directories, one per ``--letsencrypt-issuer``. Production is
#: named too, although it is Caddy's default, so that Caddy asks Let's Encrypt only
#: (its default falls back to ZeroSSL, which the flag does not say).
ACME_DIRECTORIES = {
    Issuer.PROD: "https://acme-v02.api.letsencrypt.org/directory",
    Issuer.STAGING: "https://acme-staging-v02.api.letsencrypt.org/directory",
}
#: Where the user-data puts ``--acme-ca-root`` for Caddy's ``acme_ca_root``.
ACME_CA_ROOT_PATH = "/etc/caddy/acme-ca-root.pem"

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))+$"
)
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$")
_UNIT_ARG = re.compile(r"^[A-Za-z0-9.,:_/-]+$")
#: One Caddyfile token: no space, quote, brace (placeholders), backslash or ``#``.
_CADDY_URL = re.compile(r"^[A-Za-z0-9._~:/?@!&*+,;=%\[\]-]+$")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: inlets-pro's release tags: ``0.9.34``, ``0.10.0-rc1`` (no leading ``v``)
_INLETS_PRO_TAG = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$")
_FORBIDDEN_TOKEN_CHARS = set("'\"\\")


def _yaml(value: object) -> str:
    """A double-quoted YAML scalar; JSON strings are valid YAML and escape everything."""
    return json.dumps(str(value), ensure_ascii=True)


def _block(value: str, indent: int) -> str:
    """An indented YAML literal block body; every line is indented, so none can escape."""
    if any(ord(c) < 0x20 and c not in "\n\t" for c in value) or "\x7f" in value:
        raise UnsafeValue("a file's content has control characters")
    pad = " " * indent
    return "\n".join(pad + line if line else "" for line in value.rstrip("\n").split("\n"))


def _unit_arg(value: object) -> str:
    """A word for a systemd ExecStart line: refuses anything a unit would reinterpret."""
    text = str(value)
    if not _UNIT_ARG.match(text) or "%" in text or "$" in text:
        raise UnsafeValue(f"unsafe value for the server's command line: {text!r}")
    return text


def _domain(value: str) -> str:
    if not _DOMAIN.match(value):
        raise UnsafeValue(f"not a domain name: {value!r}")
    return value.lower()


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise UnsafeValue(
            f"not an email address: {value!r}", hint="Pass --letsencrypt-email you@example.com."
        )
    return value


def check_acme_directory(url: str) -> str:
    """An https URL that lands in the Caddyfile as one token: ACME is HTTPS only (RFC 8555)."""
    bad = UnsafeValue(
        f"--acme-directory {url!r}: not the https:// URL of an ACME directory",
        hint="Pass the directory's full URL, e.g. --acme-directory "
        "https://acme.example.com/directory (ACME servers answer over HTTPS only).",
    )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (urlsplit checks the port only when asked for it)
    except ValueError as exc:
        raise bad from exc
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.fragment:
        raise bad
    if not _CADDY_URL.match(url):
        raise bad
    return url


def check_ca_root(pem: str) -> str:
    """The root certificate(s) of ``--acme-ca-root``, parsed and written out again as PEM.

    Parsing refuses a key, a truncated file or one of something else before any VM
    exists; writing them out again leaves no stray text in the file the VM gets.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise UnsafeValue(
            "--acme-ca-root: no PEM certificate in the file",
            hint="Pass the CA's root certificate as PEM (-----BEGIN CERTIFICATE-----).",
        ) from exc
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def acme_directory(server: ServerSpec) -> str:
    """The directory Caddy orders from: ``--acme-directory``, else the issuer's."""
    return server.acme_directory or ACME_DIRECTORIES[server.letsencrypt_issuer]


def inlets_pro_url(version: str = "") -> str:
    """The upstream binary of ``version`` (default: the one this release was tested with)."""
    version = version or INLETS_PRO_VERSION
    if not _INLETS_PRO_TAG.match(version):
        raise UnsafeValue(
            f"not an inlets-pro release: {version!r}",
            hint=f"Pass --inlets-version as its release tag, e.g. {INLETS_PRO_VERSION}.",
        )
    return f"{INLETS_PRO_RELEASES}/{version}/inlets-pro"


def check_token(value: str) -> str:
    """A token that fits ``INLETS_TOKEN=...`` in an EnvironmentFile (its own quoting rules)."""
    if not _TOKEN.match(value) or _FORBIDDEN_TOKEN_CHARS & set(value):
        raise UnsafeValue(
            "the tunnel token has spaces, quotes, backslashes or control characters",
            hint="Pass --inlets-token with printable characters only, or omit it.",
        )
    return value


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cloud_init", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        yaml=_yaml,
        block=_block,
        unit_arg=_unit_arg,
        domain=_domain,
        email=_email,
        acme_url=check_acme_directory,
        env_token=check_token,
    )
    return env


@dataclass(frozen=True)
class UnitPaths:
    """Where the hardened unit finds the engine and its secrets on the exit server.

    The cloud-init user-data installs them at these defaults; the ``ssh`` provider
    renders the same unit with paths under its host's own directory.
    """

    env_file: str = "/etc/tunnel-core/token.env"
    tls_cert: str = "/etc/tunnel-core/tls.crt"
    tls_key: str = "/etc/tunnel-core/tls.key"
    pyz: str = "/usr/local/lib/tunnel-core/tunnel-core.pyz"


#: The paths the cloud-init user-data writes.
CLOUD_INIT_PATHS = UnitPaths()


def render_unit(server: ServerSpec, paths: UnitPaths = CLOUD_INIT_PATHS) -> str:
    """The hardened systemd unit of the tunnel-core engine: one source for every installer."""
    if server.engine is not Engine.TUNNEL_CORE:
        raise UnsafeValue("render_unit is for the tunnel-core engine")
    return _environment().get_template("tunnel-core.service.j2").render(s=server, paths=paths)


def template_name(server: ServerSpec) -> str:
    """Which template a spec uses; one per engine and mode."""
    if server.engine is Engine.INLETS_PRO:
        return "inlets-pro.yaml.j2"
    if server.mode is TunnelMode.TCP:
        return "tunnel-core-tcp.yaml.j2"
    if server.letsencrypt_domains:
        return "tunnel-core-https.yaml.j2"
    return "tunnel-core-http.yaml.j2"


def host_firewall_rules(server: ServerSpec) -> str:
    """The nftables ruleset that is the firewall where the cloud has none to offer.

    It opens what :func:`providers.ports.inbound_rules` opens at every other cloud
    (the same ports to the same sources) and drops the rest, ssh included, as a cloud
    firewall of ours does. Sources are parsed again here: they land in a file that
    ``nft`` reads as code.
    """
    accepts: list[str] = []
    for (first, last), sources in inbound_rules(server):
        ports = port_spec(first, last)
        if sources == ANYWHERE:
            accepts.append(f"tcp dport {ports} accept")
            continue
        try:
            nets = [ipaddress.ip_network(s, strict=False) for s in sources]
        except ValueError as exc:
            raise UnsafeValue(f"not a network for the firewall: {exc}") from exc
        for family, version in (("ip", 4), ("ip6", 6)):
            chosen = ", ".join(str(n) for n in nets if n.version == version)
            if chosen:
                accepts.append(f"{family} saddr {{ {chosen} }} tcp dport {ports} accept")
    rules = "\n".join(f"        {line}" for line in accepts)
    return (
        "#!/usr/sbin/nft -f\n"
        "flush ruleset\n"
        "table inet inletsctl {\n"
        "    chain input {\n"
        "        type filter hook input priority filter; policy drop;\n"
        "        iif lo accept\n"
        "        ct state established,related accept\n"
        "        ct state invalid drop\n"
        "        meta l4proto { icmp, ipv6-icmp } accept\n"
        f"{rules}\n"
        "    }\n"
        "}\n"
    )


def fetch_script() -> str:
    """The download-and-verify step of an exit server (a Python script: URL, SHA-256,
    destination), for whatever else starts the engine: a container, a systemd unit."""
    return _environment().get_template("fetch.py.j2").render()


def render(server: ServerSpec, host_firewall: bool = False) -> str:
    """The user-data that makes a fresh Debian/Ubuntu VM an exit server for ``server``.

    ``host_firewall`` is for clouds without a firewall API: the VM loads
    :func:`host_firewall_rules` at boot, before sshd starts, when the image has nft,
    installs the nftables package to keep it, and the tunnel's unit requires it, so
    the server never serves unless the ruleset is loaded.
    """
    if server.engine is Engine.TUNNEL_CORE:
        if not server.release_url:
            raise UnsafeValue(
                "no release URL for tunnel-core.pyz",
                hint="Pass --release-url or set INLETSCTL_RELEASE_URL.",
            )
        if not server.release_url.startswith(("https://", "http://")):
            # the VM fetches it with no credentials: an s3:// object is ecs-fargate's only
            raise UnsafeValue(
                f"a VM downloads tunnel-core.pyz over http(s), not {server.release_url!r}",
                hint="Pass an https:// --release-url (s3:// is for --provider ecs-fargate).",
            )
        if not _SHA256.match(server.artifact_sha256):
            raise UnsafeValue("the release's SHA-256 is not 64 lowercase hex digits")
    if server.letsencrypt_domains and not server.letsencrypt_email:
        raise UnsafeValue("Let's Encrypt needs an email address", hint="Pass --letsencrypt-email.")
    env = _environment()
    context = {
        "s": server,
        "inlets_pro_url": inlets_pro_url(server.inlets_pro_version),
        "acme_ca": acme_directory(server),
        "acme_ca_root_path": ACME_CA_ROOT_PATH,
        "paths": CLOUD_INIT_PATHS,
    }
    files = {
        "unit": env.get_template("inlets-pro.service.j2").render(context)
        if server.engine is Engine.INLETS_PRO
        else render_unit(server),
        "caddyfile": env.get_template("Caddyfile.j2").render(context)
        if server.letsencrypt_domains
        else "",
        "fetch": fetch_script(),
        "nftables": host_firewall_rules(server) if host_firewall else "",
        "firewalled_unit": "inlets-pro.service"
        if server.engine is Engine.INLETS_PRO
        else "tunnel-core.service",
    }
    return env.get_template(template_name(server)).render(context, **files)


def encoded_size(user_data: str, facts: ProviderFacts) -> int:
    """Bytes the provider's API counts: base64 grows the document by a third."""
    raw = user_data.encode()
    if facts.user_data_encoding == "base64":
        return len(base64.b64encode(raw))
    return len(raw)


def check_size(user_data: str, facts: ProviderFacts, provider: str = "") -> None:
    """Refuse before any API call, so a too-large document never half-creates a host."""
    size = encoded_size(user_data, facts)
    if size > facts.user_data_limit:
        who = f"{provider}: " if provider else ""
        raise UserDataTooLarge(
            f"{who}user-data is {size} bytes; the limit is {facts.user_data_limit}"
        )
