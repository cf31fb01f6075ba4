"""The engine's own cost of an attach as containers pile up, on the in-memory fake kernel
(tests/fakekernel.py): no kernel work, so what grows is the engine's (store, allocation,
lookups). No root needed.

Steady state, as bench/attach.py measures the real kernel: one engine per size (10 and N), each
network already holding size - 1 containers (made untimed), and each sample connects container
#size and disconnects it again. After warm-up cycles the two sizes take turns sample by sample,
which of them goes first rotating, for several rounds: drift hits both sizes alike. The figure is
#N / #10, the median of the ratios of samples taken in the same turn, with its spread (lowest
and highest median of one round); the engine's work must stay flat up to N = 10 000.

The fake kernel's own time is taken off each sample (every call the engine makes into it is
timed): the fake is a test double, not the engine, and some of its bookkeeping is a pass over
all links (removing one, for instance), which a real kernel does not make.

Usage: python bench/fake_attach.py [--n 10000] [--small 10] [--rounds 5] [--per-round 20] [--warmup 20]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fakekernel import FakeKernel, FakeNamespace  # noqa: E402
from figures import (CONTEXT, FIXED, Row, System, measure, paired, print_summary, ratio,  # noqa: E402
                     sampling_options, timed)
from muslin.engine import Engine  # noqa: E402

GROWTH_TARGET = 1.2  # as for the real kernel's attach #1000 / #10: flat, within the noise


class TimedFakeKernel(FakeKernel):
    """A fake kernel that adds up the time (ms) of the calls made into it from outside."""

    def __init__(self):
        super().__init__()
        self.spent = 0.0


def time_fake_calls() -> None:
    """Wrap every recorded call of the fake (those ``fakekernel._call`` decorates) in a timer
    that counts only calls from outside it, as the fake records them. Idempotent; a plain
    :class:`FakeKernel` is not timed."""
    for cls in (FakeKernel, FakeNamespace):
        for name, method in list(vars(cls).items()):
            if getattr(method, "__wrapped__", None) is None or getattr(method, "times_fake", False):
                continue  # not a recorded call, or timed already
            setattr(cls, name, _timed_call(method))


def _timed_call(method):
    def call(self, *args, **kwargs):
        kernel = self._kernel if isinstance(self, FakeNamespace) else self
        outside = not kernel._depth
        start = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            if outside and isinstance(kernel, TimedFakeKernel):
                kernel.spent += (time.perf_counter() - start) * 1000

    call.__wrapped__, call.times_fake = method, True
    return call


def engine_only(kernel: TimedFakeKernel, fn, fake: list[float]) -> float:
    """Time (ms) of ``fn()`` without the time spent inside the fake kernel (appended to ``fake``)."""
    before = kernel.spent
    took = timed(fn)
    fake.append(kernel.spent - before)
    return took - fake[-1]


class FakeEngineSystem(System):
    """An engine on its own fake kernel whose network ``fill`` gives size - 1 containers, each
    in a namespace of another runtime; samples connect and disconnect container #size."""

    label = "engine on the fake kernel"

    def __init__(self, size: int, engine: Engine):
        fillers = [f"/run/netns/f{i}" for i in range(size - 1)]
        super().__init__(size, fillers, "/run/netns/probe")
        self.engine = engine
        self.start_timing()
        for path in fillers + [self.probe]:
            engine.kernel.create_netns(path)
        engine.create_network("big", subnets=["10.64.0.0/10"])

    def add_filler(self, i: int) -> None:
        self.engine.connect("big", f"c{i}", netns=self.fillers[i])

    def attach(self) -> float:
        return engine_only(self.engine.kernel, lambda: self.engine.connect("big", "probe", netns=self.probe),
                           self.fake["connect"])

    def detach(self) -> float:
        return engine_only(self.engine.kernel, lambda: self.engine.disconnect("big", "probe"), self.fake["disconnect"])

    def start_timing(self) -> None:
        self.fake: dict[str, list[float]] = {"connect": [], "disconnect": []}


def main() -> int:
    parser = sampling_options(__doc__.splitlines()[0], n=10000, per_round=20, warmup=20)
    args = parser.parse_args()
    sizes = [args.small, args.n]
    print(f"engine on the fake kernel: connect #{sizes[0]} and #{sizes[1]}, {args.rounds * args.per_round} samples "
          f"per size ({args.rounds} rounds of {args.per_round}) after {args.warmup} warm-up cycles, sizes "
          "alternating sample by sample")
    started = time.monotonic()
    time_fake_calls()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        systems = []
        for size in sizes:
            engine = stack.enter_context(Engine(os.path.join(tmp, f"root{size}"), kernel=TimedFakeKernel()))
            systems.append(FakeEngineSystem(size, engine))
        fill_started = time.monotonic()
        results = measure(systems, args)
        print(f"(filling and measuring took {time.monotonic() - fill_started:.0f} s)")
    small, large = (results[s.key] for s in systems)
    for s in systems:
        attach, detach = results[s.key]
        print(f"    connect    #{s.size:<6} {attach.line()}   (the fake's time taken off)")
        print(f"    disconnect #{s.size:<6} {detach.line()}")
    growth = paired(large[0], small[0])
    print_summary([
        Row(f"fake-kernel connect #{sizes[1]} / #{sizes[0]}", ratio(large[0], small[0]), FIXED,
            f"<= {GROWTH_TARGET}", growth <= GROWTH_TARGET),
        Row(f"fake-kernel disconnect #{sizes[1]} / #{sizes[0]}", ratio(large[1], small[1]), FIXED,
            f"<= {GROWTH_TARGET}", paired(large[1], small[1]) <= GROWTH_TARGET),
        Row(f"taken off: the fake kernel's own time, connect / disconnect, #{sizes[0]}",
            " / ".join(f"{statistics.median(systems[0].fake[v]):.3f} ms" for v in ("connect", "disconnect")), CONTEXT),
        Row(f"taken off: the fake kernel's own time, connect / disconnect, #{sizes[1]}",
            " / ".join(f"{statistics.median(systems[1].fake[v]):.3f} ms" for v in ("connect", "disconnect")), CONTEXT),
    ], "summary (a ratio: the median of the ratios of samples taken in the same turn; "
       "rounds: the lowest and highest of it in one round)")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
