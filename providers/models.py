"""Plain values shared by every provider: what to create, and what exists.

These are frozen dataclasses so that a spec handed to a provider can never be
changed behind the caller's back, and so tests can compare them by value.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Tag / label key and value put on every resource we create, so `list` and
#: `delete --ip` find our resources from the cloud API even without local state.
TAG_KEY = "inletsctl"
TAG_VALUE = "exit-server"
#: Tag / label key that carries the host id (the inletsctl id, not the cloud's).
HOST_ID_TAG = "inletsctl-host"


class HostStatus(str, enum.Enum):
    """Every provider's own states normalised to these (as the Go original's ActiveStatus)."""

    CREATING = "creating"
    ACTIVE = "active"
    FAILED = "failed"
    DELETING = "deleting"
    DELETED = "deleted"


class TunnelMode(str, enum.Enum):
    TCP = "tcp"
    HTTP = "http"


class Engine(str, enum.Enum):
    TUNNEL_CORE = "tunnel-core"
    INLETS_PRO = "inlets-pro"


class Issuer(str, enum.Enum):
    """Let's Encrypt's directories: staging's certificates are untrusted but not rate-limited."""

    PROD = "prod"
    STAGING = "staging"


@dataclass(frozen=True)
class ServerSpec:
    """Everything the exit server's tunnel process needs; the same for every provider.

    cloud-init renders it into user-data; the `local` and `qemu` providers start the
    server from it directly. ``token`` is the tunnel's secret: never log a ServerSpec.
    """

    mode: TunnelMode
    token: str = field(repr=False)
    tls_cert_pem: str
    tls_key_pem: str = field(repr=False)
    tls_fingerprint: str  # "sha256:<64 lowercase hex>"
    control_port: int = 8123
    data_port: int = 8000  # HTTP mode's public port
    ports: tuple[int, ...] = ()  # TCP mode: the ports the client will ask for
    allow_ports: str = "1024-65535"  # TCP mode: the server's allow-list
    #: ``--allow-ips``: the only sources the data ports serve (the engine and the cloud
    #: firewall); the control port stays open to all. () = everyone.
    allow_ips: tuple[str, ...] = ()
    engine: Engine = Engine.TUNNEL_CORE
    letsencrypt_domains: tuple[str, ...] = ()
    letsencrypt_email: str = ""
    letsencrypt_issuer: Issuer = Issuer.PROD
    #: ``--acme-directory``: another CA's ACME directory URL, instead of the issuer's
    acme_directory: str = ""
    #: ``--acme-ca-root``: PEM root(s) Caddy trusts for that directory's HTTPS; "" = system
    acme_ca_root: str = ""
    inlets_pro_version: str = ""  # --engine inlets-pro: the release to install; "" = pinned
    release_url: str = ""  # exact URL of tunnel-core.pyz for this version
    artifact_sha256: str = ""  # its SHA-256, pinned in the user-data


@dataclass(frozen=True)
class HostSpec:
    """What `create` asks a provider for."""

    host_id: str  # ours, stable, chosen before any API call
    name: str
    region: str
    plan: str
    image: str
    user_data: str = field(repr=False)  # rendered cloud-init (contains the token)
    server: ServerSpec
    zone: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)  # provider-specific options


@dataclass(frozen=True)
class Host:
    """A host as the provider sees it now. ``id`` is the provider's id for the VM."""

    id: str
    name: str
    provider: str
    region: str
    status: HostStatus
    ip: str = ""
    ipv6: str = ""
    #: Escape hatch (as the Go original's ``Additional``): ids of the firewall or
    #: security group, a PID, anything `delete` needs. Never secrets.
    additional: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderFacts:
    """Per-provider defaults and limits; they live on the provider class, not in the CLI."""

    default_region: str
    default_plan: str
    default_image: str
    user_data_limit: int  # bytes, after encoding
    user_data_encoding: str = "raw"  # "raw" or "base64": how the API wants it
    regions: tuple[str, ...] = ()  # known-valid values for early checks; () = unchecked
    plans: tuple[str, ...] = ()
    #: the cloud has no firewall API, so the user-data's nftables ruleset is the firewall
    host_firewall: bool = False


@dataclass(frozen=True)
class ProviderConfig:
    """How to reach and authenticate to a provider; built by the CLI from flags and env.

    Secrets are ``repr=False`` so they never show in a log line or a traceback.
    """

    region: str = ""
    access_token: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    profile: str = ""
    endpoint_url: str = ""
    state_dir: str = ""  # where providers that keep files (local, qemu) keep them
    extra: Mapping[str, str] = field(default_factory=dict)
