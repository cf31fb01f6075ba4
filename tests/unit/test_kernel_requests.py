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
