"""Request/response through every path: redis-benchmark SET/GET (c50), pgbench -S (c16),
and bulk both ways, each with the CPU each side of each path spent.

Bulk transfer and a keep-alive HTTP file hide what a tunnel costs per request: a
round trip through both ends, a frame each way, a loop wake-up per message. A cache
and a database are what users put behind a tunnel, so these clients are measured
through direct, socat, `ssh -R`, stunnel and both of our engines in the same run,
with the CPU each side of each path spent per 10,000 requests. Bulk runs here too,
towards the service (`iperf3 -c`) and from it (`-R`, a download from the machine
behind the tunnel), because only these paths count sshd's CPU: CPU seconds per GB
of the exit server against sshd's is what a 1-vCPU VM's throughput depends on.
"""

from __future__ import annotations

import csv
import io
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from bench import paths
from bench.loadgen import Sample, iperf3, run_tool
from bench.procs import BenchError, Procs, free_port, is_listening, wait_for

REDIS_SET = "redis_set_c50_rps"
REDIS_GET = "redis_get_c50_rps"
PGBENCH = "pgbench_select_c16_tps"
#: iperf3 through the path towards the service, and from it (``-R``)
BULK_UP, BULK_DOWN = "bulk_to_service_MBps", "bulk_from_service_MBps"
TESTS = (REDIS_SET, REDIS_GET, PGBENCH, BULK_UP, BULK_DOWN)
#: how CPU seconds are reported per test: the field's suffix and what one count is
_PER_10K = ("per_10k", 1e4)
_PER_GB = ("per_GB", 1e9)
#: requests per redis-benchmark test and second of --duration
REDIS_REQUESTS_PER_S = 10_000
TOOLS = {
    "redis-server": "redis-server",
    "redis-benchmark": "redis-tools",
    "pgbench": "postgresql",
    "socat": "socat",
    "stunnel": "stunnel4",
}


@dataclass(frozen=True)
class Servers:
    redis: int
    postgres: int
    iperf3: int


def _postgres_bin(name: str) -> str:
    """initdb and postgres live in Debian's versioned directory, not on PATH."""
    found = shutil.which(name) or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))[-1:]), None
    )
    if found is None:
        raise BenchError(f"{name} is not installed (Debian: postgresql)")
    return found


def start_servers(procs: Procs, work: Path) -> Servers:
    """redis-server without persistence, a throwaway PostgreSQL cluster (fsync off), iperf3."""
    iperf3 = free_port()
    procs.start("rr-iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf3)])
    redis = free_port()
    procs.start(
        "redis-server",
        ["redis-server", "--bind", "127.0.0.1", "--port", str(redis), "--save", ""]
        + ["--appendonly", "no", "--protected-mode", "no", "--dir", str(work)],
    )
    pgdata, sock = work / "pgdata", work / "pgsock"
    as_postgres: list[str] = []
    work.chmod(0o711)  # the postgres user must reach pgdata
    sock.mkdir()
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
        os.chown(sock, user.pw_uid, user.pw_gid)
        pgdata.mkdir(mode=0o700)
        os.chown(pgdata, user.pw_uid, user.pw_gid)
    initdb = [*as_postgres, _postgres_bin("initdb"), "-D", str(pgdata), "-U", "postgres"]
    done = subprocess.run(
        [*initdb, "--auth=trust", "-E", "UTF8"], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise BenchError(f"initdb failed: {done.stderr.strip()[-500:]}")
    port = free_port()
    procs.start(
        "postgres",
        [*as_postgres, _postgres_bin("postgres"), "-D", str(pgdata), "-p", str(port)]
        + ["-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        + ["-c", "max_connections=200"],
    )
    for p in (redis, port, iperf3):
        wait_for(f"a server listening on port {p}", partial(is_listening, p), timeout=60)
    run_tool(["pgbench", "-i", "-q", "-s", "1", *_pg_args(port)], 120)
    return Servers(redis, port, iperf3)


def _pg_args(port: int) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"]


def redis(run: int, path: str, port: int, duration: int) -> list[tuple[Sample, int]]:
    n = REDIS_REQUESTS_PER_S * duration
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(n)]
    out = run_tool([*argv, "-t", "set,get", "--csv"], 40 * duration + 60)
    rows = {row[0]: row for row in csv.reader(io.StringIO(out)) if row and row[0] != "test"}
    try:
        return [
            (Sample(run, path, test, float(rows[op][1]), (("p99_ms", rows[op][6]),)), n)
            for op, test in (("SET", REDIS_SET), ("GET", REDIS_GET))
        ]
    except (KeyError, IndexError, ValueError) as exc:
        raise BenchError(f"redis-benchmark printed no figures for {path}: {out[-300:]}") from exc


def pgbench(run: int, path: str, port: int, duration: int) -> list[tuple[Sample, int]]:
    argv = ["pgbench", "-S", "-n", "-c", "16", "-j", "2", "-T", str(duration), *_pg_args(port)]
    out = run_tool(argv, duration + 120)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    count = re.search(r"number of transactions actually processed: (\d+)", out)
    if tps is None or count is None:
        raise BenchError(f"pgbench printed no figures for {path}: {out[-300:]}")
    return [(Sample(run, path, PGBENCH, float(tps.group(1))), int(count.group(1)))]


def bulk(
    run: int, path: str, port: int, duration: int, *, reverse: bool
) -> list[tuple[Sample, int]]:
    """MB/s, and the bytes moved (what CPU per GB is counted against)."""
    bps, moved = iperf3(path, port, duration, reverse=reverse)
    return [(Sample(run, path, BULK_DOWN if reverse else BULK_UP, round(bps / 8e6)), moved)]


Workload = Callable[[int, str, int, int], list[tuple[Sample, int]]]


def measure(run: int, route: paths.Route, servers: Servers, duration: int) -> list[Sample]:
    """Every workload through one route, with each side's CPU seconds per 10k requests
    (per GB for bulk)."""
    workloads: list[tuple[Workload, int]] = [
        (redis, servers.redis),
        (pgbench, servers.postgres),
        (partial(bulk, reverse=False), servers.iperf3),
        (partial(bulk, reverse=True), servers.iperf3),
    ]
    samples = []
    for workload, upstream in workloads:
        before = route.cpu()
        try:
            found = workload(run, route.name, route.public[upstream], duration)
        except BenchError as exc:  # a relay's fork/accept hiccup under 50 connections
            print(f"bench: {route.name}: trying again after: {exc}", file=sys.stderr)
            before = route.cpu()
            found = workload(run, route.name, route.public[upstream], duration)
        used = [after - b for after, b in zip(route.cpu(), before, strict=True)]
        count = sum(n for _, n in found)
        for sample, _ in found:
            unit, per = _PER_GB if sample.test in (BULK_UP, BULK_DOWN) else _PER_10K
            extra = dict(sample.extra)
            for side, seconds in zip(("server", "client"), used, strict=True):
                if getattr(route, f"{side}_pids"):
                    extra[f"{side}_cpu_s_{unit}"] = f"{seconds / count * per:.3f}"
            samples.append(replace(sample, extra=tuple(extra.items())))
    return samples


def start_routes(
    procs: Procs, work: Path, engines: Mapping[str, Sequence[str]], ports: Sequence[int]
) -> list[paths.Route]:
    """Every path to ``ports``; one that cannot start (no root for sshd) is reported, not fatal."""
    starters: list[tuple[str, Callable[[], paths.Route]]] = [
        ("direct", lambda: paths.direct(ports)),
        ("socat", lambda: paths.socat(procs, ports)),
        ("ssh-R", lambda: paths.ssh_r(procs, work, ports)),
        ("stunnel", lambda: paths.stunnel(procs, work, ports)),
    ]
    starters += [
        (name, partial(paths.ours, procs, work, name, engine, ports, tag=f"rr-{name}"))
        for name, engine in engines.items()
    ]
    routes = []
    for name, start in starters:
        try:
            routes.append(start())
        except BenchError as exc:
            print(f"bench: {name} not measured: {exc}", flush=True, file=sys.stderr)
    return routes


def missing_tools() -> list[str]:
    return [f"{cmd} ({pkg})" for cmd, pkg in TOOLS.items() if not shutil.which(cmd)]
