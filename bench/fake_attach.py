"""The engine's own cost of an attach as containers pile up, on the in-memory fake kernel
(tests/fakekernel.py): no kernel work, so what grows is the engine's (store, allocation,
lookups). Prints the median ``connect`` time around attach #10 and of the last ten
attaches, and their ratio. No root needed.

Usage: python bench/fake_attach.py [--n 10000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from fakekernel import FakeKernel, attach_times  # noqa: E402
from muslin.engine import Engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as root, Engine(os.path.join(root, "root"), kernel=FakeKernel()) as engine:
        engine.create_network("big", subnets=["10.64.0.0/16"])
        times = attach_times(engine, "big", n)
    early, late = statistics.median(times[5:15]), statistics.median(times[-10:])
    print(f"attach #10: {early * 1e3:.2f} ms  attach #{n}: {late * 1e3:.2f} ms  ratio {late / early:.2f}")


if __name__ == "__main__":
    main()
