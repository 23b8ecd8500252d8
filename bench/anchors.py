"""The reference tunnels (direct, socat, `ssh -R`, stunnel), measured by the shared
anchor script in the same run as ours so that ratios compare like with like.

The script lives beside the repository (`../shared/bench/anchors.sh`); `--anchors`
or `BENCH_ANCHORS` point elsewhere. Without it the bench still runs and measures
direct loopback itself, so only the ratios to the other tunnels are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.loadgen import Sample
from bench.procs import BenchError, Procs

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "bench" / "anchors.sh"


def locate(explicit: str | None) -> Path | None:
    """The anchor script to run, or None when it is absent (the caller says so)."""
    chosen = explicit or os.environ.get("BENCH_ANCHORS")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise BenchError(f"anchor script {path} does not exist (fix --anchors/BENCH_ANCHORS)")
        return path
    return DEFAULT if DEFAULT.is_file() else None


def run_anchors(
    procs: Procs, script: Path, run: int, duration: int, attempts: int = 3
) -> tuple[list[Sample], list[str]]:
    """Run the script; returns its figures and its notes (lines without a figure).

    Its `ssh -R` now and then fails to bind a forwarded port on a busy machine
    ("port 35201 never opened"), so a failed run is tried again, `attempts` times
    in all, before the bench gives up.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _run_once(procs, script, run, duration)
        except BenchError as exc:
            if attempt == attempts:
                raise
            print(f"bench: anchors failed, trying again: {exc}", file=sys.stderr)
    raise AssertionError("unreachable")


def _run_once(
    procs: Procs, script: Path, run: int, duration: int
) -> tuple[list[Sample], list[str]]:
    # Under `Procs`, an interrupted bench ends the script and, through its process
    # group, the iperf3/wrk/hey it waits for; its own trap then stops its servers.
    name = f"anchors-{run}"
    proc = procs.start(
        name, ["bash", str(script)], env=os.environ | {"DUR": str(duration)}, stdout_pipe=True
    )
    try:
        out, _ = proc.communicate(timeout=40 * duration + 300)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{script} did not finish in time") from exc
    finally:
        procs.stop(proc)
    if proc.returncode != 0:
        raise BenchError(f"{script} failed ({proc.returncode}): {procs.log(name).strip()[-300:]}")
    samples: list[Sample] = []
    notes: list[str] = []
    for line in out.decode().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if {"path", "test", "value"} <= doc.keys():
            extra = tuple((k, str(v)) for k, v in doc.items() if k not in {"path", "test", "value"})
            samples.append(Sample(run, doc["path"], doc["test"], float(doc["value"]), extra))
        else:
            notes.append(line)
    return samples, notes
