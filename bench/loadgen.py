"""The three load tools, with the parameters of the anchor script.

Ours must be measured exactly like socat, `ssh -R` and stunnel for a ratio to mean
anything, so these wrappers fix the same arguments: iperf3 single-stream bulk for
DUR seconds, wrk -t2 -c50 on the 100-byte file, hey -n 2000 -c 50 without keep-alive.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from bench.procs import BenchError, tree_cpu_seconds

BULK = "bulk_1stream_MBps"
HTTP = "http_small_c50_rps"
NEWCONN = "http_newconn_rps"
TESTS = (BULK, HTTP, NEWCONN)


@dataclass(frozen=True)
class Sample:
    """One figure: `path` is what was measured (direct, socat, tunnel-core, ...)."""

    run: int
    path: str
    test: str
    value: float
    extra: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"run": self.run, "path": self.path, "test": self.test, "value": self.value} | dict(
            self.extra
        )


def run_tool(argv: list[str], timeout: float) -> str:
    """stdout of a load tool; a missing tool, a time-out or a failure is a BenchError."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise BenchError(f"{argv[0]} is not installed (bench/run.sh installs it)") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} took longer than {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def iperf3(path: str, port: int, duration: int, *, reverse: bool = False) -> tuple[float, int]:
    """One iperf3 stream through ``path`` (``-R``: from the server): (bits/s, bytes moved)."""
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(duration), "-J"]
    out = run_tool([*argv, *(["-R"] if reverse else [])], duration + 30)
    try:
        received = json.loads(out)["end"]["sum_received"]
        return float(received["bits_per_second"]), int(received["bytes"])
    except (ValueError, KeyError) as exc:  # iperf3 -J exits 0 and puts an error in the JSON
        raise BenchError(f"iperf3 through {path} failed: {out[-300:]}") from exc


def bulk(run: int, path: str, port: int, duration: int) -> Sample:
    bps, _ = iperf3(path, port, duration)
    return Sample(run, path, BULK, round(bps / 8e6))


def http_small(run: int, path: str, port: int, duration: int) -> Sample:
    url = f"http://127.0.0.1:{port}/small"
    out = run_tool(["wrk", "-t2", "-c50", f"-d{duration}s", "--latency", url], duration + 30)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if rps is None or p99 is None:
        raise BenchError(f"wrk printed no figures for {path}: {out[-500:]}")
    extra = [("p99", p99.group(1))]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        extra.append(("non_2xx", errors.group(1)))
    return Sample(run, path, HTTP, float(rps.group(1)), tuple(extra))


def new_connections(run: int, path: str, port: int) -> Sample:
    url = f"http://127.0.0.1:{port}/small"
    out = run_tool(["hey", "-n", "2000", "-c", "50", "-disable-keepalive", url], 120)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise BenchError(f"hey printed no figures for {path}: {out[-500:]}")
    failed = sum(
        int(n) for n in re.findall(r"^\s+\[(\d+)\]", out.split("Error distribution:")[-1], re.M)
    )
    extra = (("errors", str(failed)),) if "Error distribution:" in out else ()
    return Sample(run, path, NEWCONN, float(rps.group(1)), extra)


def measure(
    run: int,
    path: str,
    bulk_port: int,
    http_port: int,
    duration: int,
    sides: Sequence[tuple[str, Sequence[int]]] = (),
) -> list[Sample]:
    """The three tests against one path, in the anchor script's order.

    With `sides` (("server", pids), ("client", pids)), each figure also carries each
    side's CPU use during the test, in % of one core, and for bulk its CPU seconds per
    GB moved: on a 1-vCPU exit server, CPU per byte is what caps sustained throughput.
    """
    tests: list[Callable[[], Sample]] = [
        partial(bulk, run, path, bulk_port, duration),
        partial(http_small, run, path, http_port, duration),
        partial(new_connections, run, path, http_port),
    ]
    samples = []
    for test in tests:
        before = [sum(map(tree_cpu_seconds, pids)) for _, pids in sides]
        started = time.monotonic()
        sample = test()
        elapsed = time.monotonic() - started
        extra = list(sample.extra)
        for (side, pids), was in zip(sides, before, strict=True):
            used = sum(map(tree_cpu_seconds, pids)) - was
            extra.append((f"{side}_cpu_pct", str(round(100 * used / elapsed))))
            if sample.test == BULK and sample.value:
                gigabytes = sample.value * duration / 1e3
                extra.append((f"{side}_cpu_s_per_GB", f"{used / gigabytes:.2f}"))
        samples.append(replace(sample, extra=tuple(extra)))
    return samples
