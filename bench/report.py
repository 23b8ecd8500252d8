"""Same-run ratios and their medians.

Loopback figures swing with whatever else the machine does, so a ratio is only
taken between paths measured in the same run, and runs are summarised by the
median of those ratios rather than by a ratio of medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.loadgen import TESTS, Sample

OURS = "tunnel-core"
BASELINES = ("direct", "ssh-R", "socat", "stunnel")


@dataclass(frozen=True)
class Ratio:
    run: int
    test: str
    base: str
    value: float

    def as_json(self) -> dict[str, object]:
        return {
            "run": self.run,
            "test": self.test,
            "ratio": f"{OURS}/{self.base}",
            "value": self.value,
        }


@dataclass(frozen=True)
class Median:
    """`name` is a path (for a figure) or a baseline (for the ratio ours/baseline)."""

    kind: str  # "value" or "ratio"
    name: str
    test: str
    value: float
    runs: int

    def as_json(self) -> dict[str, object]:
        key = "path" if self.kind == "value" else "ratio"
        name = self.name if self.kind == "value" else f"{OURS}/{self.name}"
        return {
            "median": self.kind,
            key: name,
            "test": self.test,
            "value": self.value,
            "runs": self.runs,
        }


def ratios(samples: Sequence[Sample]) -> list[Ratio]:
    """ours/baseline for every run, test and baseline measured in that run."""
    by_key = {(s.run, s.path, s.test): s.value for s in samples}
    out: list[Ratio] = []
    for run in sorted({s.run for s in samples}):
        for test in TESTS:
            ours = by_key.get((run, OURS, test))
            for base in BASELINES:
                ref = by_key.get((run, base, test))
                if ours is not None and ref:
                    out.append(Ratio(run, test, base, round(ours / ref, 3)))
    return out


def medians(samples: Sequence[Sample], run_ratios: Sequence[Ratio]) -> list[Median]:
    """Median of each path's figures and of each same-run ratio across runs."""
    out: list[Median] = []
    for test in TESTS:
        for path in sorted({s.path for s in samples if s.test == test}):
            values = [s.value for s in samples if (s.path, s.test) == (path, test)]
            out.append(Median("value", path, test, statistics.median(values), len(values)))
        for base in BASELINES:
            values = [r.value for r in run_ratios if (r.test, r.base) == (test, base)]
            if values:
                out.append(
                    Median("ratio", base, test, round(statistics.median(values), 3), len(values))
                )
    return out


def _cell(kind: str, value: float) -> str:
    return f"{value:.2f}×" if kind == "ratio" else f"{value:,.0f}"


def table(summary: Sequence[Median]) -> str:
    """A markdown table of the medians, for people and for docs/benchmarks.md."""
    cells = {(m.kind, m.name, m.test): m.value for m in summary}
    rows = [("value", p, p) for p in (*BASELINES, OURS)]
    rows += [("ratio", b, f"{OURS}/{b}") for b in BASELINES]
    lines = ["| median | " + " | ".join(TESTS) + " |", "|---" * (len(TESTS) + 1) + "|"]
    for kind, name, label in rows:
        found = [cells.get((kind, name, t)) for t in TESTS]
        if any(v is not None for v in found):
            shown = ["-" if v is None else _cell(kind, v) for v in found]
            lines.append(f"| {label} | " + " | ".join(shown) + " |")
    return "\n".join(lines)
