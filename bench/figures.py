"""What the benchmarks share: timing a process, percentiles, series of samples kept by round and
their paired ratios, the steady-state attach measurement (``System``, ``measure``), and the
table each ends with.

In that table each figure says what it is compared with: a peer measured alongside it in the
same run (a ratio to it, or both values), or a fixed target (a number set beforehand, which
the machine's load moves the figure against), or nothing (context)."""

from __future__ import annotations

import argparse
import math
import statistics
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


# -- series of samples, paired by turn ------------------------------------------------------


class Series:
    """The samples (ms) of one measure at one size, kept by round."""

    def __init__(self) -> None:
        self.rounds: list[list[float]] = []

    @property
    def samples(self) -> list[float]:
        return [s for r in self.rounds for s in r]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def line(self) -> str:
        per_round = [statistics.median(r) for r in self.rounds]
        return (f"median {self.median:6.2f} ms   IQR {percentile(self.samples, 25):6.2f}-"
                f"{percentile(self.samples, 75):6.2f} ms   p95 {percentile(self.samples, 95):6.2f} ms   "
                f"round medians {min(per_round):6.2f}-{max(per_round):6.2f} ms   (n={len(self.samples)})")


def paired(ours: Series, theirs: Series) -> float:
    """The median of the ratios of samples taken in the same turn (sample k of a round of one
    series and sample k of the same round of the other)."""
    return statistics.median(paired_ratios(ours.samples, theirs.samples))


def ratio(ours: Series, theirs: Series) -> str:
    """``paired``, its spread (the lowest and highest such median of one round), both medians."""
    per_round = [statistics.median(paired_ratios(a, b)) for a, b in zip(ours.rounds, theirs.rounds)]
    return (f"{paired(ours, theirs):.2f} (rounds {min(per_round):.2f}-{max(per_round):.2f}; "
            f"medians {ours.median:.1f} / {theirs.median:.1f} ms)")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


# -- steady-state attach: container #N on a bridge of N-1 ports ----------------------------


class System:
    """Something that attaches containers to one bridge of ``size``: ``fill`` (untimed) gives
    the bridge size - 1 ports, one per namespace of ``fillers``; then timed ``attach`` /
    ``detach`` of container #size, in the namespace ``probe``."""

    label = ""

    def __init__(self, size: int, fillers: list[str], probe: str) -> None:
        self.size, self.fillers, self.probe = size, fillers[:size - 1], probe

    @property
    def key(self) -> tuple[str, int]:
        return self.label, self.size

    def fill(self) -> None:
        for i in range(len(self.fillers)):
            self.add_filler(i)

    def add_filler(self, i: int) -> None:
        raise NotImplementedError

    def attach(self) -> float:
        raise NotImplementedError

    def detach(self) -> float:
        raise NotImplementedError

    def start_timing(self) -> None:
        """Forget what warm-up recorded (the timed samples start now)."""


def sampling_options(description: str, *, n: int, per_round: int, warmup: int) -> argparse.ArgumentParser:
    """A parser with the options of a steady-state measurement at two sizes (``measure``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=n, help=f"the large size (default {n})")
    parser.add_argument("--small", type=int, default=10, help="the small size (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--per-round", type=int, default=per_round,
                        help=f"samples per round, system and size (default {per_round})")
    parser.add_argument("--warmup", type=int, default=warmup,
                        help=f"untimed attach/detach cycles first (default {warmup})")
    return parser


def sample_order(systems: list, turn: int) -> list:
    """The order of sample ``turn``: the systems rotated by one each sample, so that each goes
    first in turn, and every other cycle of rotations reversed, so that each goes just before
    another as often as just after it (whoever goes just before may leave warm caches, or
    kernel work to finish, to whoever follows)."""
    n = len(systems)
    rotated = systems[turn % n:] + systems[:turn % n]
    return rotated if (turn // n) % 2 == 0 else rotated[::-1]


def measure(systems: list[System], args) -> dict[tuple[str, int], tuple[Series, Series]]:
    """(label, size) -> (attach, detach) series. Every system is filled and warmed up first;
    then ``args.rounds`` rounds of ``args.per_round`` samples, in each of which every system
    (both sizes) attaches, then every system detaches, in the order of :func:`sample_order`:
    drift over time, and what one system leaves to the next, hit every system and both sizes
    alike."""
    for s in systems:
        s.fill()
    for s in systems:
        for _ in range(args.warmup):
            s.attach()
            s.detach()
    for s in systems:
        s.start_timing()
    series = {s.key: (Series(), Series()) for s in systems}
    turn = 0
    for _ in range(args.rounds):
        for attach, detach in series.values():
            attach.rounds.append([])
            detach.rounds.append([])
        for _ in range(args.per_round):
            order = sample_order(systems, turn)
            turn += 1
            for s in order:
                series[s.key][0].rounds[-1].append(s.attach())
            for s in order:
                series[s.key][1].rounds[-1].append(s.detach())
            # a deleted link leaves the kernel work to finish after the call returns (RCU
            # callbacks, work queues): a pause, not timed, keeps it out of the next attach
            time.sleep(getattr(args, "settle", 0) / 1000)
    return series


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
