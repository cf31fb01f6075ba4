"""The daemon's protocol as data: one schema per operation, checked before the engine is called.

Anyone who can reach the socket can send anything, so every argument's type,
size and range is checked here, in one place, and a request that does not fit
is refused with a message naming the argument. JSON types are taken strictly:
``"false"`` is not a boolean and ``true`` is not a number. Unknown arguments
are refused rather than ignored.

Docker sets no length limit on names, labels or options; muslin's limits are
generous for any real use and small enough that no request can grow the store
or the daemon's memory without bound.
"""

from __future__ import annotations

MAX_LINE = 1 << 20  # one request, newline included
# a network or container name, an id or id prefix: an envelope on what is read; what a name may
# be (Docker's rule, 255 characters) is the engine's to say, in words a CLI user knows
MAX_NAME = 1024
MAX_ADDRESS = 64  # an IPv6 CIDR is at most 43 characters
MAX_PATH = 4096  # PATH_MAX
MAX_IFNAME = 64  # an envelope: the engine applies the kernel's 15 bytes with its own message
MAX_KEY = 255
MAX_VALUE = 4096
MAX_HOSTNAME = 255  # an envelope: the engine applies the kernel's 64 bytes with Docker's message
MAX_DOMAIN = 255  # a DNS name
MAX_ITEMS = 256  # subnets, aliases, labels, options, names per request
MAX_ARGV = 4096  # words of a container's command
MAX_GC = 65536  # attachments a runtime may list as still valid
MAX_WORD = 131072  # one word of a command (Linux MAX_ARG_STRLEN)
PID_MAX = (1 << 31) - 1  # pid_t: beyond the kernel's limit (1 << 22) the engine says "no process with PID N"

_JSON_TYPE = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
              dict: "an object", type(None): "null"}


class Invalid(ValueError):
    """A request that does not fit its schema; the message names the argument."""


def json_type(value) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


class Str:
    def __init__(self, max_len: int, what: str = "a string", empty: bool = False):
        self.max_len, self.what, self.empty = max_len, what, empty

    def check(self, value, where: str):
        if not isinstance(value, str):
            raise Invalid(f"{where} must be {self.what}, not {json_type(value)}")
        if not value and not self.empty:
            raise Invalid(f"{where} must not be empty")
        if len(value) > self.max_len:
            raise Invalid(f"{where} is too long ({len(value)} characters, at most {self.max_len})")
        if "\0" in value:
            raise Invalid(f"{where} must not contain NUL characters")
        return value


class Bool:
    def check(self, value, where: str):
        if not isinstance(value, bool):
            raise Invalid(f"{where} must be a boolean (true or false), not {json_type(value)}")
        return value


class Int:
    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def check(self, value, where: str):
        if isinstance(value, bool) or not isinstance(value, int):  # bool is an int in Python, not in JSON
            raise Invalid(f"{where} must be an integer, not {json_type(value)}")
        if not self.low <= value <= self.high:
            raise Invalid(f"{where} must be between {self.low} and {self.high}, not {value}")
        return value


class Optional:
    """``null`` or the inner type; null stands for the argument left out."""

    def __init__(self, inner):
        self.inner = inner

    def check(self, value, where: str):
        return None if value is None else self.inner.check(value, where)


class List:
    def __init__(self, item, max_items: int = MAX_ITEMS):
        self.item, self.max_items = item, max_items

    def check(self, value, where: str):
        if not isinstance(value, list):
            raise Invalid(f"{where} must be an array, not {json_type(value)}")
        if len(value) > self.max_items:
            raise Invalid(f"{where} has too many items ({len(value)}, at most {self.max_items})")
        return [self.item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]


class Pair:
    """A JSON array of exactly two items."""

    def __init__(self, item):
        self.item = item

    def check(self, value, where: str):
        if not isinstance(value, list) or len(value) != 2:
            raise Invalid(f"{where} must be an array of two items, not {json_type(value)}")
        return [self.item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]


class Map:
    """A JSON object of strings to strings (labels, options, aux addresses); null is an empty one."""

    def __init__(self, key, value, max_items: int = MAX_ITEMS):
        self.key, self.value, self.max_items = key, value, max_items

    def check(self, value, where: str):
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise Invalid(f"{where} must be an object, not {json_type(value)}")
        if len(value) > self.max_items:
            raise Invalid(f"{where} has too many entries ({len(value)}, at most {self.max_items})")
        return {self.key.check(k, f"a key of {where}"): self.value.check(v, f"{where}[{k[:MAX_KEY]!r}]")
                for k, v in value.items()}


NAME = Str(MAX_NAME, "a name")
REF = Str(MAX_NAME, "a name or ID")
ADDRESS = Str(MAX_ADDRESS, "an address")
PORT_SPEC = Str(MAX_ADDRESS + 32, "a port specification")  # [IP:][HOST:]CONTAINER[/PROTO], ranges
PID = Int(1, PID_MAX)
EXIT_CODE = Int(0, 255)  # as the shell reports it: a signal N is 128 + N
STRINGS = Map(Str(MAX_KEY), Str(MAX_VALUE, empty=True))

# op -> {argument: (type, required)}; the engine's defaults apply to arguments left out
SCHEMAS: dict[str, dict[str, tuple[object, bool]]] = {
    "ping": {},
    "network.create": {
        "name": (NAME, True),
        "driver": (Str(MAX_NAME, "a driver name"), False),
        "subnets": (List(ADDRESS), False),
        "gateways": (List(ADDRESS), False),
        "ip_ranges": (List(ADDRESS), False),
        "aux_addresses": (Map(Str(MAX_KEY), ADDRESS), False),
        "ipv6": (Bool(), False),
        "internal": (Bool(), False),
        "options": (STRINGS, False),
        "labels": (STRINGS, False),
        "attachable": (Bool(), False),
    },
    "network.list": {},
    "network.inspect": {"names": (List(REF), True)},
    "network.remove": {"name": (REF, True)},
    "network.prune": {},
    "network.connect": {
        "network": (REF, True),
        "container": (Optional(REF), False),
        "ip": (Optional(ADDRESS), False),
        "ip6": (Optional(ADDRESS), False),
        "aliases": (List(NAME), False),
        "pid": (Optional(PID), False),
        "netns": (Optional(Str(MAX_PATH, "a path")), False),
        "ifname": (Optional(Str(MAX_IFNAME, "an interface name")), False),  # CNI_IFNAME; the engine checks it
        "mac": (Optional(Str(MAX_ADDRESS, "a MAC address")), False),
        "runtime": (Str(MAX_KEY, "a runtime's name", empty=True), False),
        "publish": (List(PORT_SPEC), False),  # another runtime's ports (CNI's portMappings) as -p specs
    },
    "endpoint.check": {"network": (REF, True), "container": (REF, True)},
    "network.gc": {
        "network": (REF, True),
        "runtime": (Str(MAX_KEY, "a runtime's name"), True),
        "keep": (List(Pair(Str(MAX_NAME)), MAX_GC), False),  # [container name, interface name]
    },
    "network.disconnect": {
        "network": (REF, True),
        "container": (Optional(REF), False),
        "force": (Bool(), False),
        "pid": (Optional(PID), False),
        "netns": (Optional(Str(MAX_PATH, "a path")), False),
    },
    "container.create": {
        "name": (Optional(NAME), False),
        "network": (Optional(REF), False),
        "ip": (Optional(ADDRESS), False),
        "ip6": (Optional(ADDRESS), False),
        "aliases": (List(NAME), False),
        "command": (List(Str(MAX_WORD, empty=True), MAX_ARGV), False),
        "publish": (List(PORT_SPEC), False),   # -p; the engine parses them with Docker's messages
        "expose": (List(PORT_SPEC), False),
        "publish_all": (Bool(), False),
        "hostname": (Optional(Str(MAX_HOSTNAME, "a hostname")), False),
        "dns": (List(ADDRESS), False),
        "dns_search": (List(Str(MAX_DOMAIN, "a domain")), False),
        "dns_options": (List(Str(MAX_KEY, "an option")), False),
        "extra_hosts": (List(Str(MAX_DOMAIN + MAX_ADDRESS, "NAME:IP")), False),
    },
    "container.started": {"id": (REF, True), "pid": (PID, True), "exit_code": (EXIT_CODE, False)},
    "container.list": {"all": (Bool(), False)},
    "container.inspect": {"name": (REF, True)},
    "container.remove": {"name": (REF, True), "force": (Bool(), False)},
}


def parse_request(request) -> tuple[str, dict]:
    """``(op, args)`` of a decoded request, every argument checked; :class:`Invalid` otherwise."""
    if not isinstance(request, dict):
        raise Invalid(f"a request must be a JSON object, not {json_type(request)}")
    extra = sorted(set(request) - {"op", "args"})
    if extra:
        raise Invalid(f"unknown request field {extra[0][:MAX_KEY]!r} (a request has \"op\" and \"args\")")
    op = request.get("op")
    if not isinstance(op, str):
        raise Invalid(f"\"op\" must be a string, not {json_type(op)}")
    schema = SCHEMAS.get(op)
    if schema is None:
        raise Invalid(f"unknown operation {op[:MAX_NAME]!r}")
    args = request.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise Invalid(f"\"args\" of {op} must be an object, not {json_type(args)}")
    unknown = sorted(set(args) - set(schema))
    if unknown:
        raise Invalid(f"unknown argument {unknown[0][:MAX_KEY]!r} for {op}"
                      f" (it takes: {', '.join(schema) or 'no arguments'})")
    checked = {}
    for name, (kind, required) in schema.items():
        if name not in args:
            if required:
                raise Invalid(f"{op} requires the argument {name!r}")
            continue
        checked[name] = kind.check(args[name], f"argument {name!r} of {op}")
    return op, checked
