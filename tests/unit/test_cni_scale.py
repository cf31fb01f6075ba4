"""What lets one daemon serve a thousand CNI attachments: the sockets it keeps per container
leave the low file descriptors to the C libraries it calls (libnftables select()s on its own
netlink socket, and glibc aborts the whole process when that socket's number is 1024 or more)."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from muslin.kernel.sockets import SELECT_LIMIT, open_socket

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="opening a socket in a namespace needs root")


def test_a_long_lived_socket_is_kept_above_the_select_range():
    sock = open_socket(None, socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", 0, long_lived=True)
    try:
        assert sock.fileno() >= SELECT_LIMIT
        assert sock.getsockname()[0] == "127.0.0.1" and sock.type == socket.SOCK_DGRAM
        low = socket.socket()  # the next socket of a C library still gets a low number
        assert low.fileno() < SELECT_LIMIT
        low.close()
    finally:
        sock.close()


def test_a_short_lived_socket_stays_where_the_kernel_put_it():
    sock = open_socket(None, socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert sock.fileno() < SELECT_LIMIT  # served by select() (the port proxy's relays)
    finally:
        sock.close()


def test_the_daemon_may_open_as_many_files_as_root_allows():
    from muslin.daemon import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        raise_open_files_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
