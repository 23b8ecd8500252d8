"""`python -m bench`: every benchmark in one run, JSON lines on stdout.

Progress goes to stderr; each figure is one JSON object per line on stdout, then the
same-run ratios, then their medians, then a markdown table of the medians (stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench import anchors, loadgen, report, reqresp, udp
from bench.cli_speed import create_to_first_byte, help_time
from bench.idle import idle_connections
from bench.procs import BenchError, Procs
from bench.stall import stalled_reader
from bench.tunnel import start_tunnel
from bench.upstreams import start_upstreams

SECTIONS = ("throughput", "reqresp", "udp", "idle", "stall", "cli")
# The throughput section needs these commands (Debian package in brackets).
TOOLS = {"iperf3": "iperf3", "wrk": "wrk", "hey": "hey", "nginx": "nginx-light"}


class Overtime(BenchError):
    """The whole run passed --max-seconds: stop everything, not just one section."""


def emit(doc: dict[str, object]) -> None:
    print(json.dumps(doc), flush=True)


def progress(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__)
    p.add_argument(
        "--runs",
        type=int,
        default=int(os.environ.get("BENCH_RUNS", "3")),
        help="same-run repetitions of the throughput section (default 3, BENCH_RUNS)",
    )
    p.add_argument(
        "--duration",
        type=int,
        default=int(os.environ.get("DUR", "5")),
        help="seconds per iperf3/wrk measurement, as the anchor script's DUR (default 5)",
    )
    p.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default {','.join(SECTIONS)})",
    )
    p.add_argument("--anchors", help="path of anchors.sh (default ../shared/bench/anchors.sh)")
    p.add_argument(
        "--engine",
        default=f"{shlex.quote(sys.executable)} -m tunnel_core",
        help="command that runs the installed tunnel-core (path tunnel-core)",
    )
    p.add_argument(
        "--pyz-engine",
        default="",
        help="command that runs the engine as the VMs do (path tunnel-core-pyz; default: "
        "/usr/bin/python3 -I -S on a tunnel-core.pyz built from this tree; 'none' skips it)",
    )
    p.add_argument("--idle-connections", type=int, default=10_000)
    p.add_argument("--stall-bytes", type=int, default=1 << 30)
    p.add_argument("--max-seconds", type=int, default=3600, help="abort the whole run after this")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        p.error(
            f"--only: unknown section(s) {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    if args.runs < 1 or args.duration < 1:
        p.error("--runs and --duration must be at least 1")
    return args


def engines(args: argparse.Namespace) -> dict[str, list[str]]:
    """Both engines, as first-class columns: installed, and the pyz as a VM runs it."""
    found = {report.OURS: shlex.split(args.engine)}
    if args.pyz_engine == "none":
        return found
    if args.pyz_engine:
        found[report.PYZ] = shlex.split(args.pyz_engine)
    elif Path("/usr/bin/python3").exists():
        from inletsctl import release

        found[report.PYZ] = ["/usr/bin/python3", "-I", "-S", str(release.local_pyz())]
    else:
        progress("no /usr/bin/python3: the pyz engine is not measured")
    return found


def summarise(samples: list[loadgen.Sample], tests: tuple[str, ...], start_load: float) -> None:
    summary = report.medians(samples, report.ratios(samples, tests), tests)
    for m in summary:
        emit(m.as_json())
    print(report.table(summary, tests, start_load), file=sys.stderr, flush=True)


def request_response(
    procs: Procs, work: Path, args: argparse.Namespace, ours: dict[str, list[str]]
) -> None:
    missing = reqresp.missing_tools()
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run bench/run.sh as root to install them")
    servers = reqresp.start_servers(procs, work)
    routes = reqresp.start_routes(
        procs, work, ours, [servers.redis, servers.postgres, servers.iperf3]
    )
    samples: list[loadgen.Sample] = []
    for run in range(1, args.runs + 1):
        run_samples: list[loadgen.Sample] = []
        for route in routes:
            progress(f"run {run}/{args.runs}: redis-benchmark, pgbench through {route.name}")
            try:
                run_samples += reqresp.measure(run, route, servers, args.duration)
            except Overtime:
                raise
            except BenchError as exc:  # twice: socat's forks reset under 50 connections
                progress(f"run {run}/{args.runs}: {route.name} not measured: {exc}")
                emit({"run": run, "path": route.name, "note": f"not measured: {exc}"})
        for s in run_samples:
            emit(s.as_json())
        for r in report.ratios(run_samples, reqresp.TESTS):
            emit(r.as_json())
        samples += run_samples
    summarise(samples, reqresp.TESTS, args.start_load)


def datagrams(
    procs: Procs, work: Path, args: argparse.Namespace, ours: dict[str, list[str]]
) -> None:
    missing = udp.missing_tools()
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run bench/run.sh as root to install them")
    resolver, queries = udp.start_resolver(procs, work)
    routes = udp.start_routes(procs, work, ours, resolver)
    samples: list[loadgen.Sample] = []
    for run in range(1, args.runs + 1):
        run_samples: list[loadgen.Sample] = []
        for route in routes:
            progress(f"run {run}/{args.runs}: dnsperf through {route.name}")
            run_samples += udp.measure(run, route, resolver, queries, args.duration)
        for s in run_samples:
            emit(s.as_json())
        for r in report.ratios(run_samples, udp.TESTS):
            emit(r.as_json())
        samples += run_samples
    summarise(samples, udp.TESTS, args.start_load)


def throughput(
    procs: Procs, work: Path, args: argparse.Namespace, ours: dict[str, list[str]]
) -> None:
    missing = [f"{cmd} ({pkg})" for cmd, pkg in TOOLS.items() if not shutil.which(cmd)]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run bench/run.sh as root to install them")
    script = anchors.locate(args.anchors)
    if script is None:
        progress(f"no anchor script at {anchors.DEFAULT}: measuring direct and tunnel-core only")
        emit({"note": "anchors.sh absent: socat, ssh -R and stunnel not measured"})
    up = start_upstreams(procs, work)
    tunnels = {
        name: start_tunnel(procs, work, cmd, [up.iperf3_port, up.http_port], f"throughput-{name}")
        for name, cmd in ours.items()
    }
    samples: list[loadgen.Sample] = []
    for run in range(1, args.runs + 1):
        run_samples: list[loadgen.Sample] = []
        if script is not None:
            progress(f"run {run}/{args.runs}: anchors (direct, socat, ssh -R, stunnel)")
            found, notes = anchors.run_anchors(procs, script, run, args.duration)
            run_samples += found
            for note in notes:
                emit({"run": run} | json.loads(note))
        else:
            progress(f"run {run}/{args.runs}: direct")
            run_samples += loadgen.measure(
                run, "direct", up.iperf3_port, up.http_port, args.duration
            )
        for name, tunnel in tunnels.items():
            progress(f"run {run}/{args.runs}: {name}")
            pub = tunnel.public
            sides = (("server", [tunnel.server.pid]), ("client", [tunnel.client.pid]))
            run_samples += loadgen.measure(
                run, name, pub[up.iperf3_port], pub[up.http_port], args.duration, sides
            )
        for s in run_samples:
            emit(s.as_json())
        for r in report.ratios(run_samples, loadgen.TESTS):
            emit(r.as_json())
        samples += run_samples
    summarise(samples, loadgen.TESTS, args.start_load)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    engine = shlex.split(args.engine)

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def overtime(_signum: int, _frame: FrameType | None) -> None:
        raise Overtime(f"the run took longer than --max-seconds {args.max_seconds}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGALRM, overtime)
    signal.alarm(args.max_seconds)
    work = Path(tempfile.mkdtemp(prefix="tunnel-bench-"))
    work.chmod(0o711)  # nginx's and PostgreSQL's users must reach their directories below
    procs = Procs(work)
    only = args.only.split(",")
    args.start_load = os.getloadavg()[0]
    if args.start_load > report.BUSY_LOAD:
        progress(f"load average {args.start_load:.2f} at start: figures of this run are unreliable")
    ours = engines(args)

    def stall() -> None:
        for direction in ("upload", "download"):
            emit(stalled_reader(procs, work, engine, direction, args.stall_bytes))

    def cli() -> None:
        emit(help_time(work))
        emit(create_to_first_byte(procs, work, engine))

    sections: dict[str, Callable[[], None]] = {
        "throughput": lambda: throughput(procs, work / "throughput", args, ours),
        "reqresp": lambda: request_response(procs, work / "reqresp", args, ours),
        "udp": lambda: datagrams(procs, work / "udp", args, ours),
        "idle": lambda: emit(idle_connections(procs, work, engine, args.idle_connections)),
        "stall": stall,
        "cli": cli,
    }
    started = time.monotonic()
    emit(
        {
            "note": "machine at start",
            "cpus": os.cpu_count(),
            "loadavg_1m": args.start_load,
            "reliable": args.start_load <= report.BUSY_LOAD,
        }
    )
    failed: list[str] = []
    try:
        for name in SECTIONS:
            if name not in only:
                continue
            progress(f"section {name}")
            if name in ("throughput", "reqresp", "udp"):
                (work / name).mkdir()
            try:
                sections[name]()
            except Overtime:
                raise
            except BenchError as exc:  # the other sections can still tell something
                failed.append(name)
                print(f"bench: error in {name}: {exc}", file=sys.stderr)
                procs.close()
    except Overtime as exc:
        print(f"bench: error: {exc}\nbench: logs are in {work}", file=sys.stderr)
        return 1
    finally:
        procs.close()
        signal.alarm(0)
    emit({"note": "machine at end", "loadavg_1m": os.getloadavg()[0]})
    if failed:
        print(f"bench: {', '.join(failed)} failed; logs are in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    progress(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
