"""How long the muslin CLI takes to start, next to bare interpreters and a real peer, in one run.

A CLI command is one process, like a CNI plugin call, so its start-up is part of every
command. Each round runs every command below once, in an order that rotates from round to
round (the machine's drift hits all of them alike), after a few untimed warm-up rounds;
figures are medians (and p95, min) of the wall time of the whole process, and a ratio is the
median of the ratios of two commands' runs in the same round.

  muslin --version          the CLI, no daemon involved
  muslin network ls         the CLI asking the daemon (already running) over its socket
  python -c pass            the interpreter muslin runs on, doing nothing
  python -I -c 'import argparse' / 'import click'
                            what a CLI built on argparse or click pays before its first line
                            (click found where the base interpreter has it, imported here)
  CNI bridge VERSION        the reference CNI plugin (a Go binary, /usr/lib/cni) answering VERSION
  muslin … (baseline)       with --baseline DIR: the same two commands of another checkout of
                            muslin (DIR/bin/muslin importing DIR/src), e.g. the commit before a
                            change (`git archive HEAD~1 src bin | tar -x -C DIR`); this checkout's
                            then run the same way (python bin/muslin), so that only the code
                            differs. The daemon is this checkout's; its root has no networks, so
                            `network ls` is an empty list whatever the protocol's version.

Both checkouts are byte-compiled first, as an installed muslin is: where PYTHONDONTWRITEBYTECODE
is set, every run would otherwise compile its modules from source.

The daemon runs in a lab namespace (it programs its firewall there); nothing else touches
the kernel. The machine is shared and noisy: the ratios of one run are what counts.

Usage: python bench/startup.py [--rounds 60] [--warmup 5] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys

from figures import NOISE, Row, paired_ratios, peer, percentile, print_summary, process_ms

from muslin import kernel
from muslin.lab import Lab

CNI_BRIDGE = "/usr/lib/cni/bridge"
CHECKOUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OURS = ("muslin --version", "muslin network ls")


def muslin_command() -> list[str]:
    """The installed ``muslin`` script next to this interpreter (what users run), else bin/muslin."""
    installed = os.path.join(os.path.dirname(sys.executable), "muslin")
    if os.path.exists(installed):
        return [installed]
    return [sys.executable, os.path.join(os.path.dirname(__file__), "..", "bin", "muslin")]


def import_line(module: str) -> str | None:
    """Python code that imports ``module`` in this interpreter: the plain import when it is
    installed here, else the import after adding the directory the base interpreter finds it in
    to ``sys.path`` (this interpreter, not that one: its start-up, site files included, is
    muslin's); None when neither has it."""
    if subprocess.run([sys.executable, "-I", "-c", f"import {module}"], capture_output=True).returncode == 0:
        return f"import {module}"
    base = getattr(sys, "_base_executable", sys.executable)
    found = subprocess.run([base, "-I", "-c", f"import os, {module}; "
                            f"print(os.path.dirname(os.path.dirname({module}.__file__)))"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        return None
    return f"import sys; sys.path.append({found.stdout.strip()!r}); import {module}"


def checkout_command(checkout: str) -> tuple[list[str], dict]:
    """``python CHECKOUT/bin/muslin`` importing muslin from CHECKOUT/src, and its environment."""
    src = os.path.join(checkout, "src")
    return ([sys.executable, os.path.join(checkout, "bin", "muslin")],
            dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", "")))


def commands(root: str, baseline: str | None = None) -> dict[str, tuple[list[str], str | None, dict | None]]:
    """label: (argv, stdin, environment); None environment: this process's."""
    muslin, env = muslin_command(), None
    if baseline is not None:
        muslin, env = checkout_command(CHECKOUT)
    out = {
        "muslin --version": (muslin + ["--version"], None, env),
        "muslin network ls": (muslin + ["--root", root, "network", "ls"], None, env),
        "python -c pass": ([sys.executable, "-c", "pass"], None, None),
        "python -I -c 'import argparse'": ([sys.executable, "-I", "-c", "import argparse"], None, None),
    }
    click = import_line("click")
    if click is not None:
        out["python -I -c 'import click'"] = ([sys.executable, "-I", "-c", click], None, None)
    if os.path.exists(CNI_BRIDGE):
        env = {"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", "")}
        out["CNI bridge VERSION"] = ([CNI_BRIDGE], '{"cniVersion":"1.0.0"}', env)
    if baseline is not None:
        base, base_env = checkout_command(baseline)
        out["muslin --version (baseline)"] = (base + ["--version"], None, base_env)
        out["muslin network ls (baseline)"] = (base + ["--root", root, "network", "ls"], None, base_env)
    return out


def measure(cmds: dict, rounds: int, warmup: int) -> dict[str, list[float]]:
    labels = list(cmds)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(warmup + rounds):
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:  # who goes first rotates
            argv, stdin, env = cmds[label]
            took = process_ms(argv, env=env, stdin=stdin)
            if r >= warmup:
                times[label].append(took)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="timed rounds (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--baseline", metavar="DIR", help="another checkout of muslin to compare with")
    args = parser.parse_args()
    for checkout in filter(None, (CHECKOUT, args.baseline)):
        compileall.compile_dir(os.path.join(checkout, "src", "muslin"), quiet=1)
    with Lab(name="startup") as lab:
        host = lab.host("host")
        kernel.setns(host.netns)  # the daemon started below lives in the lab host
        cmds = commands(host.root, args.baseline)
        argv, _, env = cmds["muslin network ls"]
        process_ms(argv, env=env)  # starts the daemon
        print(f"process start-up, wall time; {args.rounds} rounds after {args.warmup} warm-up rounds, "
              f"commands alternating.\n{NOISE}\n")
        times = measure(cmds, args.rounds, args.warmup)
    med = {label: statistics.median(t) for label, t in times.items()}
    width = max(map(len, times))
    for label, t in times.items():
        print(f"  {label:{width}}  median {med[label]:6.2f} ms   p95 {percentile(t, 95):6.2f} ms   "
              f"min {min(t):6.2f} ms   (n={len(t)})")
    rows = []
    for ours in OURS:
        for other in (f"{ours} (baseline)", "python -c pass", "python -I -c 'import click'", "CNI bridge VERSION"):
            if other in med:
                ratio = statistics.median(paired_ratios(times[ours], times[other]))
                rows.append(Row(f"{ours} / {other}", f"{ratio:.2f} (medians {med[ours]:.1f} / {med[other]:.1f} ms)",
                                peer(other)))
    print_summary(rows, "summary (a ratio: the median of the ratios of the two commands' runs in one round)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
