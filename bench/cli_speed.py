"""How fast the CLI feels: `inletsctl --help`, and `create --provider local` until the
first byte comes back through the tunnel it made.
"""

from __future__ import annotations

import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import BenchError

INLETSCTL = Path(sys.executable).with_name("inletsctl")


def help_time(work: Path, runs: int = 10) -> dict[str, object]:
    """Median wall time of `inletsctl --help`; hyperfine when installed, else timed here."""
    argv = [str(INLETSCTL), "--help"]
    if not INLETSCTL.exists():
        raise BenchError(f"{INLETSCTL} is missing; run `make install`")
    if shutil.which("hyperfine"):
        report = work / "hyperfine.json"
        subprocess.run(
            ["hyperfine", "-N", "--warmup", "2", "--runs", str(runs), "--export-json", str(report)]
            + ["--style", "none", shlex.join(argv)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        median = json.loads(report.read_text())["results"][0]["median"]
        tool = "hyperfine"
    else:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
            times.append(time.perf_counter() - started)
        median, tool = statistics.median(times), "perf_counter"
    return {
        "test": "inletsctl_help_ms",
        "value": round(median * 1000, 1),
        "runs": runs,
        "tool": tool,
    }
