"""The memory protocol driver: options, data, allocation status, truncate."""

from __future__ import annotations

from typing import Any

import pytest

import rig
from rig.core.node import ReqFlags
from rig.errors import ConfigError
from rig.nodes.memory import MemoryNode


def test_options_set_size_alignment_and_max_transfer() -> None:
    with rig.open({"driver": "memory", "size": "1M", "logical-block-size": "4k",
                   "max-transfer": 65536}) as b:
        assert b.getlength() == 1 << 20
        assert b.limits.request_alignment == 4096
        assert b.limits.max_transfer == 65536
        assert isinstance(b.root, MemoryNode)


def test_defaults_are_byte_addressable_and_unlimited() -> None:
    with rig.open("driver=memory,size=4096") as b:
        assert b.limits.request_alignment == 1
        assert b.limits.max_transfer == 0


@pytest.mark.parametrize(("spec", "message"), [
    ({"driver": "memory"}, "Parameter 'size' is missing"),
    ({"driver": "memory", "size": "lots"}, "Parameter 'size' expects"),
    ({"driver": "memory", "size": 4096, "logical-block-size": 3}, "power of two"),
    ({"driver": "memory", "size": 4096, "logical-block-size": 512, "max-transfer": 1000},
     "not a multiple of logical-block-size"),
    ({"driver": "memory", "size": 1000, "logical-block-size": 512}, "size: 1000"),
    ({"driver": "memory", "size": 4096, "colour": "red"}, "doesn't support the option 'colour'"),
])
def test_bad_options_are_config_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rig.open(spec)


def test_scattered_buffers_read_and_write_in_order() -> None:
    with rig.open({"driver": "memory", "size": 64}) as b:
        b.pwritev(10, [b"abc", bytearray(b"de"), memoryview(b"f")])
        first, second = bytearray(2), bytearray(5)
        b.preadv(9, [first, second])
        assert (bytes(first), bytes(second)) == (b"\0a", b"bcdef")


def test_block_status_follows_writes_zeroes_and_discards() -> None:
    with rig.open({"driver": "memory", "size": 8 * 4096}) as b:
        fresh = b.block_status(0, 8 * 4096)
        assert (fresh.length, fresh.data, fresh.zero) == (8 * 4096, False, True)
        b.pwrite(4096 + 10, b"x")
        b.pwrite(2 * 4096, b"y")
        st = b.block_status(0, 8 * 4096)
        assert (st.length, st.data, st.zero) == (4096, False, True)
        st = b.block_status(4096, 7 * 4096)
        assert (st.offset, st.length, st.data, st.zero) == (4096, 2 * 4096, True, False)
        b.write_zeroes(4096, 4096)
        st = b.block_status(4096, 4096)
        assert (st.data, st.zero) == (True, True)
        b.write_zeroes(4096, 4096, ReqFlags.MAY_UNMAP)
        assert not b.block_status(4096, 4096).data
        b.discard(2 * 4096, 4096 + 100)  # the partial granule stays data
        assert not b.block_status(2 * 4096, 4096).data
        assert b.block_status(3 * 4096, 4096).data is False  # never written
        assert b.pread(2 * 4096, 1) == b"\0"


def test_discard_keeps_a_partly_covered_granule_as_data() -> None:
    with rig.open({"driver": "memory", "size": 3 * 4096}) as b:
        b.pwrite(0, b"z" * 3 * 4096)
        b.discard(0, 4096 + 512)
        assert not b.block_status(0, 4096).data
        st = b.block_status(4096, 2 * 4096)
        assert (st.data, st.length) == (True, 2 * 4096)
        assert b.pread(4096, 513) == bytes(512) + b"z"


def test_truncate_shrinks_then_grows_with_zeroes() -> None:
    with rig.open({"driver": "memory", "size": 8192}) as b:
        b.pwrite(0, b"q" * 8192)
        b.truncate(100)
        assert b.getlength() == 100
        b.truncate(8192)
        assert b.pread(98, 4) == b"qq\0\0"
        assert b.pread(8188, 4) == bytes(4)


def test_truncate_to_a_partial_block_is_einval() -> None:
    with rig.open({"driver": "memory", "size": 8192, "logical-block-size": 4096}) as b:
        with pytest.raises(OSError, match="multiple of the block size"):
            b.truncate(5000)
        assert b.getlength() == 8192
