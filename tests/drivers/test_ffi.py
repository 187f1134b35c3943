"""Foreign calls as data (drivers/ffi): one errno checker, one EINTR policy, tables bound once."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import sys

import pytest

from rig.drivers.ffi import libc
from rig.drivers.ffi.calls import checked, os_error
from rig.drivers.ffi.ioctls import ioctl, ioctl_read


def test_a_failure_is_one_oserror_named_after_the_call() -> None:
    err = os_error("BLKGETSIZE64", errno.ENOTTY)
    assert (err.errno, str(err)) == (errno.ENOTTY, "[Errno 25] BLKGETSIZE64: "
                                     + os.strerror(errno.ENOTTY))
    assert os_error("x", None).errno == errno.EIO
    assert isinstance(os_error("open", errno.ENOENT), FileNotFoundError)


def test_eintr_is_retried_whichever_way_the_call_fails() -> None:
    raised = iter([InterruptedError(errno.EINTR, "interrupted")])

    def raises_once() -> int:
        for e in raised:
            raise e
        return 7

    assert checked("raises", raises_once) == 7
    results = iter([-1, 5])

    def minus_one_once() -> int:
        ctypes.set_errno(errno.EINTR)
        return next(results)

    assert checked("returns", minus_one_once) == 5


def test_other_errors_are_raised_not_retried() -> None:
    calls = []

    def fails() -> int:
        calls.append(1)
        ctypes.set_errno(errno.EBADF)
        return -1

    with pytest.raises(OSError, match=r"fallocate: ") as info:
        checked("fallocate", fails)
    assert info.value.errno == errno.EBADF and calls == [1]
    with pytest.raises(OSError, match="fallocate: ") as info:
        libc.fallocate(-1, 0, 0, 4096)
    assert info.value.errno == errno.EBADF


def test_ioctls_go_through_the_same_checker() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="BLKGETSIZE64: ") as info:
            ioctl_read(fd, "BLKGETSIZE64", "Q")
        assert info.value.errno == errno.ENOTTY
        with pytest.raises(OSError, match="LOOP_CLR_FD: "):
            ioctl(fd, "LOOP_CLR_FD")
    finally:
        os.close(fd)


def test_the_tables_are_bound_as_declared() -> None:
    for name, (argtypes, restype) in libc.LIBC.items():
        fn = libc.function(name)
        assert list(fn.argtypes) == list(argtypes) and fn.restype == restype  # type: ignore[attr-defined]


def test_parent_death_signal_in_a_child() -> None:
    code = ("import os, signal, sys; from rig.drivers.ffi import libc; "
            "libc.set_parent_death_signal(signal.SIGTERM); "
            "import ctypes; v = ctypes.c_int(); "
            "libc.function('prctl')(2, ctypes.addressof(v), 0, 0, 0); print(v.value)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert int(out) == signal.SIGTERM
