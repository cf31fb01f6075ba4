"""IPsec (xfrm) for encrypted overlay networks: ESP in transport mode between two hosts' VTEPs.

What muslin writes here, and the only xfrm objects it ever changes or removes:

* security associations (``ip xfrm state``) with reqid :data:`REQID`: one per direction and key, ``rfc4106(gcm(aes))`` with a 64-bit
  ICV, in transport mode, without a selector or a mark of their own;
* outbound policies (``ip xfrm policy``, ``dir out``) for UDP to the VXLAN port between two
  VTEPs that carry the fwmark :data:`MARK` (set by nftables on the encrypted VNIs' packets
  only, so the clear overlays of the same hosts stay clear), whose template names the SPI of
  the current key — the kernel then takes that one SA. Inbound needs no policy: an ESP packet
  finds its SA by SPI; clear VXLAN of an encrypted VNI is dropped by nftables instead.

Why ``ip xfrm`` (iproute2) and not xfrm_user netlink spoken directly: pyroute2 has no xfrm API,
and a hand-made binding of ``xfrm_usersa_info`` / ``xfrm_userpolicy_info`` (selectors,
lifetimes, algorithm attributes) would be a few hundred lines of packing to get wrong, for
calls made only when a host, a network or a key changes. The command takes its commands on
stdin (``ip -batch -``), so a key never appears on a command line other users can read; it
runs in the calling thread's network namespace (call these functions through
``Namespace.run`` or the Namespace's methods, as ``iptables`` is driven).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from dataclasses import dataclass, field

from muslin.errors import KernelError

__all__ = ["SA", "Policy", "REQID", "MARK", "SPI_BASE", "AEAD", "esp_missing", "states", "policies", "plan",
           "apply"]

REQID = 0x6D75736C          # "musl": muslin's states and policies carry it, nobody else's are touched
MARK = 0x6D75736C           # the fwmark of an encrypted VNI's outgoing VXLAN packet
SPI_BASE = 0x00000100       # muslin's SPIs: 31 bits from here (0-255 are reserved); a host's inbound
SPI_MASK = 0x7FFFFFFF       # SAs share one destination, so their SPIs must differ: the wider the better
AEAD = "rfc4106(gcm(aes))"  # Docker's: AES-GCM, 128-bit key + 32-bit salt
ICV_BITS = 64               # Docker's too: ESP then adds 26 bytes to a full frame, the 1424 of its MTU
REPLAY_WINDOW = 64          # packets captured on the wire are not taken twice
PROBE_SPI = 0x6DFFFFFF
SECRET_HEX = 40             # 160 bits: the AES key and the salt
_SECRET = re.compile(f"[0-9a-f]{{{SECRET_HEX}}}")
_LONG_HEX = re.compile(r"0x[0-9a-fA-F]{16,}")


def _checked_pair(src: str, dst: str, spi: int) -> None:
    """Every value that goes into a batch line is checked first: an address is an address of
    one family and an SPI a number (a VTEP comes from the cluster's store; a line break in
    one would be a command of its own to ``ip -batch``)."""
    try:
        a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    except ValueError:
        raise KernelError(f"ip xfrm: not a pair of addresses: {src!r} -> {dst!r}") from None
    if a.version != b.version or str(a) != src or str(b) != dst:
        raise KernelError(f"ip xfrm: not a pair of addresses of one family: {src!r} -> {dst!r}")
    if not isinstance(spi, int) or not 0x100 <= spi <= 0xFFFFFFFF:
        raise KernelError(f"ip xfrm: SPI out of range: {spi!r}")


@dataclass(frozen=True, order=True)
class SA:
    """One direction's ESP state, ``src`` -> ``dst``. ``secret`` (key + salt, hex) is left
    out of comparisons and of ``repr``: it is never logged, and the kernel's list is not read
    for it."""

    src: str
    dst: str
    spi: int
    secret: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        _checked_pair(self.src, self.dst, self.spi)
        if self.secret and not _SECRET.fullmatch(self.secret):
            raise KernelError(f"ip xfrm: the key of SA {self.spi:#010x} is not {SECRET_HEX} hexadecimal digits")


@dataclass(frozen=True, order=True)
class Policy:
    """The outbound policy ``src`` -> ``dst`` (VXLAN, marked), through the SA of ``spi``."""

    src: str
    dst: str
    spi: int
    port: int = 4789

    def __post_init__(self) -> None:
        _checked_pair(self.src, self.dst, self.spi)
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise KernelError(f"ip xfrm: port out of range: {self.port!r}")


def spi_of(value: int) -> int:
    """An SPI in muslin's range from any number (a digest)."""
    return SPI_BASE + value % (SPI_MASK - SPI_BASE + 1)


def _ip(commands: list[str]) -> str:
    """Run ``ip -batch -`` with ``commands`` on stdin; KernelError with ip's reason."""
    try:
        # -force: a line that fails (a state a collision left behind) stops none after it
        done = subprocess.run(["ip", "-force", "-batch", "-"], input="\n".join(commands) + "\n",
                              capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise KernelError("ip (iproute2) is not installed: cannot program IPsec") from None
    except subprocess.TimeoutExpired:
        raise KernelError("ip xfrm: no answer in 30 s") from None
    if done.returncode != 0:
        # ip names the failed line ("Command failed -:3"): only the reason, never the line's key
        reason = " ".join(_LONG_HEX.sub("0x…", line) for line in done.stderr.strip().splitlines()
                          if not line.startswith("Command failed"))
        raise KernelError(f"ip xfrm: {reason or f'exit {done.returncode}'}")
    return done.stdout


def _state_add(sa: SA) -> str:
    return (f"xfrm state add src {sa.src} dst {sa.dst} proto esp spi {sa.spi:#010x} reqid {REQID} mode transport "
            f"replay-window {REPLAY_WINDOW} aead '{AEAD}' 0x{sa.secret} {ICV_BITS}")


def _state_delete(sa: SA) -> str:
    return f"xfrm state delete src {sa.src} dst {sa.dst} proto esp spi {sa.spi:#010x}"


def _selector(p: Policy) -> str:
    return f"src {p.src} dst {p.dst} proto udp dport {p.port} dir out mark {MARK:#x} mask 0xffffffff"


def _policy_put(p: Policy) -> str:
    return (f"xfrm policy update {_selector(p)} tmpl src {p.src} dst {p.dst} proto esp spi {p.spi:#010x} "
            f"reqid {REQID} mode transport")


def _policy_delete(p: Policy) -> str:
    return f"xfrm policy delete {_selector(p)}"


def esp_missing() -> str | None:
    """None when this kernel can make an ESP state (AES-GCM, transport mode), else why not. The
    probe adds one state on loopback and deletes it again: it leaves nothing."""
    probe = SA("127.0.0.1", "127.0.0.1", PROBE_SPI, "00" * 20)
    try:
        _ip([_state_add(probe)])
    except KernelError as exc:
        if "File exists" not in str(exc):  # (it does: a probe cut short earlier; ESP works)
            return str(exc)
    _ip([_state_delete(probe)])
    return None


_STATE = re.compile(r"^src (\S+) dst (\S+)\n\s+proto esp spi (0x[0-9a-f]+) reqid (\d+) mode", re.M)
_POLICY = re.compile(r"^src (\S+)/\d+ dst (\S+)/\d+ proto udp dport (\d+)\s*\n\s+dir out[^\n]*\n"
                     r"\s+mark (0x[0-9a-f]+)/0xffffffff\s*\n\s+tmpl src \S+ dst \S+\s*\n"
                     r"\s+proto esp spi (0x[0-9a-f]+) reqid (\d+) mode transport", re.M)


def parse_states(text: str) -> set[SA]:
    """muslin's states in ``ip xfrm state list``'s output (its reqid)."""
    return {SA(src, dst, int(spi, 16)) for src, dst, spi, reqid in _STATE.findall(text) if int(reqid) == REQID}


def parse_policies(text: str) -> set[Policy]:
    """muslin's outbound policies in ``ip xfrm policy list``'s output (its mark and reqid)."""
    return {Policy(src, dst, int(spi, 16), int(port))
            for src, dst, port, mark, spi, reqid in _POLICY.findall(text)
            if int(mark, 16) == MARK and int(reqid) == REQID}


def states() -> set[SA]:
    return parse_states(_ip([f"xfrm state list proto esp reqid {REQID}"]))


def policies() -> set[Policy]:
    return parse_policies(_ip(["xfrm policy list dir out"]))


def plan(present_states: set[SA], present_policies: set[Policy], wanted_states: set[SA],
         wanted_policies: set[Policy]) -> list[str]:
    """The commands that make muslin's xfrm objects the wanted ones, in an order that never
    leaves a policy without its SA: new states, then policies added or changed, then policies
    gone, then states gone."""
    by_pair = {(p.src, p.dst): p for p in present_policies}
    wanted_pairs = {(p.src, p.dst) for p in wanted_policies}
    return ([_state_add(sa) for sa in sorted(wanted_states - present_states)]
            + [_policy_put(p) for p in sorted(wanted_policies) if by_pair.get((p.src, p.dst)) != p]
            + [_policy_delete(p) for p in sorted(present_policies) if (p.src, p.dst) not in wanted_pairs]
            + [_state_delete(sa) for sa in sorted(present_states - wanted_states)])


def apply(wanted_states: set[SA], wanted_policies: set[Policy]) -> int:
    """Make muslin's states and policies exactly the wanted ones; returns how many commands that
    took (0: all was right). Others' xfrm objects are never read for change nor touched."""
    commands = plan(states(), policies(), wanted_states, wanted_policies)
    if commands:
        _ip(commands)
    return len(commands)
