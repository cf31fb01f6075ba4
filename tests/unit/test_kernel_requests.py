"""What the kernel layer asks the kernel for, checked on a recording stand-in for pyroute2's
socket (no root): looking up one link must cost one request whatever the number of links, so
that an attach or detach does not grow with the bridge."""

from __future__ import annotations

import errno
import threading

import pytest

from muslin.kernel.links import Links


class NetlinkError(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class Message(dict):
    """An RTM_NEWLINK message as pyroute2 gives it: fields by key, attributes by get_attr."""

    def __init__(self, index: int, name: str, **attrs):
        super().__init__(index=index, flags=1)
        self.attrs = {"IFLA_IFNAME": name, "IFLA_MTU": 1500, "IFLA_ADDRESS": "02:00:00:00:00:01", **attrs}

    def get_attr(self, name):
        return self.attrs.get(name)


class RecordingSocket:
    """Links ``l0`` … ``l<count-1>``; every request is recorded as (call, command)."""

    def __init__(self, count: int):
        self.links = {f"l{i}": Message(i + 1, f"l{i}") for i in range(count)}
        self.requests: list[tuple[str, str]] = []

    def get_links(self, *indexes, **match):
        self.requests.append(("get_links", "get" if indexes else "dump"))
        if indexes:
            return [m for m in self.links.values() if m["index"] in indexes]
        return [m for m in self.links.values() if all(m.get_attr(f"IFLA_{k.upper()}") == v for k, v in match.items())]

    def link(self, command: str, **kwargs):
        self.requests.append(("link", command))
        if command == "dump":
            return list(self.links.values())
        if command == "get":
            if "ifname" in kwargs:
                if kwargs["ifname"] not in self.links:
                    raise NetlinkError(errno.ENODEV)
                return [self.links[kwargs["ifname"]]]
            return [m for m in self.links.values() if m["index"] == kwargs["index"]]
        if command == "del":
            return []
        raise AssertionError(f"unexpected link {command}")

    def link_lookup(self, ifname: str):
        self.requests.append(("link_lookup", "get"))
        return [self.links[ifname]["index"]] if ifname in self.links else []


class InWorker(Links):
    """The Links mixin with the calling thread as its worker and a recording socket."""

    def __init__(self, count: int):
        self._thread = threading.current_thread()
        self.ipr = RecordingSocket(count)


@pytest.mark.parametrize("count", [10, 1000])
def test_looking_up_one_link_is_one_get_not_a_dump(count):
    ns = InWorker(count)
    assert ns.link("l3").index == 4
    assert ns.link("missing") is None
    assert all(command != "dump" for _, command in ns.ipr.requests), ns.ipr.requests
    assert len(ns.ipr.requests) == 2


def test_deleting_an_owned_port_dumps_no_links():
    ns = InWorker(1000)
    ns.ipr.links["l5"].attrs["IFLA_IFALIAS"] = "muslin:t"
    assert ns.delete_owned_link("l5", "muslin:t")
    assert all(command != "dump" for _, command in ns.ipr.requests), ns.ipr.requests


class VethWorker(InWorker):
    """Records link requests with their arguments, and sysctl writes, in one list."""

    def __init__(self):
        super().__init__(1)
        self.ipr.links["br0"] = Message(100, "br0")
        self.calls: list[tuple] = []
        recorded_link = self.ipr.link

        def link(command, **kwargs):
            self.calls.append(("link", command, kwargs))
            if command == "add":
                self.ipr.links[kwargs["ifname"]] = Message(101, kwargs["ifname"])
                return []
            if command == "set":
                return []
            return recorded_link(command, **kwargs)

        self.ipr.link = link

    def sysctl(self, key, value=None):
        self.calls.append(("sysctl", key, value))
        return value


def test_a_bridge_port_has_ipv6_off_before_it_is_up_and_enslaved():
    ns = VethWorker()
    ns.add_veth("vethp", "eth0", "/run/netns/c", master="br0", alias="muslin:t")
    made, = [i for i, c in enumerate(ns.calls) if c[:2] == ("link", "add")]
    off, = [i for i, c in enumerate(ns.calls) if c[0] == "sysctl"]
    up, = [i for i, c in enumerate(ns.calls) if c[:2] == ("link", "set") and c[2].get("state") == "up"]
    assert ns.calls[off][1:] == ("net.ipv6.conf.vethp.disable_ipv6", "1")
    assert "master" not in ns.calls[made][2] and not ns.calls[made][2].get("flags")  # made down, loose
    assert made < off < up
    assert ns.calls[up][2]["master"] == 100 and ns.calls[up][2]["IFLA_IFALIAS"] == "muslin:t"


def test_a_veth_without_a_bridge_keeps_ipv6():
    ns = VethWorker()
    ns.add_veth("vethp", "eth0", "/run/netns/c")
    assert not [c for c in ns.calls if c[0] == "sysctl"]
