"""UDP mode: DNS queries (dnsperf) to a local resolver (dnsmasq) through every UDP path.

`ssh -R` and stunnel carry no UDP, so the anchors are direct and socat's UDP relay.
Two figures per path: queries/s with 50 in flight from 4 sockets (4 flows; a round
trip through both ends per query), and the answered rate when 5,000 queries/s are
offered, with the share lost (UDP drops rather than queues: a tunnel that cannot keep
up shows loss here, not latency). Each side's CPU is reported per 10,000 queries.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from bench import paths
from bench.loadgen import Sample, run_tool
from bench.procs import BenchError, Procs, free_port, is_listening, wait_for

CLOSED_LOOP = "udp_dns_q50_qps"
OFFERED = "udp_dns_5k_offered_qps"
TESTS = (CLOSED_LOOP, OFFERED)
OFFERED_RATE = 5_000
TOOLS = {"dnsperf": "dnsperf", "dnsmasq": "dnsmasq-base", "socat": "socat"}


def missing_tools() -> list[str]:
    return [f"{cmd} ({pkg})" for cmd, pkg in TOOLS.items() if not shutil.which(cmd)]


def start_resolver(procs: Procs, work: Path) -> tuple[int, Path]:
    """dnsmasq answering every name under tunnel.test itself (no upstream), and a query file."""
    port = free_port()
    procs.start(
        "dnsmasq",
        ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv"]
        + ["--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}"]
        + ["--address=/tunnel.test/192.0.2.44", "--pid-file=", "--user=root"]
        + ["--log-facility=/dev/null"],
    )
    wait_for(f"dnsmasq on udp port {port}", partial(is_listening, port, "udp"))
    queries = work / "queries.txt"
    queries.write_text("".join(f"host{n}.tunnel.test A\n" for n in range(100)))
    return port, queries


def start_routes(
    procs: Procs, work: Path, engines: Mapping[str, Sequence[str]], resolver: int
) -> list[paths.Route]:
    routes = [paths.direct([resolver]), paths.socat(procs, [resolver], "udp")]
    routes += [
        paths.ours(procs, work, name, engine, [resolver], tag=f"udp-{name}", mode="udp")
        for name, engine in engines.items()
    ]
    return routes


def dnsperf(port: int, queries: Path, duration: int, *load: str) -> tuple[float, int, float]:
    """(queries/s, queries sent, % lost) of one dnsperf run."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries)]
    out = run_tool([*argv, "-l", str(duration), "-c", "4", *load], duration + 60)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    sent = re.search(r"Queries sent:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+\d+ \(([\d.]+)%\)", out)
    if qps is None or sent is None or lost is None:
        raise BenchError(f"dnsperf printed no figures: {out[-300:]}")
    return float(qps.group(1)), int(sent.group(1)), float(lost.group(1))


def measure(
    run: int, route: paths.Route, resolver: int, queries: Path, duration: int
) -> list[Sample]:
    samples = []
    port = route.public[resolver]
    for test, load in ((CLOSED_LOOP, ["-q", "50"]), (OFFERED, ["-Q", str(OFFERED_RATE)])):
        before = route.cpu()
        qps, sent, lost = dnsperf(port, queries, duration, *load)
        used = [after - b for after, b in zip(route.cpu(), before, strict=True)]
        extra = {"lost_pct": f"{lost:.2f}"}
        for side, seconds in zip(("server", "client"), used, strict=True):
            if getattr(route, f"{side}_pids"):
                extra[f"{side}_cpu_s_per_10k"] = f"{seconds / max(sent, 1) * 1e4:.3f}"
        samples.append(replace(Sample(run, route.name, test, qps), extra=tuple(extra.items())))
    return samples
