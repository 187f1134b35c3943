"""``rig io`` against Debian's qemu-io on the same scripts: same output (timing normalised as
qemu-iotests does), same exit status, same bytes on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import commands, normalise, qemu_io, rig_io

pytestmark = pytest.mark.rig_needs("qemu_utils")

BASIC = [
    "write -P 0x5a 0 64k", "info", "map", "length", "read -P 0x5a 0 64k", "read 4M 512",
    "flush", "readv 0 512 512", "writev -P 3 512 512 1k", "discard 0 4k", "write -z 8k 4k",
    "alloc 0 1M", "read -v 0 32", "aio_write -P 7 0 4k", "aio_flush", "read -P 1 0 512",
    "read -C 0 512", "write -f -P 9 100 3000", "read -P 9 100 3000",
    "read -P 9 -s 10 -l 20 100 3000", "read -q -P 9 100 3000", "help length",
]
ERRORS = [
    "bogus", "write", "read 1x 2", "write -P 300 0 1", "write 0 -1", "write -u 0 1",
    "read 0 3G", "write -z -P 1 0 512", "read -P 1 0 512", "read 0 4M", "write 4M 1",
    "readv 1 1x", "sleep", "read -s 1 0 512",
]
UNALIGNED = [
    "write -P 1 0 64k", "write -P 2 100 5000", "read -P 1 0 100", "read -P 2 100 5000",
    "read -P 1 5100 3092", "writev -P 4 7 9 4096 11", "read -P 4 7 4116", "write -z 333 9000",
    "read -P 0 333 9000", "read -v 320 32", "write -f -P 6 4095 2", "read -P 6 4095 2",
    "discard 1000 60000", "flush", "read -P 1 60000 1000",
]


def compare(rig_args: list[str], qemu_args: list[str], *, rig_image: str,
            qemu_image: str) -> None:
    q = qemu_io(*qemu_args, qemu_image)
    r = rig_io(*rig_args, rig_image)
    assert "Traceback" not in r.err
    assert normalise(r.out) == normalise(q.out)
    assert r.err.replace(rig_image, "IMG") == q.err.replace(qemu_image, "IMG")
    assert r.rc == q.rc


@pytest.mark.parametrize("script", [BASIC, ERRORS, UNALIGNED], ids=["basic", "errors",
                                                                   "unaligned"])
@pytest.mark.parametrize("cache", ["writethrough", "writeback", "none", "unsafe"])
def test_same_output_on_files(rig_image: Callable[..., Path], script: list[str],
                              cache: str) -> None:
    a, b = rig_image(name="q.img"), rig_image(name="r.img")
    args = ["-f", "raw", "-t", cache, *commands(script)]
    compare(args, args, rig_image=str(b), qemu_image=str(a))
    assert a.read_bytes() == b.read_bytes()


def test_same_output_from_stdin(rig_image: Callable[..., Path]) -> None:
    a, b = rig_image(name="q.img"), rig_image(name="r.img")
    script = "\n".join([*BASIC, *ERRORS]) + "\n"
    q = qemu_io("-f", "raw", str(a), stdin=script)
    r = rig_io("-f", "raw", str(b), stdin=script)
    assert normalise(r.out) == normalise(q.out)
    assert r.rc == q.rc == 1
    assert a.read_bytes() == b.read_bytes()


def test_probed_raw_warns_like_qemu(rig_image: Callable[..., Path]) -> None:
    a, b = rig_image(name="q.img"), rig_image(name="r.img")
    compare(["-c", "read 0 512"], ["-c", "read 0 512"], rig_image=str(b), qemu_image=str(a))


@pytest.mark.rig_needs("loop")
@pytest.mark.parametrize("block_size", [512, 4096])
@pytest.mark.parametrize("cache", ["none", "writeback"])
def test_same_output_on_loop_devices(rig_loop: Callable[..., Any], block_size: int,
                                     cache: str) -> None:
    qdev = rig_loop(8 << 20, block_size=block_size, direct_io=True)
    rdev = rig_loop(8 << 20, block_size=block_size, direct_io=True)
    script = [s for s in UNALIGNED + BASIC if "4M" not in s]
    compare(["-f", "raw", "-t", cache, "--allow", rdev.path, *commands(script)],
            ["-f", "raw", "-t", cache, *commands(script)],
            rig_image=rdev.path, qemu_image=qdev.path)
    with open(qdev.path, "rb") as f1, open(rdev.path, "rb") as f2:
        assert f1.read(1 << 20) == f2.read(1 << 20)
