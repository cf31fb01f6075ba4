"""What the benchmarks share: timing a process, percentiles, and the table each ends with.

In that table each figure says what it is compared with: a peer measured alongside it in the
same run (a ratio to it, or both values), or a fixed target (a number set beforehand, which
the machine's load moves the figure against), or nothing (context)."""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass

FIXED = "fixed target"
CONTEXT = "-"
NOISE = ("The machine is shared and noisy (2 cores, other work running): absolute figures drift "
         "from run to run; the ratios to a peer measured in the same run are what counts.")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an observed value, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def paired_ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """The ratios of samples taken in the same turn (the k-th of each): drift between turns,
    which a shared machine has plenty of, hits both sides of each ratio alike."""
    return [a / b for a, b in zip(ours, theirs)]


def process_ms(argv: list[str], *, env: dict | None = None, stdin: str | None = None) -> float:
    """Wall time (ms) of one process from start to exit; a failing one ends the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True)
    took = (time.perf_counter() - start) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return took


def peer(what: str) -> str:
    """The basis of a figure compared with ``what``, measured alongside in the same run."""
    return f"peer: {what}"


@dataclass
class Row:
    figure: str
    value: str
    basis: str  # peer(...), FIXED or CONTEXT
    target: str = "-"
    met: bool | None = None  # None: no target, shown for context


def print_summary(rows: list[Row], title: str = "summary") -> None:
    widths = [max(len(header), *(len(getattr(r, field)) for r in rows))
              for header, field in (("figure", "figure"), ("value", "value"), ("compared with", "basis"),
                                    ("target", "target"))]
    print(f"\n== {title}")
    print("  " + "  ".join(h.ljust(w) for h, w in zip(("figure", "value", "compared with", "target"), widths))
          + "  met")
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        print("  " + "  ".join(v.ljust(w) for v, w in zip((r.figure, r.value, r.basis, r.target), widths))
              + f"  {met}")
    print(f"  ({peer('X')}: X measured alongside, alternating, in this run; {FIXED}: a number set beforehand)")
    print(f"  {NOISE}")
