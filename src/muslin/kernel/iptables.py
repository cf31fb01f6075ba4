"""muslin's own accept rules in iptables' ``filter FORWARD`` chain (the fabric agent's, as Flannel's).

dockerd sets the policy of iptables' ``FORWARD`` chain to DROP. An accept in muslin's nftables
tables cannot overrule that: every base chain on the forward hook must accept a packet, and a
drop in any of them is final. So the agent does what Flannel does: it appends
``-s NETWORK -j ACCEPT`` and ``-d NETWORK -j ACCEPT`` to ``FORWARD`` (iptables for IPv4,
ip6tables for IPv6), each carrying a comment that names it as muslin's, and puts them back when
they are gone. Only rules with that comment are ever changed or removed here.

Why the ``iptables``/``ip6tables`` commands and not libnftables, as everywhere else in this
layer: on this kind of machine iptables is iptables-nft, whose rules live in the nftables table
``ip filter`` but are written with xtables expressions (``comment``, and the layout the tool
expects). A rule added there with libnftables' own expressions makes ``iptables -S`` refuse the
whole chain ("is incompatible, use 'nft' tool") -- users and dockerd itself would no longer be
able to read or edit it. The commands keep the chain in iptables' own format; they also work with
iptables-legacy. A check is one ``-S`` listing per family (a few milliseconds), made every few
seconds by the agent, so the process per call costs nothing worth saving.

The functions run in the calling thread's network namespace: call them through
``Namespace.run`` (a child process inherits the namespace of the thread that forks it).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from ipaddress import IPv4Network, IPv6Network

from muslin.errors import KernelError

__all__ = ["forward_accepts", "ensure_forward_accepts", "remove_forward_accepts", "forward_chain"]

CHAIN = "FORWARD"
TOOLS = {4: "iptables", 6: "ip6tables"}


def forward_accepts(network: IPv4Network | IPv6Network, comment: str) -> list[list[str]]:
    """The two rule specifications that let ``network``'s traffic be forwarded, as ``iptables -S``
    prints them (after ``-A FORWARD``)."""
    tail = ["-m", "comment", "--comment", comment, "-j", "ACCEPT"]
    return [["-s", str(network), *tail], ["-d", str(network), *tail]]


def _iptables(version: int, *args: str) -> str:
    tool = TOOLS[version]
    if shutil.which(tool) is None:
        raise KernelError(f"{tool} is not installed: cannot add the FORWARD accept rules "
                          f"(install the Debian package iptables, or give --iptables-forward-rules=false)")
    try:
        done = subprocess.run([tool, "-w", "5", *args], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise KernelError(f"{tool} {' '.join(args)}: no answer in 30 s") from None
    if done.returncode != 0:
        raise KernelError(f"{tool} {shlex.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def forward_chain(version: int) -> list[list[str]]:
    """``FORWARD``'s rules (the specifications after ``-A FORWARD``), in order; its policy is left out."""
    rules = []
    for line in _iptables(version, "-S", CHAIN).splitlines():
        words = shlex.split(line)
        if words[:2] == ["-A", CHAIN]:
            rules.append(words[2:])
    return rules


def _ours(rule: list[str], comment: str) -> bool:
    return any(rule[i:i + 2] == ["--comment", comment] for i in range(len(rule) - 1))


def ensure_forward_accepts(networks: list[IPv4Network | IPv6Network], comment: str) -> list[str]:
    """Make muslin's rules of ``comment`` in ``FORWARD`` exactly the accepts of ``networks``,
    in order, for both families; another's rules are left alone, whatever they do. When one of
    ours is missing or out of order, all of ours go and come back at the end of the chain (as
    Flannel does). Returns what was done, for the log (empty: all was right)."""
    done = []
    for version in (4, 6):
        wanted = [rule for net in networks if net.version == version for rule in forward_accepts(net, comment)]
        if not wanted and shutil.which(TOOLS[version]) is None:
            continue  # nothing to add, and nothing of ours can be there
        present = [rule for rule in forward_chain(version) if _ours(rule, comment)]
        if present == wanted:
            continue
        for rule in present:
            _iptables(version, "-D", CHAIN, *rule)
        for rule in wanted:
            _iptables(version, "-A", CHAIN, *rule)
        nets = ", ".join(str(n) for n in networks if n.version == version)
        done.append(f"{TOOLS[version]}: {CHAIN} accepts {nets}" if wanted
                    else f"{TOOLS[version]}: removed {len(present)} {CHAIN} rules of an earlier network")
    return done


def remove_forward_accepts(comment: str) -> int:
    """Delete muslin's rules of ``comment`` from ``FORWARD`` (both families); how many there were.
    Idempotent; a family without the command has none."""
    removed = 0
    for version, tool in TOOLS.items():
        if shutil.which(tool) is None:
            continue
        for rule in forward_chain(version):
            if _ours(rule, comment):
                _iptables(version, "-D", CHAIN, *rule)
                removed += 1
    return removed
