"""The fabric's network config, as Flannel reads it from ``<prefix>/config``: pure, no I/O.

What this module reproduces, and from where (the facts and messages are Flannel's, the code
is ours):

* ``parse_config`` -- ``subnet.ParseConfig`` then ``subnet.CheckNetworkConfig``
  (flannel-io/flannel ``pkg/subnet/config.go``): the keys, their defaults (IPv4 on, IPv6
  off, backend ``udp`` when there is no ``Backend`` at all; ``SubnetLen`` 24 for a /22 or
  larger network, else the network's prefix + 2; ``SubnetMin`` the second subnet of the
  network, ``SubnetMax`` its last one; the same for IPv6 with /64 and /62) and every
  validation message, word for word.
* Go's ``encoding/json`` as Flannel meets it: keys match case-insensitively (Flannel's own
  tests write ``"network"``), unknown keys are ignored, a syntax error is reported with the
  Go scanner's words ("invalid character '}' looking for beginning of object key string",
  "unexpected end of JSON input"), a wrong type with Go's ("json: cannot unmarshal string
  into Go struct field Config.SubnetLen of type uint"), and the address fields fail with
  the texts of Flannel's own decoders (``pkg/ip/ipnet.go``: "invalid CIDR address: …",
  "Invalid IP address format").
* The backend sections the backends decode (``pkg/backend/vxlan/vxlan.go``: VNI default 1,
  Port, MTU, GBP, Learning, DirectRouting; ``pkg/backend/udp``: Port default 8285), with
  their "error decoding … backend config" messages; ``pkg/backend/manager.go`` for the
  case-insensitive backend type and "unknown backend type: …". Keys a backend does not
  read are kept (``Backend.extra``) so a config round-trips.

Where muslin differs: where Flannel would crash (an IPv6 network in ``Network``: its
decoder panics with "Address is not an IPv4 address") or silently make nonsense (an IPv4
network in ``IPv6Network``) muslin refuses the config ("Address is not an IPv6 address");
``Networks``/``IPv6Networks``, which Flannel's etcd manager decodes and then discards, are
ignored; a vxlan ``MTU`` of 0 and a udp ``Port`` of 0 mean "the default".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

from muslin.errors import InvalidParameter

__all__ = [
    "DEFAULT_ETCD_PREFIX",
    "DEFAULT_BACKEND",
    "DEFAULT_VNI",
    "VXLAN_DEFAULT_PORT",
    "UDP_DEFAULT_PORT",
    "SUPPORTED_BACKENDS",
    "Backend",
    "FabricConfig",
    "parse_config",
    "go_json_members",
    "go_json_syntax_error",
    "go_dumps",
]

DEFAULT_ETCD_PREFIX = "/coreos.com/network"
DEFAULT_BACKEND = "udp"  # pkg/subnet/config.go parseBackendType: no Backend at all -> udp
DEFAULT_VNI = 1  # pkg/backend/vxlan/vxlan.go defaultVNI
VXLAN_DEFAULT_PORT = 8472  # Flannel passes Port 0 to the kernel, whose vxlan default is 8472
UDP_DEFAULT_PORT = 8285  # pkg/backend/udp defaultPort
SUPPORTED_BACKENDS = ("udp", "vxlan", "host-gw")

# --------------------------------------------------------------------------------------
# Flannel's texts (pkg/subnet/config.go, pkg/ip, pkg/backend). One place, for the tests too.
# --------------------------------------------------------------------------------------

MSG_NO_NETWORK = "please define a correct Network parameter in the flannel config"
MSG_SUBNETLEN_TOO_BIG = "SubnetLen must be less than /31"
MSG_FOUR_SUBNETS = "network must be able to accommodate at least four subnets"
MSG_NETWORK_TOO_SMALL = "network is too small. Minimum useful network prefix is /28"
MSG_MIN_OUTSIDE = "SubnetMin is not in the range of the Network"
MSG_MAX_OUTSIDE = "SubnetMax is not in the range of the Network"
MSG_MIN_UNALIGNED = "SubnetMin is not on a SubnetLen boundary: {}"
MSG_MAX_UNALIGNED = "SubnetMax is not on a SubnetLen boundary: {}"
MSG_NO_NETWORK6 = "please define a correct IPv6Network parameter in the flannel config"
MSG_SUBNETLEN6_TOO_BIG = "SubnetLen must be less than /127"
MSG_NETWORK6_TOO_SMALL = "IPv6Network is too small. Minimum useful network prefix is /124"
MSG_MIN6_OUTSIDE = "IPv6SubnetMin is not in the range of the IPv6Network"
MSG_MAX6_OUTSIDE = "IPv6SubnetMax is not in the range of the IPv6Network"
MSG_MIN6_UNALIGNED = "IPv6SubnetMin is not on a SubnetLen boundary: {}"
MSG_MAX6_UNALIGNED = "IPv6SubnetMax is not on a SubnetLen boundary: {}"
MSG_INVALID_CIDR = "invalid CIDR address: {}"  # Go's net.ParseCIDR
MSG_INVALID_IP = "Invalid IP address format"  # pkg/ip ParseIP4 / ParseIP6
MSG_NOT_IPV4 = "Address is not an IPv4 address"  # pkg/ip FromIP (a panic in Flannel)
MSG_NOT_IPV6 = "Address is not an IPv6 address"
MSG_BACKEND_PROPERTY = "error decoding Backend property of config: {}"
MSG_VXLAN_CONFIG = "error decoding VXLAN backend config: {}"
MSG_UDP_CONFIG = "error decoding UDP backend config: {}"
MSG_UNKNOWN_BACKEND = "unknown backend type: {}"


# --------------------------------------------------------------------------------------
# Go's encoding/json, as far as Flannel's users can see it
# --------------------------------------------------------------------------------------

_WS = b" \t\r\n"
_GO_ESCAPES = {0x07: "\\a", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v"}
_MAX_DEPTH = 10000


def _go_quote_byte(c: int) -> str:
    """How Go's JSON scanner shows the byte it choked on: 'x', '\\n', '\\x01', 'Ã'."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    if c == 0x5C:
        return "'\\\\'"
    ch = chr(c)  # Go converts the byte to the rune of the same value
    if c in _GO_ESCAPES:
        shown = _GO_ESCAPES[c]
    elif ch.isprintable():
        shown = ch
    elif c < 0x80:
        shown = f"\\x{c:02x}"
    else:
        shown = f"\\u{c:04x}"
    return f"'{shown}'"


class _SyntaxErr(Exception):
    pass


def go_json_syntax_error(data: bytes | str) -> str | None:
    """The message Go's ``json.Unmarshal`` gives for malformed input, or None if it is valid.

    Go checks the whole input before decoding, byte by byte; at the end it feeds one more
    space, which is why ``1.`` fails with "invalid character ' ' after decimal point in
    numeric literal" but ``{"a":1`` with "unexpected end of JSON input".
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    buf = data + b" "
    n = len(buf)

    def bad(pos: int, context: str) -> _SyntaxErr:
        return _SyntaxErr(f"invalid character {_go_quote_byte(buf[pos])} {context}")

    def need(pos: int) -> int:
        if pos >= n:
            raise _SyntaxErr("unexpected end of JSON input")
        return buf[pos]

    def string_end(i: int) -> int:  # buf[i] is the opening quote
        j = i + 1
        while True:
            c = need(j)
            if c == 0x22:
                return j + 1
            if c == 0x5C:
                e = need(j + 1)
                if e in b'bfnrt\\/"':
                    j += 2
                    continue
                if e != 0x75:  # u
                    raise bad(j + 1, "in string escape code")
                for k in range(j + 2, j + 6):
                    if need(k) not in b"0123456789abcdefABCDEF":
                        raise bad(k, "in \\u hexadecimal character escape")
                j += 6
                continue
            if c < 0x20:
                raise bad(j, "in string literal")
            j += 1

    def number_end(i: int) -> int:
        j = i
        if buf[j] == 0x2D:  # -
            j += 1
            if need(j) not in b"0123456789":
                raise bad(j, "in numeric literal")
        if buf[j] == 0x30:
            j += 1
        else:
            while need(j) in b"0123456789":
                j += 1
        if need(j) == 0x2E:  # .
            j += 1
            if need(j) not in b"0123456789":
                raise bad(j, "after decimal point in numeric literal")
            while need(j) in b"0123456789":
                j += 1
        if need(j) in b"eE":
            j += 1
            if need(j) in b"+-":
                j += 1
            if need(j) not in b"0123456789":
                raise bad(j, "in exponent of numeric literal")
            while need(j) in b"0123456789":
                j += 1
        return j

    def literal_end(i: int, word: bytes) -> int:
        for k in range(1, len(word)):
            if need(i + k) != word[k]:
                raise bad(i + k, f"in literal {word.decode()} (expecting {_go_quote_byte(word[k])})")
        return i + len(word)

    # modes: V value, VA value or ']', KO key or '}', K key, C colon, A after a value, T after top
    stack: list[int] = []  # 0x7B object, 0x5B array
    mode = "V"
    i = 0
    try:
        while i < n:
            c = buf[i]
            if c in _WS:
                i += 1
                continue
            if mode == "T":
                raise bad(i, "after top-level value")
            if mode == "VA":
                if c == 0x5D:
                    stack.pop()
                    mode, i = "A", i + 1
                    continue
                mode = "V"
            if mode == "KO":
                if c == 0x7D:
                    stack.pop()
                    mode, i = "A", i + 1
                    continue
                mode = "K"
            if mode == "K":
                if c != 0x22:
                    raise bad(i, "looking for beginning of object key string")
                mode, i = "C", string_end(i)
                continue
            if mode == "C":
                if c != 0x3A:
                    raise bad(i, "after object key")
                mode, i = "V", i + 1
                continue
            if mode == "V":
                if c in b"{[":
                    stack.append(c)
                    if len(stack) > _MAX_DEPTH:
                        raise bad(i, "exceeded max depth")
                    mode, i = ("KO" if c == 0x7B else "VA"), i + 1
                elif c == 0x22:
                    mode, i = "A", string_end(i)
                elif c == 0x2D or 0x30 <= c <= 0x39:
                    mode, i = "A", number_end(i)
                elif c == 0x74:
                    mode, i = "A", literal_end(i, b"true")
                elif c == 0x66:
                    mode, i = "A", literal_end(i, b"false")
                elif c == 0x6E:
                    mode, i = "A", literal_end(i, b"null")
                else:
                    raise bad(i, "looking for beginning of value")
                continue
            # mode A: after a complete value
            if not stack:
                mode = "T"
                continue
            if stack[-1] == 0x7B:
                if c == 0x2C:
                    mode = "K"
                elif c == 0x7D:
                    stack.pop()
                else:
                    raise bad(i, "after object key:value pair")
            else:
                if c == 0x2C:
                    mode = "V"
                elif c == 0x5D:
                    stack.pop()
                else:
                    raise bad(i, "after array element")
            i += 1
        if mode == "A" and not stack:
            mode = "T"
        if mode != "T":
            raise _SyntaxErr("unexpected end of JSON input")
    except _SyntaxErr as e:
        return str(e)
    return None


_DECODER = json.JSONDecoder()


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _go_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


def _decode_text(data: str | bytes) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")  # Go replaces invalid UTF-8 in strings by U+FFFD
    return data


def go_json_members(data: str | bytes, go_type: str) -> list[tuple[str, str, Any]] | None:
    """Decode a JSON object the way Go decodes it into a struct: its members, in order.

    Returns ``[(key, raw_text, value), ...]`` (``raw_text`` is the member's source, which
    Flannel's custom decoders see), or None for a top-level ``null`` (Go leaves the struct
    as it was). Raises InvalidParameter with Go's message for a syntax error or a value that
    is not an object (``go_type`` names the struct, e.g. ``subnet.Config``).
    """
    problem = go_json_syntax_error(data)
    if problem is not None:
        raise InvalidParameter(problem)
    text = _decode_text(data)
    i = _skip_ws(text, 0)
    try:
        if text[i] != "{":
            value, _ = _DECODER.raw_decode(text, i)
            if value is None:
                return None
            raise InvalidParameter(f"json: cannot unmarshal {_go_kind(value)} into Go value of type {go_type}")
        members: list[tuple[str, str, Any]] = []
        i = _skip_ws(text, i + 1)
        if text[i] == "}":
            return members
        while True:
            key, i = _DECODER.raw_decode(text, i)
            i = _skip_ws(text, i)
            i = _skip_ws(text, i + 1)  # the colon
            value, end = _DECODER.raw_decode(text, i)
            members.append((key, text[i:end], value))
            i = _skip_ws(text, end)
            if text[i] == "}":
                return members
            i = _skip_ws(text, i + 1)  # the comma
    except RecursionError:
        raise InvalidParameter("exceeded max depth") from None


class _TypeErrors:
    """Go keeps the first type mismatch and goes on decoding; it reports it at the end."""

    def __init__(self, struct: str, prefix: str = "{}"):
        self.struct = struct
        self.prefix = prefix
        self.first: str | None = None

    def mismatch(self, field_name: str, kind: str, go_type: str) -> None:
        if self.first is None:
            self.first = self.prefix.format(
                f"json: cannot unmarshal {kind} into Go struct field {self.struct}.{field_name} of type {go_type}"
            )

    def raise_first(self) -> None:
        if self.first is not None:
            raise InvalidParameter(self.first)

    # decoders for Go's plain types; ``None`` (JSON null) leaves the field unchanged

    def uint(self, name: str, raw: str, value: Any, current: int) -> int:
        if value is None:
            return current
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = raw.strip()
            if text.isdigit() and int(text) < 1 << 64:
                return int(text)
            self.mismatch(name, f"number {text}", "uint")
            return current
        self.mismatch(name, _go_kind(value), "uint")
        return current

    def int(self, name: str, raw: str, value: Any, current: int | None) -> int | None:
        if value is None:
            return current
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = raw.strip()
            digits = text[1:] if text.startswith("-") else text
            if digits.isdigit() and -(1 << 63) <= int(text) < 1 << 63:
                return int(text)
            self.mismatch(name, f"number {text}", "int")
            return current
        self.mismatch(name, _go_kind(value), "int")
        return current

    def bool(self, name: str, value: Any, current: bool) -> bool:
        if value is None:
            return current
        if isinstance(value, bool):
            return value
        self.mismatch(name, _go_kind(value), "bool")
        return current

    def string(self, name: str, value: Any, current: str) -> str:
        if value is None:
            return current
        if isinstance(value, str):
            return value
        self.mismatch(name, _go_kind(value), "string")
        return current


def go_dumps(value: Any) -> str:
    """Compact JSON as Go's ``json.Marshal`` writes it (UTF-8 kept, ``<>&`` escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# --------------------------------------------------------------------------------------
# Flannel's address decoders (pkg/ip): they see the member's raw text, quotes trimmed
# --------------------------------------------------------------------------------------


def _trimmed(raw: str) -> str:
    return raw.strip('"')  # Go: bytes.Trim(j, "\"") -- every leading and trailing quote


def _go_parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    """Go's net.ParseIP: dotted IPv4 or IPv6, no zone."""
    if "%" in text or not text:
        return None
    try:
        addr = ip_address(text)
    except ValueError:
        return None
    return addr


def _go_parse_cidr(text: str) -> IPv4Network | IPv6Network | None:
    """Go's net.ParseCIDR: ``addr/prefix``, host bits masked."""
    addr_text, slash, bits = text.partition("/")
    if not slash or not bits.isascii() or not bits.isdigit():
        return None
    addr = _go_parse_ip(addr_text)
    if addr is None or int(bits) > addr.max_prefixlen:
        return None
    return ip_network((addr, int(bits)), strict=False)


def _ip4net(raw: str) -> IPv4Network:
    text = _trimmed(raw)
    net = _go_parse_cidr(text)
    if net is None:
        raise InvalidParameter(MSG_INVALID_CIDR.format(text))
    if not isinstance(net, IPv4Network):
        raise InvalidParameter(MSG_NOT_IPV4)
    return net


def _ip6net(raw: str) -> IPv6Network:
    text = _trimmed(raw)
    net = _go_parse_cidr(text)
    if net is None:
        raise InvalidParameter(MSG_INVALID_CIDR.format(text))
    if not isinstance(net, IPv6Network):
        raise InvalidParameter(MSG_NOT_IPV6)
    return net


def _ip4(raw: str) -> IPv4Address:
    addr = _go_parse_ip(_trimmed(raw))
    if addr is None:
        raise InvalidParameter(MSG_INVALID_IP)
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # Go's To4() accepts an IPv4-mapped address
    if not isinstance(addr, IPv4Address):
        raise InvalidParameter(MSG_NOT_IPV4)
    return addr


def _ip6(raw: str) -> IPv6Address:
    addr = _go_parse_ip(_trimmed(raw))
    if addr is None:
        raise InvalidParameter(MSG_INVALID_IP)
    if not isinstance(addr, IPv6Address):
        raise InvalidParameter(MSG_NOT_IPV6)
    return addr


# --------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------

# the keys each backend decodes (Go field name -> attribute, Go type)
_VXLAN_KEYS = {
    "vni": ("VNI", "vni", "int"),
    "port": ("Port", "port", "int"),
    "mtu": ("MTU", "mtu", "int"),
    "gbp": ("GBP", "gbp", "bool"),
    "learning": ("Learning", "learning", "bool"),
    "directrouting": ("DirectRouting", "direct_routing", "bool"),
}
_UDP_KEYS = {"port": ("Port", "port", "int")}
_BACKEND_KEYS = {"vxlan": (_VXLAN_KEYS, MSG_VXLAN_CONFIG), "udp": (_UDP_KEYS, MSG_UDP_CONFIG)}


@dataclass(frozen=True)
class Backend:
    """The ``Backend`` section. ``type`` is as written (Flannel lowercases it to pick the
    backend: see ``kind``); ``port``/``mtu`` are None when not given; keys the backend
    does not read are kept in ``extra`` (original spelling, decoded values)."""

    type: str = DEFAULT_BACKEND
    vni: int = DEFAULT_VNI
    port: int | None = None
    mtu: int | None = None
    direct_routing: bool = False
    gbp: bool = False
    learning: bool = False
    extra: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def kind(self) -> str:
        """The backend Flannel runs for this type (``pkg/backend/manager.go`` lowercases it)."""
        return self.type.lower()

    @property
    def effective_port(self) -> int | None:
        """The UDP port the backend uses: vxlan 8472 (the kernel's default), udp 8285."""
        if self.kind == "vxlan":
            return self.port or VXLAN_DEFAULT_PORT
        if self.kind == "udp":
            return self.port or UDP_DEFAULT_PORT
        return self.port

    @property
    def device(self) -> str | None:
        """The device the backend creates: ``flannel.<VNI>`` (vxlan), ``flannel0`` (udp)."""
        if self.kind == "vxlan":
            return f"flannel.{self.vni}"
        if self.kind == "udp":
            return "flannel0"
        return None

    @property
    def device_v6(self) -> str | None:
        """The IPv6 vxlan device, ``flannel-v6.<VNI>``."""
        return f"flannel-v6.{self.vni}" if self.kind == "vxlan" else None

    def check_supported(self) -> None:
        """Refuse a backend muslin does not run, with Flannel's words."""
        if self.kind not in SUPPORTED_BACKENDS:
            raise InvalidParameter(MSG_UNKNOWN_BACKEND.format(self.kind))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Type": self.type}
        if self.vni != DEFAULT_VNI:
            out["VNI"] = self.vni
        if self.port is not None:
            out["Port"] = self.port
        if self.mtu is not None:
            out["MTU"] = self.mtu
        if self.direct_routing:
            out["DirectRouting"] = True
        if self.gbp:
            out["GBP"] = True
        if self.learning:
            out["Learning"] = True
        out.update(self.extra)
        return out


def _parse_backend(present: bool, raw: str, value: Any) -> Backend:
    if not present:
        return Backend()
    # pkg/subnet/config.go parseBackendType: {"Type": string}
    errors = _TypeErrors("", MSG_BACKEND_PROPERTY)
    btype = ""
    members: list[tuple[str, str, Any]] = []
    if isinstance(value, dict):
        members = go_json_members(raw, "struct { Type string }") or []
        for key, _raw, member in members:
            if key.lower() == "type":
                btype = errors.string("Type", member, btype)
        errors.raise_first()
    elif value is not None:
        raise InvalidParameter(
            MSG_BACKEND_PROPERTY.format(
                f"json: cannot unmarshal {_go_kind(value)} into Go value of type struct {{ Type string }}"
            )
        )
    keys, message = _BACKEND_KEYS.get(btype.lower(), ({}, ""))
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    decoder = _TypeErrors("", message)
    for key, member_raw, member in members:
        low = key.lower()
        if low == "type":
            continue
        if low not in keys:
            extra[key] = member
            continue
        go_name, attr, go_type = keys[low]
        if go_type == "int":
            fields[attr] = decoder.int(go_name, member_raw, member, fields.get(attr))
        else:
            fields[attr] = decoder.bool(go_name, member, fields.get(attr, False))
    decoder.raise_first()
    if fields.get("vni") is None:
        fields.pop("vni", None)
    return Backend(type=btype, extra=extra, **fields)


@dataclass(frozen=True)
class FabricConfig:
    """The network config with Flannel's defaults applied (for each enabled family)."""

    network: IPv4Network | None = None
    subnet_len: int = 0
    subnet_min: IPv4Address | None = None
    subnet_max: IPv4Address | None = None
    ipv6_network: IPv6Network | None = None
    ipv6_subnet_len: int = 0
    ipv6_subnet_min: IPv6Address | None = None
    ipv6_subnet_max: IPv6Address | None = None
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    backend: Backend = field(default_factory=Backend)
    source: str = field(default="", compare=False)  # the text as stored (what `etcdctl get` shows)

    def subnet_count(self, ipv6: bool = False) -> int:
        """How many subnets [SubnetMin, SubnetMax] holds (0 for a disabled family)."""
        if ipv6:
            if not self.enable_ipv6 or self.ipv6_subnet_min is None or self.ipv6_subnet_max is None:
                return 0
            lo, hi, size = int(self.ipv6_subnet_min), int(self.ipv6_subnet_max), 1 << (128 - self.ipv6_subnet_len)
        else:
            if not self.enable_ipv4 or self.subnet_min is None or self.subnet_max is None:
                return 0
            lo, hi, size = int(self.subnet_min), int(self.subnet_max), 1 << (32 - self.subnet_len)
        return 0 if hi < lo else (hi - lo) // size + 1

    def to_dict(self) -> dict[str, Any]:
        """Flannel's keys, every default resolved (``parse_config`` of it gives this config)."""
        out: dict[str, Any] = {}
        if self.network is not None:
            out["Network"] = str(self.network)
        if self.subnet_len:
            out["SubnetLen"] = self.subnet_len
        if self.subnet_min is not None:
            out["SubnetMin"] = str(self.subnet_min)
        if self.subnet_max is not None:
            out["SubnetMax"] = str(self.subnet_max)
        if self.ipv6_network is not None:
            out["IPv6Network"] = str(self.ipv6_network)
        if self.ipv6_subnet_len:
            out["IPv6SubnetLen"] = self.ipv6_subnet_len
        if self.ipv6_subnet_min is not None:
            out["IPv6SubnetMin"] = str(self.ipv6_subnet_min)
        if self.ipv6_subnet_max is not None:
            out["IPv6SubnetMax"] = str(self.ipv6_subnet_max)
        out["EnableIPv4"] = self.enable_ipv4
        out["EnableIPv6"] = self.enable_ipv6
        out["Backend"] = self.backend.to_dict()
        return out

    def to_json(self, indent: int | None = None) -> str:
        """The effective config as JSON (``source`` keeps the text exactly as it was set)."""
        if indent is None:
            return go_dumps(self.to_dict())
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


# Config's JSON fields (pkg/subnet/config.go), by the lowercase key Go matches them with
_CONFIG_FIELDS = {
    "enableipv4": "EnableIPv4",
    "enableipv6": "EnableIPv6",
    "network": "Network",
    "ipv6network": "IPv6Network",
    "subnetmin": "SubnetMin",
    "subnetmax": "SubnetMax",
    "ipv6subnetmin": "IPv6SubnetMin",
    "ipv6subnetmax": "IPv6SubnetMax",
    "subnetlen": "SubnetLen",
    "ipv6subnetlen": "IPv6SubnetLen",
    "backend": "Backend",
}


def parse_config(text: str | bytes) -> FabricConfig:
    """Parse and check the config at ``<prefix>/config`` exactly as Flannel's etcd subnet
    manager does; raise InvalidParameter with Flannel's message when it would refuse it."""
    source = _decode_text(text)
    members = go_json_members(text, "subnet.Config")
    errors = _TypeErrors("Config")
    got: dict[str, Any] = {
        "EnableIPv4": True,
        "EnableIPv6": False,
        "Network": None,
        "IPv6Network": None,
        "SubnetMin": None,
        "SubnetMax": None,
        "IPv6SubnetMin": None,
        "IPv6SubnetMax": None,
        "SubnetLen": 0,
        "IPv6SubnetLen": 0,
    }
    backend_member: tuple[bool, str, Any] = (False, "", None)
    for key, raw, value in members or []:
        name = _CONFIG_FIELDS.get(key.lower())
        if name is None:
            continue  # Go ignores unknown keys (and Flannel ignores Networks/IPv6Networks here)
        if name in ("EnableIPv4", "EnableIPv6"):
            got[name] = errors.bool(name, value, got[name])
        elif name in ("SubnetLen", "IPv6SubnetLen"):
            got[name] = errors.uint(name, raw, value, got[name])
        elif name == "Backend":
            backend_member = (True, raw, value)
        elif name == "Network":
            got[name] = _ip4net(raw)  # a custom decoder: its error stops decoding at once
        elif name == "IPv6Network":
            got[name] = _ip6net(raw)
        elif name in ("SubnetMin", "SubnetMax"):
            got[name] = _ip4(raw)
        else:  # IPv6SubnetMin/Max are pointers: null leaves them unset
            got[name] = None if value is None else _ip6(raw)
    errors.raise_first()
    backend = _parse_backend(*backend_member)
    enable4, enable6 = got["EnableIPv4"], got["EnableIPv6"]
    network, subnet_len = got["Network"], got["SubnetLen"]
    smin, smax = got["SubnetMin"], got["SubnetMax"]
    network6, subnet_len6 = got["IPv6Network"], got["IPv6SubnetLen"]
    smin6, smax6 = got["IPv6SubnetMin"], got["IPv6SubnetMax"]

    if enable4:
        network, subnet_len, smin, smax = _check_family(
            network,
            subnet_len,
            smin,
            smax,
            bits=32,
            max_len=30,
            default_len=24,
            smallest_prefix=28,
            msgs=(
                MSG_NO_NETWORK,
                MSG_SUBNETLEN_TOO_BIG,
                MSG_NETWORK_TOO_SMALL,
                MSG_MIN_OUTSIDE,
                MSG_MAX_OUTSIDE,
                MSG_MIN_UNALIGNED,
                MSG_MAX_UNALIGNED,
            ),
        )
    if enable6:
        network6, subnet_len6, smin6, smax6 = _check_family(
            network6,
            subnet_len6,
            smin6,
            smax6,
            bits=128,
            max_len=126,
            default_len=64,
            smallest_prefix=124,
            msgs=(
                MSG_NO_NETWORK6,
                MSG_SUBNETLEN6_TOO_BIG,
                MSG_NETWORK6_TOO_SMALL,
                MSG_MIN6_OUTSIDE,
                MSG_MAX6_OUTSIDE,
                MSG_MIN6_UNALIGNED,
                MSG_MAX6_UNALIGNED,
            ),
        )
    return FabricConfig(
        network=network,
        subnet_len=subnet_len,
        subnet_min=smin,
        subnet_max=smax,
        ipv6_network=network6,
        ipv6_subnet_len=subnet_len6,
        ipv6_subnet_min=smin6,
        ipv6_subnet_max=smax6,
        enable_ipv4=enable4,
        enable_ipv6=enable6,
        backend=backend,
        source=source,
    )


def _check_family(network, subnet_len, smin, smax, *, bits, max_len, default_len, smallest_prefix, msgs):
    """CheckNetworkConfig for one family: defaults first, then the range checks."""
    no_net, too_long, too_small, min_out, max_out, min_unaligned, max_unaligned = msgs
    # Flannel's "empty" network is the zero address with prefix 0: "0.0.0.0/0" counts as none
    if network is None or (network.prefixlen == 0 and int(network.network_address) == 0):
        raise InvalidParameter(no_net)
    prefix = network.prefixlen
    if subnet_len > 0:
        if subnet_len > max_len:
            raise InvalidParameter(too_long)
        if subnet_len < prefix + 2:
            raise InvalidParameter(MSG_FOUR_SUBNETS)
    elif prefix > smallest_prefix:
        raise InvalidParameter(too_small)
    elif prefix <= default_len - 2:
        subnet_len = default_len
    else:
        subnet_len = prefix + 2
    size = 1 << (bits - subnet_len)
    make = network.network_address.__class__
    net_lo = int(network.network_address)
    net_end = net_lo + network.num_addresses  # the next network's address
    # an unset (or zero) SubnetMin/Max takes the default: skip the network's first subnet
    if smin is None or int(smin) == 0:
        smin = make(net_lo + size)
    elif smin not in network:
        raise InvalidParameter(min_out)
    if smax is None or int(smax) == 0:
        smax = make((net_end - size) % (1 << bits))
    elif smax not in network:
        raise InvalidParameter(max_out)
    if int(smin) % size:
        raise InvalidParameter(min_unaligned.format(smin))
    if int(smax) % size:
        raise InvalidParameter(max_unaligned.format(smax))
    return network, subnet_len, smin, smax
