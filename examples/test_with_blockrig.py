"""Using blockrig in your own test suite: a complete example.

Install blockrig and run ``pytest examples/test_with_blockrig.py`` (as root, so the loop device
and filesystem tests run; elsewhere they skip and say why). The plugin is loaded automatically;
tests/plugin/test_example.py runs this file so it stays true.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st

from rig.core.backend import BlockBackend
from rig.drivers.lab import LabDisk
from rig.drivers.loop import LoopDevice
from rig.testing.machines import LockstepMachine
from rig.testing.strategies import cache_modes, graph_specs

KiB = 1024


def test_image_file(rig_image: Callable[..., Path], rig_graph: Callable[..., BlockBackend]) -> None:
    """A scratch image under a raw format node; no root needed."""
    image = rig_image("1M")
    blk = rig_graph({"driver": "raw", "file": {"driver": "file", "filename": str(image)}})
    blk.pwrite(100, b"hello")
    assert blk.pread(100, 5) == b"hello"
    assert image.stat().st_size == 1 << 20


@pytest.mark.rig_needs("loop")
def test_loop_device_with_4k_sectors(rig_loop: Callable[..., LoopDevice],
                                     rig_graph: Callable[..., BlockBackend]) -> None:
    """A real block device with 4 KiB logical blocks and O_DIRECT: an unaligned write is a
    read-modify-write in the rig, and reads back exactly."""
    dev = rig_loop("16M", block_size=4096, direct_io=True)
    blk = rig_graph({"driver": "host_device", "filename": dev.path}, cache="none")
    assert blk.limits.request_alignment == 4096
    blk.pwrite(1, b"unaligned")
    blk.flush()
    assert blk.pread(0, 10) == b"\0unaligned"


def test_injected_read_error(rig_faulty: Callable[..., BlockBackend]) -> None:
    """blkdebug rules: the first read fails with EIO, the next one works."""
    blk = rig_faulty([{"event": "read_aio", "errno": errno.EIO, "once": True}], on="memory")
    with pytest.raises(OSError) as exc:
        blk.pread(0, 512)
    assert exc.value.errno == errno.EIO
    assert blk.pread(0, 512) == bytes(512)


@pytest.mark.rig_needs("mkfs")
def test_filesystem_on_a_loop_device(rig_loop: Callable[..., LoopDevice],
                                     rig_mount: Callable[..., Path]) -> None:
    """mkfs.ext4 and mount; the plugin unmounts and detaches after the test."""
    mnt = rig_mount(rig_loop("32M"))
    (mnt / "hello.txt").write_text("hello")
    assert (mnt / "hello.txt").read_text() == "hello"


class FilterStacks(LockstepMachine):
    """A RAM disk in lockstep with filter stacks Hypothesis draws (raw and blkdebug layers with
    their own alignment and max-transfer): every read must agree. A failure writes a repro
    bundle that ``rig replay`` re-runs."""

    io_align = 4096  # the largest alignment the drawn graphs have

    def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
        cache = data.draw(cache_modes(direct=False), label="cache")
        stack = data.draw(graph_specs(size=256 * KiB), label="graph")
        return [self.open_graph({"driver": "memory", "size": 256 * KiB}, cache=cache),
                self.open_graph(stack, cache=cache)]


TestFilterStacks = FilterStacks.TestCase
TestFilterStacks.settings = settings(max_examples=15, stateful_step_count=15, deadline=None)


def test_lab_disk(rig_lab_disk: Callable[..., LabDisk]) -> None:
    """A real disk from the lab inventory (``--rig-lab lab.toml --rig-allow-destructive``);
    skipped without one. It is leased for this test and checked before any write."""
    disk = rig_lab_disk("scratch")
    with disk.open(cache="none") as blk:
        blk.pwrite(0, b"\xa5" * 4096, fua=True)
        assert blk.pread(0, 4096) == b"\xa5" * 4096
