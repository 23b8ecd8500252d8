"""`inletsctl create`: rent an exit server, wait for it, print how to connect."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import NotReady, UsageError
from inletsctl.output import Format, emit_json, show_summary, stderr
from inletsctl.progress import poll_reporter
from inletsctl.providers_config import Access, open_provider
from inletsctl.readiness import Wait
from inletsctl.store import Store
from inletsctl.summary import check_upstream, summarise
from providers.models import Engine, ServerSpec, TunnelMode

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")


def parse_duration(text: str, flag: str = "--poll") -> float:
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"{flag}: not a duration: {text!r}", hint="Use e.g. 2s, 500ms or 1m.")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """``8080,2222:22`` -> ((8080, 8080), (2222, 22)): public port, upstream port.

    Refused here, before anything is paid for, is what the server or client would only
    refuse later: a public port given twice, or the one the control plane listens on.
    """
    pairs: dict[int, int] = {}
    control = ServerSpec.control_port
    for part in filter(None, (p.strip() for p in text.split(","))):
        public, _, upstream = part.partition(":")
        nums = [public, upstream or public]
        if not all(n.isdigit() and 1 <= int(n) <= 65535 for n in nums):
            raise UsageError(
                f"--ports: {part!r} is not PORT or PUBLIC:UPSTREAM with ports 1-65535",
                hint="Pass e.g. --ports 8080,2222:22.",
            )
        pub, up = int(nums[0]), int(nums[1])
        if pub in pairs:
            raise UsageError(
                f"--ports: public port {pub} is given twice",
                hint="Give each public port once; PUBLIC:UPSTREAM maps one to another local port.",
            )
        if pub == control:
            raise UsageError(
                f"--ports: {pub} is the tunnel's control port",
                hint=f"Expose it under another public port, e.g. --ports {control + 1}:{up}.",
            )
        pairs[pub] = up
    return tuple(pairs.items())


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


def register(app: typer.Typer) -> None:
    app.command()(create)


@o.with_access
def create(
    provider: o.ProviderOpt = "local",
    tcp: Annotated[bool, typer.Option("--tcp", help="Forward TCP ports.")] = False,
    http: Annotated[bool, typer.Option("--http", help="Route HTTP by Host header.")] = False,
    letsencrypt_domain: Annotated[
        list[str], typer.Option(help="Serve HTTPS for this domain (repeatable).")
    ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    letsencrypt_email: Annotated[str, typer.Option(help="Let's Encrypt account email.")] = "",
    ports: Annotated[
        str, typer.Option(help="TCP ports to expose: PORT or PUBLIC:UPSTREAM, e.g. 80,2222:22.")
    ] = "",
    upstream: Annotated[
        str, typer.Option(help="Where the client forwards to; saved for get and connect.")
    ] = "",
    name: Annotated[str, typer.Option(help="Host name at the provider.")] = "",
    plan: Annotated[str, typer.Option(help="VM size; the provider's default if empty.")] = "",
    image: Annotated[str, typer.Option(help="OS image; the provider's default if empty.")] = "",
    inlets_token: Annotated[
        str, typer.Option(help="Tunnel token to use instead of a random one.")
    ] = "",
    engine: Annotated[Engine, typer.Option(help="Tunnel server to install.")] = (
        Engine.TUNNEL_CORE
    ),
    release_url: Annotated[
        str, typer.Option(help="Base URL of the releases (or INLETSCTL_RELEASE_URL).")
    ] = "",
    zone: Annotated[str, typer.Option(help="Availability zone (ec2).")] = "",
    vpc_id: Annotated[str, typer.Option(help="VPC to launch in (ec2).")] = "",
    subnet_id: Annotated[str, typer.Option(help="Subnet to launch in (ec2).")] = "",
    aws_key_name: Annotated[str, typer.Option(help="EC2 key pair for SSH access.")] = "",
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

    mode = mode_of(tcp, http, letsencrypt_domain)
    if ports and mode is not TunnelMode.TCP:
        raise UsageError(
            "--ports is for --tcp: HTTP mode serves one port and routes by Host header",
            hint="Drop --ports, or pass --tcp instead of --http.",
        )
    port_list = parse_ports(ports)
    check_upstream(mode.value, engine.value, upstream)
    if mode is TunnelMode.TCP and not port_list:
        raise UsageError("--tcp needs the ports to expose", hint="Pass --ports 8080,2222.")
    interval = parse_duration(poll)
    waiting = hosts.Waiting(
        until=wait_level(wait, engine),
        timeout=parse_duration(timeout, "--timeout"),
        backoff=hosts.constant(interval),
    )
    req = hosts.CreateRequest(
        provider=provider,
        mode=mode,
        name=name,
        region=access.region,
        plan=plan,
        image=image,
        ports=port_list,
        domains=tuple(letsencrypt_domain),
        email=letsencrypt_email,
        token=inlets_token,
        engine=engine,
        release_url=release_url,
        upstream=upstream,
        zone=zone,
        extra=(("vpc_id", vpc_id), ("subnet_id", subnet_id), ("aws_key_name", aws_key_name)),
    )
    store = Store()
    prov = open_provider(provider, access, store.directory)
    spec = hosts.build_spec(req, prov, hosts.new_host_id(), dry_run)
    if dry_run:
        if output is Format.json:
            emit_json({"provider": provider, "host_id": spec.host_id, "user_data": spec.user_data})
        else:
            typer.echo(spec.user_data, nl=False)
        return
    try:
        with poll_reporter(stderr()) as progress:
            record = hosts.create(store, prov, req, spec, waiting, progress)
    except NotReady as exc:
        if output is Format.json:  # scripts still learn the id, to read logs or delete it
            show_summary(summarise(store.get(exc.host_id), show_token=True), output)
        raise
    show_summary(summarise(record, show_token=True), output)
