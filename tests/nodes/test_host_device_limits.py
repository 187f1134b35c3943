"""host_device's per-request limits on real loop devices (issue 16 part 4): read as QEMU 7.2's
file-posix reads them (BLKSSZGET, BLKSECTGET, queue/max_segments), a request not split at the
device's max transfer (as qemu-io does, checked with strace), and split there with
``x-max-transfer=hw``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rig
from rig.core.node import Iov, ReqFlags
from rig.drivers.loop import LoopDevice
from rig.drivers.nodes.block_queue import read_queue
from rig.drivers.nodes.host_device import parse_max_transfer
from rig.errors import ConfigError, RigError
from tests.fuzzing import fuzz, one_line

MiB = 1 << 20
HW_KB = 128


def _sysfs(dev: LoopDevice, attr: str) -> str:
    return Path(f"{dev.sysfs_dir}/queue/{attr}").read_text().strip()


def _open(dev: LoopDevice, **extra: Any) -> rig.BlockBackend:
    return rig.open({"driver": "host_device", "filename": dev.path, **extra}, read_only=True,
                    cache="none")


def _preadv_lengths(blk: rig.BlockBackend) -> list[int]:
    """Record the length of every preadv the host_device node issues (its driver hook)."""
    node: Any = blk.root
    hook = node._preadv
    lengths: list[int] = []

    def counted(offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        lengths.append(length)
        hook(offset, length, iov, flags)

    node._preadv = counted
    return lengths


@pytest.fixture
def pattern_loop(rig_loop: Callable[..., LoopDevice], tmp_path: Path) -> tuple[LoopDevice, bytes]:
    data = os.urandom(2 * MiB)
    image = tmp_path / "pattern.img"
    image.write_bytes(data)
    dev = rig_loop(image=image, block_size=4096)
    assert dev.set_max_sectors_kb(HW_KB) == HW_KB
    return dev, data


@pytest.mark.rig_needs("loop")
def test_limits_are_the_kernel_queue_limits(pattern_loop: tuple[LoopDevice, bytes]) -> None:
    dev, _ = pattern_loop
    queue = read_queue(os.stat(dev.path).st_rdev)
    assert queue.logical_block_size == 4096 == int(_sysfs(dev, "logical_block_size"))
    assert queue.max_sectors == HW_KB * 1024
    assert queue.max_segments == int(_sysfs(dev, "max_segments")) > 0
    assert queue.write_cache == _sysfs(dev, "write_cache")
    with _open(dev) as blk:
        limits = blk.root.limits
    assert limits.request_alignment == 4096  # BLKSSZGET, with O_DIRECT
    assert limits.max_hw_transfer == HW_KB * 1024  # BLKSECTGET x 512
    assert limits.max_hw_iov == queue.max_segments
    assert limits.max_transfer == 0  # as QEMU: not split


@pytest.mark.rig_needs("loop")
def test_one_request_is_one_preadv_unless_x_max_transfer_splits_it(
        pattern_loop: tuple[LoopDevice, bytes]) -> None:
    dev, data = pattern_loop
    with _open(dev) as blk:
        lengths = _preadv_lengths(blk)
        assert blk.pread(4096, MiB) == data[4096:4096 + MiB]
    assert lengths == [MiB]
    for value in ("hw", "64k"):
        with _open(dev, **{"x-max-transfer": value}) as blk:
            lengths = _preadv_lengths(blk)
            assert blk.pread(4096, MiB) == data[4096:4096 + MiB]
        piece = HW_KB * 1024 if value == "hw" else 64 * 1024
        assert blk.root.limits.max_transfer == piece
        assert lengths == [piece] * (MiB // piece)


@pytest.mark.rig_needs("loop", "qemu_utils")
def test_qemu_io_does_not_split_either(pattern_loop: tuple[LoopDevice, bytes]) -> None:
    """strace both tools: each reads 1 MiB of a 128 KiB max_sectors_kb device in one call."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    dev, _ = pattern_loop
    calls = {}
    for name, tool in (("qemu-io", ["qemu-io"]), ("rig io", [sys.executable, "-m", "rig", "io"])):
        r = subprocess.run(["strace", "-f", "-e", "trace=pread64,preadv,preadv2", *tool, "-r",
                            "-f", "raw", "-t", "none", "-c", f"read 4096 {MiB}", dev.path],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        returned = re.findall(r"pread\w*\(.*\) = (\d+)$", r.stderr, re.M)
        calls[name] = [int(n) for n in returned if int(n) > 8192]  # not the alignment probes
    assert calls["qemu-io"] == calls["rig io"] == [MiB]


@pytest.mark.rig_needs("loop")
def test_bad_x_max_transfer_is_one_line(pattern_loop: tuple[LoopDevice, bytes]) -> None:
    dev, _ = pattern_loop
    for value, words in (("1000", "not a multiple of the request alignment"),
                         ("nonsense", "x-max-transfer")):
        with pytest.raises(ConfigError) as e:
            _open(dev, **{"x-max-transfer": value})
        one_line(e.value)
        assert words in str(e.value)


@given(value=st.text(max_size=40) | st.integers() | st.floats() | st.none())
@fuzz
def test_x_max_transfer_garbage_is_a_one_line_error(value: object) -> None:
    try:
        parse_max_transfer(value)
    except RigError as e:
        one_line(e)
