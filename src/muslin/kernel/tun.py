"""TUN devices: the character-device side of a layer-3 virtual interface.

A TUN device hands every IP packet the kernel routes into it to whoever holds
its file descriptor, and injects every packet written to that descriptor as if
it had been received. Flannel's udp backend is built on one (``flannel0``).

``TUNSETIFF`` creates (or attaches to) the device in the network namespace of
the *calling thread*, so call these from a thread that has entered the right
namespace (``muslin.kernel.Namespace.run``). Links, addresses and MTU are
configured over netlink like any other link; this module only owns the fds.
"""

from __future__ import annotations

import fcntl
import os
import struct

TUN_PATH = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
TUNSETQUEUE = 0x400454D9
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000  # no 4-byte packet-info prefix: reads and writes are bare IP packets
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200
IFF_DETACH_QUEUE = 0x0400
IFF_VNET_HDR = 0x4000  # each packet is preceded by a struct virtio_net_hdr (GSO and checksum metadata)
VNET_HDR_LEN = 10  # sizeof(struct virtio_net_hdr)

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then ifr_flags in the union
IFNAMSIZ = 16


def _ifreq(name: str, flags: int) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b"\0" in raw:
        raise ValueError(f"bad interface name {name!r}")
    return _IFREQ.pack(raw, flags)


def open_tun(name: str, *, multi_queue: bool = False, vnet_hdr: bool = False) -> int:
    """Create the TUN device ``name`` (IFF_TUN | IFF_NO_PI), or attach to it if it exists; return the fd.

    With ``multi_queue`` every call on the same name opens one more queue
    (IFF_MULTI_QUEUE: the kernel spreads flows over the queues by hash, so each
    queue needs its own reader). The flag must match what the device was created
    with, or the kernel answers EINVAL. With ``vnet_hdr`` every read and write
    carries a 10-byte ``struct virtio_net_hdr`` first: the way to hand the
    kernel one large TCP packet instead of many small ones. Transmit offloads are
    turned off, so reads are always whole, checksummed packets (their header
    all zero). The fd is close-on-exec (pass it on with ``pass_fds``).
    """
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0) | (IFF_VNET_HDR if vnet_hdr else 0)
    req = _ifreq(name, flags)
    fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, req)
        # offloads belong to the device and outlive its fds: a previous owner may have
        # left TSO on, which would hand this reader 64 KiB packets with checksums to fill in
        fcntl.ioctl(fd, TUNSETOFFLOAD, 0)
        if vnet_hdr:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))  # also the device's, also inherited
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_queue(name: str, *, vnet_hdr: bool = False) -> int:
    """One more queue of the multi-queue device ``name`` (created by ``open_tun(name, multi_queue=True)``)."""
    return open_tun(name, multi_queue=True, vnet_hdr=vnet_hdr)


def tun_flags(fd: int) -> int:
    """The device's IFF_* flags, e.g. to tell whether it was created multi-queue."""
    raw = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    return _IFREQ.unpack(raw)[1]


def set_persist(fd: int, persist: bool = True) -> None:
    """Keep the device after its last fd closes (or not): its owner decides its life, not the process holding it."""
    fcntl.ioctl(fd, TUNSETPERSIST, int(persist))


def set_queue_enabled(fd: int, enabled: bool) -> None:
    """Attach or detach one queue of a multi-queue device; a detached queue gets no packets."""
    fcntl.ioctl(fd, TUNSETQUEUE, _IFREQ.pack(b"", IFF_ATTACH_QUEUE if enabled else IFF_DETACH_QUEUE))
