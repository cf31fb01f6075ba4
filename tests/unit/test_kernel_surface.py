"""The kernel layer's surface: what other layers import from ``muslin.kernel`` and how its
errors carry the kernel's reason."""

import errno

from muslin.errors import KernelError


def test_kernel_error_carries_its_errno():
    assert KernelError("cannot delete link x: No such device", errno=errno.ENODEV).errno == errno.ENODEV


def test_kernel_error_without_errno_says_none():
    assert KernelError("network namespace /x already exists").errno is None
