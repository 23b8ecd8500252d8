"""Same-run ratios and their medians, for both of our engines against every baseline.

Loopback figures swing with whatever else the machine does, so a ratio is only
taken between paths measured in the same run, and runs are summarised by the
median of those ratios rather than by a ratio of medians. A run that started on a
busy machine (load average above 1 on this 2-core box) is marked unreliable.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.loadgen import Sample

OURS = "tunnel-core"
#: the same engine as the VMs run it: the zipapp on the distro's python3 -I -S
PYZ = "tunnel-core-pyz"
ENGINES = (OURS, PYZ)
BASELINES = ("direct", "ssh-R", "socat", "stunnel")
#: 1-minute load average above which a run's figures are not to be trusted
BUSY_LOAD = 1.0


@dataclass(frozen=True)
class Ratio:
    run: int
    test: str
    name: str  # "ours/base"
    value: float

    def as_json(self) -> dict[str, object]:
        return {"run": self.run, "test": self.test, "ratio": self.name, "value": self.value}


@dataclass(frozen=True)
class Median:
    """`name` is a path (for a figure) or "ours/base" (for a ratio)."""

    kind: str  # "value" or "ratio"
    name: str
    test: str
    value: float
    runs: int

    def as_json(self) -> dict[str, object]:
        key = "path" if self.kind == "value" else "ratio"
        return {"median": self.kind, key: self.name, "test": self.test, "value": self.value}


def ratios(samples: Sequence[Sample], tests: Sequence[str]) -> list[Ratio]:
    """ours/baseline for every run, test, engine and baseline measured in that run."""
    by_key = {(s.run, s.path, s.test): s.value for s in samples}
    out: list[Ratio] = []
    for run in sorted({s.run for s in samples}):
        for test in tests:
            for ours in ENGINES:
                mine = by_key.get((run, ours, test))
                for base in BASELINES:
                    ref = by_key.get((run, base, test))
                    if mine is not None and ref:
                        out.append(Ratio(run, test, f"{ours}/{base}", round(mine / ref, 3)))
    return out


def medians(
    samples: Sequence[Sample], run_ratios: Sequence[Ratio], tests: Sequence[str]
) -> list[Median]:
    """Median of each path's figures and of each same-run ratio across runs."""
    out: list[Median] = []
    for test in tests:
        for path in sorted({s.path for s in samples if s.test == test}):
            values = [s.value for s in samples if (s.path, s.test) == (path, test)]
            out.append(Median("value", path, test, statistics.median(values), len(values)))
        for name in sorted({r.name for r in run_ratios if r.test == test}):
            values = [r.value for r in run_ratios if (r.test, r.name) == (test, name)]
            out.append(
                Median("ratio", name, test, round(statistics.median(values), 3), len(values))
            )
    return out


def _cell(kind: str, value: float) -> str:
    return f"{value:.2f}×" if kind == "ratio" else f"{value:,.0f}"


def table(summary: Sequence[Median], tests: Sequence[str], start_load: float) -> str:
    """A markdown table of the medians, for people and for docs/benchmarks.md."""
    cells = {(m.kind, m.name, m.test): m.value for m in summary}
    rows = [("value", p) for p in (*BASELINES, *ENGINES)]
    rows += [("ratio", f"{o}/{b}") for o in ENGINES for b in BASELINES]
    lines = []
    if start_load > BUSY_LOAD:
        lines.append(f"UNRELIABLE: the run started at load {start_load:.2f} (> {BUSY_LOAD})\n")
    lines += ["| median | " + " | ".join(tests) + " |", "|---" * (len(tests) + 1) + "|"]
    for kind, name in rows:
        found = [cells.get((kind, name, t)) for t in tests]
        if any(v is not None for v in found):
            shown = ["-" if v is None else _cell(kind, v) for v in found]
            lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines)
