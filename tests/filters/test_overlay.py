"""The overlay filter: reads see its writes over the base, the base is never written, and a
reset brings back exactly the base."""

from __future__ import annotations

import errno
import random
from collections.abc import Sequence

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

import rig
from rig.core.backend import BlockBackend
from rig.core.buffers import aligned_buffer
from rig.core.node import ReqFlags
from rig.errors import ConfigError
from rig.filters.overlay import OverlayFilter
from rig.testing import profiles
from rig.testing.machines import LockstepMachine
from rig.testing.model import DiskModel

SIZE = 96 * 1024


def _base(seed: int) -> bytes:
    return random.Random(seed).randbytes(SIZE)


def _fill(blk: BlockBackend, content: bytes) -> None:
    blk.pwrite(0, content)
    blk.flush()


def _fill_base(node: OverlayFilter, content: bytes) -> None:
    """Write ``content`` into the overlay's child, below the overlay."""
    buf = aligned_buffer(len(content))
    buf[:] = content
    node.child.pwritev(0, len(content), [buf], ReqFlags.NONE)


def _read_base(node: OverlayFilter) -> bytes:
    buf = aligned_buffer(node.child.getlength())
    node.child.preadv(0, len(buf), [buf], ReqFlags.NONE)
    return bytes(buf)


def test_overlay_reads_like_a_plain_device_and_never_writes_its_base() -> None:
    class OverlayVsMemory(LockstepMachine):
        max_len = 3 * 4096 + 300

        def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
            lbs = data.draw(st.sampled_from([1, 512, 4096]), label="logical block size")
            chunk = data.draw(st.sampled_from([c for c in (512, 4096, 16384) if c >= lbs]),
                              label="chunk size")
            self.content = _base(data.draw(st.integers(0, 3), label="base seed"))
            mem = {"driver": "memory", "size": SIZE, "logical-block-size": lbs}
            plain = self.open_graph(mem)
            over = self.open_graph({"driver": "overlay", "chunk-size": chunk, "file": mem})
            _fill(plain, self.content)
            over_node = over.root
            assert isinstance(over_node, OverlayFilter)
            _fill_base(over_node, self.content)
            self.overlay = over_node
            return [plain, over]

        @rule()
        def reset(self) -> None:
            dropped = self.overlay.reset()
            assert self.overlay.changed_bytes() == 0
            assert dropped >= 0
            same = self.backends[1].pread(0, self.size) == self.content
            assert same, "a reset overlay must read as its base"
            # The plain device and the model start again from the base too.
            _fill(self.backends[0], self.content)
            self.model = DiskModel(self.size, self.content)

        def teardown(self) -> None:
            if self.backends:
                same = _read_base(self.overlay) == self.content
                assert same, "the overlay wrote into its base"
            super().teardown()

    run_state_machine_as_test(OverlayVsMemory, settings=profiles.selected())


def test_put_lays_data_over_the_base_at_any_alignment() -> None:
    content = _base(7)
    with rig.open({"driver": "overlay", "file": {"driver": "memory", "size": SIZE}}) as blk:
        node = blk.root
        assert isinstance(node, OverlayFilter)
        _fill_base(node, content)
        node.put(4000, b"\xee" * 200)  # across a chunk boundary
        node.put(SIZE - 3, b"xyz")
        want = bytearray(content)
        want[4000:4200] = b"\xee" * 200
        want[SIZE - 3:] = b"xyz"
        assert bool(blk.pread(0, SIZE) == bytes(want)), "put() data missing"
        assert node.changed_bytes() == 3 * 4096
        blk.discard(8192, 4096)
        assert blk.pread(8192, 4096) == bytes(4096)
        assert node.reset() == 4
        assert bool(blk.pread(0, SIZE) == content), "reset did not bring the base back"
        assert bool(_read_base(node) == content), "the overlay wrote into its base"


def test_block_status_reports_overlay_chunks_as_data() -> None:
    with rig.open({"driver": "overlay", "file": {"driver": "memory", "size": SIZE}}) as blk:
        node = blk.root
        st0 = node.block_status(0, SIZE)
        assert not st0.data  # an empty memory node is a hole
        blk.pwrite(4096, b"a" * 4096)
        before = node.block_status(0, SIZE)
        assert not before.data and before.length == 4096
        at = node.block_status(4096, SIZE - 4096)
        assert at.data and at.allocated and at.length == 4096


@pytest.mark.parametrize("chunk", [256, 3000])
def test_bad_chunk_size_is_a_config_error(chunk: int) -> None:
    with pytest.raises(ConfigError, match="chunk-size"):
        rig.open({"driver": "overlay", "chunk-size": chunk,
                  "file": {"driver": "memory", "size": SIZE}})


def test_chunk_smaller_than_the_child_alignment_is_refused() -> None:
    with pytest.raises(ConfigError, match="request alignment 4096"):
        rig.open({"driver": "overlay", "chunk-size": 512,
                  "file": {"driver": "memory", "size": SIZE, "logical-block-size": 4096}})


def test_truncate_is_refused() -> None:
    with rig.open({"driver": "overlay", "file": {"driver": "memory", "size": SIZE}}) as blk:
        with pytest.raises(OSError) as e:
            blk.truncate(SIZE * 2)
        assert e.value.errno == errno.ENOTSUP
