"""Identifiers, generated names, and the rules every name a user gives must follow.

One place for them: network and container names as Docker checks them, interface
names as the kernel checks them (plus what muslin's own tools need of them), and
the names muslin derives for itself, which nobody else may take.
"""

import os
import random
import re

from muslin.errors import Conflict, InvalidParameter

_LEFT = ("admiring", "bold", "brave", "busy", "clever", "eager", "elegant", "focused", "gallant", "happy",
         "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene", "sharp", "stoic", "vibrant")
_RIGHT = ("agnesi", "babbage", "cerf", "curie", "dijkstra", "engelbart", "feistel", "hopper", "kahn",
          "knuth", "lamport", "liskov", "metcalfe", "perlman", "postel", "ritchie", "shannon", "thompson",
          "torvalds", "wozniak")

# Docker's rule for container (and volume) names, moby daemon/names: RestrictedNameChars.
NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
# Docker's pattern ends in "+" (two characters at least); one is allowed here, as muslin always did.
NAME_RE = re.compile(NAME_CHARS + "*")
# A name is a file name in places (logs, DNS labels joined with dots): NAME_MAX bounds it.
NAME_MAX = 255
# The networks Docker always has; their names are refused for user networks.
PREDEFINED_NETWORKS = ("bridge", "host", "none", "default")

IFNAMSIZ = 16  # the kernel's buffer, NUL included: names of at most 15 bytes
DEFAULT_BRIDGE_DEVICE = "muslin0"
# Links muslin derives from an id: a bridge, macvlan/ipvlan dummy parents, the macvlan shim,
# the host side of a veth. A user name of that shape could be taken by a later network.
_DERIVED_LINK = re.compile(r"(br-|dm-|di-|mh-)[0-9a-f]{12}|veth[0-9a-f]{11}")
# The fabric agent's devices (Flannel's names).
_FABRIC_LINK = re.compile(r"flannel0|flannel(-v6)?\.[0-9]+")


ID_RE = re.compile(r"[0-9a-f]{64}")


def new_id() -> str:
    """64 hex digits, like a Docker object ID."""
    return os.urandom(32).hex()


def joined_container_name(path: str, pid: int | None, taken) -> str:
    """The name of another runtime's container that joined by its namespace: what a user can
    guess — the namespace's name (``/run/netns/NAME``), or ``pid-PID`` — else a generated one."""
    guess = f"pid-{pid}" if pid is not None else os.path.basename(path.rstrip("/"))
    if path.startswith("/proc/") and pid is None:
        guess = ""  # /proc/PID/ns/net: "net" says nothing
    if guess and NAME_RE.fullmatch(guess) and len(guess) <= NAME_MAX and guess not in taken:
        return guess
    return container_name(taken)


def container_name(taken) -> str:
    while True:
        name = f"{random.choice(_LEFT)}_{random.choice(_RIGHT)}"
        if name not in taken:
            return name
        name = f"{name}{random.randint(0, 9)}"
        if name not in taken:
            return name


# -- object names (Docker's rules) -------------------------------------------------------


def shown(text: str) -> str:
    """``text`` as an error line can show it: control characters escaped (a name holding a
    newline must not split the one line a user gets)."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _check_name(kind: str, name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise InvalidParameter(f"Invalid {kind} name ({shown(name)}), only {NAME_CHARS} are allowed")
    if len(name) > NAME_MAX:
        raise InvalidParameter(f"Invalid {kind} name ({name[:32]}…): at most {NAME_MAX} characters are allowed")


def check_container_name(name: str) -> None:
    """Docker's ``Invalid container name (x), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed``."""
    _check_name("container", name)


def check_network_name(name: str) -> None:
    """A user network's name: not empty, not one of Docker's predefined networks, and
    Docker's name rule (which Docker applies to containers; a network name is used the
    same ways: on the command line, in DNS as ``container.network``, in file names)."""
    if not name.strip():
        raise InvalidParameter("invalid name: name is empty")
    if name in PREDEFINED_NETWORKS:
        raise Conflict(f"operation is not permitted on predefined {name} network")
    _check_name("network", name)


def check_not_an_id(kind: str, name: str, ids) -> None:
    """A name that is another object's ID (full or the 12 characters ``ls`` shows) would
    shadow that object in every lookup: refuse it."""
    for ident in ids:
        if name in (ident, ident[:12]):
            raise Conflict(f"{kind} name {name} is the ID of another {kind}")


# -- interface names (the kernel's rules) ------------------------------------------------


def interface_name_problem(name: str) -> str | None:
    """Why the kernel (dev_valid_name) or muslin's own tools would refuse ``name`` as an
    interface name; None when it is fine."""
    size = len(name.encode("utf-8", "surrogateescape"))
    if not name:
        return "it is empty"
    if size >= IFNAMSIZ:
        return f"it is {size} bytes long, at most {IFNAMSIZ - 1} are allowed"
    if name in (".", ".."):
        return "it cannot be . or .."
    if not (name.isascii() and name.isprintable()):
        return "only printable ASCII characters are allowed"
    for char, why in (("/", "'/'"), (":", "':'"), (" ", "spaces"),
                      # nft cannot quote a name holding '"': the ruleset would not load back
                      ('"', "'\"'"),
                      # the kernel fills in a name holding '%' (br%d → br0): it would not be this one
                      ("%", "'%'")):
        if char in name:
            return f"{why} is not allowed"
    return None


def check_interface_name(name: str, option: str) -> None:
    """Refuse a user-given interface name (the value of ``option``) the kernel would refuse,
    or one that muslin derives for its own links."""
    problem = interface_name_problem(name)
    if problem is None and reserved_interface_name(name):
        problem = "muslin uses that name for its own links"
    if problem is not None:
        raise InvalidParameter(f'invalid value "{shown(name)}" for option {option}: {problem}')


def reserved_interface_name(name: str) -> bool:
    return (name == DEFAULT_BRIDGE_DEVICE or _DERIVED_LINK.fullmatch(name) is not None
            or _FABRIC_LINK.fullmatch(name) is not None)
