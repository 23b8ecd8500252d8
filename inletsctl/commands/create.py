"""`inletsctl create`: rent an exit server, wait for it, print how to connect."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import NotReady, UsageError
from inletsctl.output import Format, emit_json, literal, show_summary, stderr
from inletsctl.progress import poll_reporter
from inletsctl.providers_config import Access, dns_config, opener
from inletsctl.readiness import Wait
from inletsctl.store import Store
from inletsctl.summary import check_upstream, summarise
from providers.models import Engine, Issuer, TunnelMode

if TYPE_CHECKING:
    from inletsctl.hosts import Skipped  # jinja2, cryptography: imported when used

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(text: str, flag: str = "--poll") -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"{flag}: not a duration: {text!r}", hint="Use e.g. 2s, 500ms or 1m.")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


def mode_of(tcp: bool, http: bool, domains: list[str]) -> TunnelMode:
    if tcp and (http or domains):
        raise UsageError("--tcp cannot be combined with --http or --letsencrypt-domain")
    if not (tcp or http or domains):
        raise UsageError(
            "say what to tunnel", hint="Pass --tcp, --http or --letsencrypt-domain DOMAIN."
        )
    return TunnelMode.TCP if tcp else TunnelMode.HTTP


def wait_level(wait: Wait | None, engine: Engine) -> Wait:
    """inlets-pro's server makes its own certificate, so ours can never be seen on it."""
    if engine is not Engine.INLETS_PRO:
        return wait or Wait.ready
    if wait is Wait.ready:
        raise UsageError(
            "--wait ready needs the tunnel-core engine: inlets-pro's server makes its own "
            "certificate, so the pinned one can never answer",
            hint="Pass --wait running (the default with --engine inlets-pro).",
        )
    return wait or Wait.running


def _warn(message: str) -> None:
    stderr().print(f"Warning: {message}", style="yellow", markup=False)


def _moving_on(skipped: Skipped, next_region: str) -> None:
    """The reason is the cloud's text: printed as it is, never as markup or escapes."""
    stderr().print(
        literal(
            f"Warning: {skipped.region}: {skipped.reason}; nothing is left there, "
            f"trying {next_region}"
        ),
        style="yellow",
    )


def _ssh_options(
    provider: str,
    host: str,
    user: str,
    port: int,
    key: Path | None,
    known_hosts: Path | None,
    accept_new: bool,
) -> tuple[tuple[str, str], ...]:
    """``--provider ssh``'s options, checked before any connection; refused elsewhere."""
    if provider != "ssh":
        given = [
            flag
            for flag, value in (
                ("--host", host),
                ("--ssh-user", user != "root"),
                ("--ssh-port", port != 22),
                ("--ssh-key", key),
                ("--known-hosts", known_hosts),
                ("--accept-new-host-key", accept_new),
            )
            if value
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)}: only for --provider ssh",
                hint="Drop them, or pass --provider ssh.",
            )
        return ()
    if not host:
        raise UsageError("--provider ssh needs --host", hint="Pass --host HOST (name or IP).")
    if not 0 < port < 65536:
        raise UsageError(f"--ssh-port {port}: not a port", hint="Pass 1-65535.")
    if key is not None and not key.is_file():
        raise UsageError(f"--ssh-key {key}: no such file")
    return (
        ("ssh_host", host),
        ("ssh_user", user),
        ("ssh_port", str(port)),
        ("ssh_key", str(key.resolve()) if key else ""),
        ("known_hosts", str(known_hosts.expanduser().resolve()) if known_hosts else ""),
        ("accept_new_host_key", "1" if accept_new else ""),
    )


def _check_dns(dns: str, zone: str, domains: list[str], wait: Wait) -> None:
    """``--dns`` and ``--dns-zone``, checked before any API call (nothing is paid yet)."""
    from providers.dns import NAMES
    from providers.dns.kit import is_hostname, outside

    if not dns:
        if zone:
            raise UsageError("--dns-zone needs --dns", hint=f"Pass --dns {'|'.join(NAMES)}.")
        return
    if dns not in NAMES:
        raise UsageError(
            f"--dns {dns!r}: no such DNS provider", hint=f"Pass --dns {', '.join(NAMES)}."
        )
    if not domains:
        raise UsageError(
            "--dns makes records for --letsencrypt-domain, and none was given",
            hint="Pass --letsencrypt-domain DOMAIN (repeatable), or drop --dns.",
        )
    bad = [d for d in domains if not is_hostname(d)]
    if bad:
        raise UsageError(
            f"--letsencrypt-domain {bad[0]!r}: not a host name a record can be made for",
            hint="Pass a name such as app.example.com (no wildcard, no scheme, no port).",
        )
    if zone and outside(domains, zone):
        raise UsageError(
            f"--letsencrypt-domain {outside(domains, zone)[0]!r} is not inside --dns-zone {zone!r}",
            hint="Pass domains under that zone, or drop --dns-zone to pick each one's zone.",
        )
    if wait is Wait.none:
        raise UsageError(
            "--dns needs the host's IP, which --wait none does not wait for",
            hint="Pass --wait running or --wait ready (the default).",
        )


def _read_ca_root(path: Path | None) -> str:
    """``--acme-ca-root``'s text; whether it is a certificate is checked with the rest."""
    if path is None:
        return ""
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text (PEM) file"
        raise UsageError(
            f"--acme-ca-root {path}: cannot read it ({reason})",
            hint="Pass the PEM file of the CA's root certificate.",
        ) from exc


class LoadBalancer(str, enum.Enum):
    alb = "alb"
    nlb = "nlb"


def _group_options(
    provider: str,
    count: int | None,
    load_balancer: LoadBalancer | None,
    domain: str = "",
    hosted_zone: str = "",
) -> tuple[tuple[str, str], ...]:
    """``--count N --load-balancer alb|nlb``: aws and ecs-fargate only, and never a count
    without a balancer; ``--domain``/``--hosted-zone`` only on an ALB (the provider checks
    the rest before any call)."""
    if (domain or hosted_zone) and load_balancer is not LoadBalancer.alb:
        raise UsageError(
            "--domain and --hosted-zone need --load-balancer alb: the ALB holds the certificate",
            hint="Pass --provider aws --http --load-balancer alb, or drop --domain.",
        )
    if count is None and load_balancer is None:
        return ()
    if provider not in ("aws", "ec2", "ecs-fargate"):
        raise UsageError(
            "--count and --load-balancer: only for --provider aws or ecs-fargate",
            hint="Drop them, or pass --provider aws.",
        )
    if load_balancer is None:
        raise UsageError(
            "--count needs --load-balancer: the exit servers share its public address",
            hint="Pass --load-balancer nlb (with --tcp) or alb (with --http).",
        )
    return (
        ("count", str(count) if count is not None else ""),
        ("load_balancer", load_balancer.value),
        *((("domain", domain), ("hosted_zone", hosted_zone)) if domain or hosted_zone else ()),
    )


def _fargate_network_options(
    provider: str, private_subnets: str, no_public_ip: bool, create_endpoints: bool
) -> tuple[tuple[str, str], ...]:
    """``--private-subnets``, ``--no-public-ip``, ``--create-endpoints``: ecs-fargate's only
    (the provider checks how they combine, before any call)."""
    given = [
        flag
        for flag, value in (
            ("--private-subnets", private_subnets),
            ("--no-public-ip", no_public_ip),
            ("--create-endpoints", create_endpoints),
        )
        if value
    ]
    if given and provider != "ecs-fargate":
        raise UsageError(
            f"{', '.join(given)}: only for --provider ecs-fargate",
            hint="Drop them, or pass --provider ecs-fargate.",
        )
    return (
        ("private_subnets", private_subnets),
        ("no_public_ip", "1" if no_public_ip else ""),
        ("create_endpoints", "1" if create_endpoints else ""),
    )


def register(app: typer.Typer) -> None:
    app.command()(create)


@o.with_access
def create(
    host_name: Annotated[
        str,
        typer.Argument(
            metavar="[NAME]", help="Host name at the provider (as --name).", show_default=False
        ),
    ] = "",
    provider: o.ProviderOpt = "local",
    tcp: Annotated[bool, typer.Option("--tcp", help="Forward TCP ports.")] = False,
    http: Annotated[bool, typer.Option("--http", help="Route HTTP by Host header.")] = False,
    letsencrypt_domain: Annotated[
        list[str], typer.Option(help="Serve HTTPS for this domain (repeatable).")
    ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    letsencrypt_email: Annotated[str, typer.Option(help="Let's Encrypt account email.")] = "",
    dns: Annotated[
        str,
        typer.Option(
            "--dns",
            metavar="route53|digitalocean|hetzner",
            help="Point each --letsencrypt-domain at the host with A (and AAAA) records at "
            "this DNS provider; delete removes them.",
        ),
    ] = "",
    dns_zone: Annotated[
        str,
        typer.Option(
            help="The zone for --dns records; default: for each domain, the longest hosted "
            "zone it ends with."
        ),
    ] = "",
    letsencrypt_issuer: Annotated[
        Issuer | None,
        typer.Option(
            help="Let's Encrypt directory: prod, or staging (untrusted certificates, "
            "generous rate limits: for trying things out). Default: prod.",
            show_default=False,
        ),
    ] = None,
    acme_directory: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help="ACME directory of another CA instead of Let's Encrypt (a private CA, or a "
            "test server such as Pebble), e.g. https://acme.example.com/directory.",
        ),
    ] = "",
    acme_ca_root: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="PEM root certificate that Caddy on the server trusts for "
            "--acme-directory's HTTPS (a private CA's root).",
            show_default=False,
        ),
    ] = None,
    ports: Annotated[
        str, typer.Option(help="TCP ports to expose: PORT or PUBLIC:UPSTREAM, e.g. 80,2222:22.")
    ] = "",
    upstream: Annotated[
        str, typer.Option(help="Where the client forwards to; saved for get and connect.")
    ] = "",
    allow_ips: Annotated[
        str,
        typer.Option(
            metavar="CIDR,...",
            help="Serve the data ports only to these networks (IPv4 and IPv6, e.g. "
            "203.0.113.0/24,2001:db8::/32): the server closes other connections and the "
            "cloud firewall admits only these; the control port stays open to all.",
        ),
    ] = "",
    name: Annotated[str, typer.Option(help="Host name at the provider.")] = "",
    plan: Annotated[
        str, typer.Option("--plan", "-s", help="VM size; the provider's default if empty.")
    ] = "",
    image: Annotated[
        str,
        typer.Option(
            help="OS image; the provider's default if empty (ecs-fargate: a container "
            "image with python3)."
        ),
    ] = "",
    inlets_token: Annotated[
        str, typer.Option("--inlets-token", "-t", help="Tunnel token instead of a random one.")
    ] = "",
    engine: Annotated[Engine, typer.Option(help="Tunnel server to install.")] = (
        Engine.TUNNEL_CORE
    ),
    inlets_version: Annotated[
        str,
        typer.Option(
            help="--engine inlets-pro: the inlets-pro release tag to install, e.g. 0.9.34 "
            "(default: the one this inletsctl was tested with)."
        ),
    ] = "",
    release_url: Annotated[
        str,
        typer.Option(
            help="Base URL of the releases (or INLETSCTL_RELEASE_URL); ecs-fargate also "
            "takes s3://BUCKET/KEY of the tunnel-core.pyz itself (read by a task role)."
        ),
    ] = "",
    zone: Annotated[str, typer.Option(help="Availability zone (ec2).")] = "",
    vpc_id: Annotated[str, typer.Option(help="VPC to launch in (ec2).")] = "",
    subnet_id: Annotated[str, typer.Option(help="Subnet to launch in (ec2).")] = "",
    aws_key_name: Annotated[str, typer.Option(help="EC2 key pair for SSH access.")] = "",
    cluster: Annotated[
        str,
        typer.Option(
            help="ecs-fargate: run the tasks in this existing ECS cluster (never deleted); "
            "default: a cluster of their own."
        ),
    ] = "",
    private_subnets: Annotated[
        str,
        typer.Option(
            metavar="SUBNET,...",
            help="ecs-fargate: run the tasks in these subnets (one VPC; needs --no-public-ip); "
            "the load balancer goes in that VPC's public subnets, one per zone of them.",
        ),
    ] = "",
    no_public_ip: Annotated[
        bool,
        typer.Option(
            "--no-public-ip",
            help="ecs-fargate: tasks without public IPs; clients reach the control port "
            "through the NLB too (--load-balancer nlb --count 1).",
        ),
    ] = False,
    create_endpoints: Annotated[
        bool,
        typer.Option(
            "--create-endpoints",
            help="ecs-fargate --no-public-ip: make the VPC endpoints the tasks need (S3 "
            "gateway; ECR, Logs, Secrets Manager interfaces) that the VPC lacks; delete "
            "removes them.",
        ),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option(
            help="aws: this many exit servers (1-20, default 2) behind --load-balancer, "
            "spread over two or more zones, one token and certificate for all.",
            show_default=False,
        ),
    ] = None,
    load_balancer: Annotated[
        LoadBalancer | None,
        typer.Option(
            help="aws: an ALB (--http: port 80) or NLB (--tcp: each of --ports) in front of "
            "the exit servers; their data ports admit only it.",
            show_default=False,
        ),
    ] = None,
    domain: Annotated[
        str,
        typer.Option(
            help="--load-balancer alb: serve HTTPS on 443 for this name, with an ACM "
            "certificate and an alias record in --hosted-zone.",
        ),
    ] = "",
    hosted_zone: Annotated[
        str,
        typer.Option(help="--domain: the Route 53 hosted zone (id or name) that holds it."),
    ] = "",
    host: Annotated[
        str, typer.Option("--host", help="ssh: the server to install on (name or IP).")
    ] = "",
    ssh_user: Annotated[str, typer.Option(help="ssh: the user to log in as.")] = "root",
    ssh_port: Annotated[int, typer.Option(help="ssh: sshd's port.")] = 22,
    ssh_key: Annotated[
        Path | None,
        typer.Option(help="ssh: private key file; default: ssh-agent and ~/.ssh keys."),
    ] = None,
    known_hosts: Annotated[
        Path | None, typer.Option(help="ssh: known_hosts file (default ~/.ssh/known_hosts).")
    ] = None,
    accept_new_host_key: Annotated[
        bool,
        typer.Option(
            "--accept-new-host-key",
            help="ssh: trust an unknown host key on first use and add it to known_hosts "
            "(a changed key is still refused).",
        ),
    ] = False,
    wait: Annotated[
        Wait | None,
        typer.Option(
            help="Return after the create call (none), once the cloud runs the VM (running), "
            "or once its tunnel server answers with the pinned certificate (ready). "
            "Default: ready; running for --engine inlets-pro.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option(help="Give up waiting after this long, counted from the start.")
    ] = "5m",
    poll: Annotated[str, typer.Option(help="Time between status polls.")] = "2s",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and check the user-data; create nothing.")
    ] = False,
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """Create an exit server and print the client command that connects to it."""
    from inletsctl import hosts  # jinja2, cryptography: only when used

    if host_name and name and host_name != name:
        raise UsageError(f"two names: {host_name!r} and --name {name!r}", hint="Give one.")
    mode = mode_of(tcp, http, letsencrypt_domain)
    if ports and mode is not TunnelMode.TCP:
        raise UsageError(
            "--ports is for --tcp: HTTP mode serves one port and routes by Host header",
            hint="Drop --ports, or pass --tcp instead of --http.",
        )
    port_list = o.parse_ports(ports)
    allowed = o.parse_allow_ips(allow_ips)
    if allowed and letsencrypt_domain:
        raise UsageError(
            "--allow-ips cannot be combined with --letsencrypt-domain: Let's Encrypt must "
            "reach ports 80 and 443 from anywhere to issue the certificate",
            hint="Use --http with --allow-ips, or drop --allow-ips.",
        )
    check_upstream(mode.value, engine.value, upstream)
    ssh_extra = _ssh_options(
        provider, host, ssh_user, ssh_port, ssh_key, known_hosts, accept_new_host_key
    )
    group_extra = _group_options(provider, count, load_balancer, domain, hosted_zone)
    group_extra += _fargate_network_options(
        provider, private_subnets, no_public_ip, create_endpoints
    )
    interval = parse_duration(poll)
    until = wait_level(wait, engine)
    _check_dns(dns, dns_zone, letsencrypt_domain, until)
    waiting = hosts.Waiting(
        until=until,
        timeout=parse_duration(timeout, "--timeout"),
        backoff=hosts.constant(interval),
    )
    req = hosts.CreateRequest(
        provider=provider,
        mode=mode,
        name=host_name or name,
        plan=plan,
        image=image,
        ports=port_list,
        domains=tuple(letsencrypt_domain),
        email=letsencrypt_email,
        issuer=letsencrypt_issuer,
        acme_directory=acme_directory,
        acme_ca_root=_read_ca_root(acme_ca_root),
        token=inlets_token,
        engine=engine,
        inlets_version=inlets_version,
        release_url=release_url,
        upstream=upstream,
        allow_ips=allowed,
        zone=zone,
        extra=(("vpc_id", vpc_id), ("subnet_id", subnet_id), ("aws_key_name", aws_key_name))
        + ((("cluster", cluster),) if cluster else ())
        + ssh_extra
        + group_extra,
    )
    regions = o.parse_regions(access.region)
    store = Store()
    attempts = hosts.plan_regions(req, regions, opener(access, store.directory), dry_run, _warn)
    spec = attempts[0].spec
    if dry_run:
        if output is Format.json:
            emit_json({"provider": provider, "host_id": spec.host_id, "user_data": spec.user_data})
        else:
            typer.echo(spec.user_data, nl=False)
        return
    placement = None
    if dns:
        config = dns_config(access, provider, dns)
        placement = hosts.plan_dns(dns, letsencrypt_domain, dns_zone, config)
    try:
        with poll_reporter(stderr()) as progress:
            record, skipped = hosts.create_first_fit(
                store, attempts, waiting, progress, moving_on=_moving_on, placement=placement
            )
    except NotReady as exc:
        if output is Format.json:  # scripts still learn the id, to read logs or delete it
            show_summary(summarise(store.get(exc.host_id), show_token=True), output)
        raise
    passed = [(s.region, s.reason) for s in skipped] if len(regions) > 1 else None
    show_summary(summarise(record, show_token=True, skipped_regions=passed), output)
