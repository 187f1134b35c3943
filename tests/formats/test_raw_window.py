"""The raw format's window (QEMU's ``offset`` and ``size``) over children of every alignment.

QEMU pads each node's requests to its child's alignment; the rig aligns once, at the backend,
for the whole chain. So a window may start anywhere in a child that takes any byte (a file
opened without O_DIRECT, as in QEMU), at a multiple of a child's block size, and is refused at
open, in one line, where it would start between two of the child's blocks (the fuzz suite
found the unaligned request it used to send)."""

from __future__ import annotations

from pathlib import Path

import pytest

import rig
from rig.errors import ConfigError

KiB = 1 << 10


def _memory(block: int) -> dict[str, object]:
    return {"driver": "memory", "size": "64k", "logical-block-size": block}


def test_a_window_between_two_blocks_of_the_child_is_refused_at_open() -> None:
    with pytest.raises(ConfigError) as e:
        rig.open({"driver": "raw", "offset": 1, "file": _memory(512)})
    msg = str(e.value)
    assert "\n" not in msg
    assert "raw offset 1 is not a multiple of the request alignment (512)" in msg
    assert "cache.direct=off" in msg


def test_a_nested_window_is_checked_against_its_own_child() -> None:
    spec = {"driver": "raw", "size": "32k",
            "file": {"driver": "raw", "offset": 1, "size": "32k", "file": _memory(512)}}
    with pytest.raises(ConfigError, match="raw offset 1 is not a multiple"):
        rig.open(spec)


def test_a_block_aligned_window_reads_and_writes_its_bytes() -> None:
    with rig.open({"driver": "raw", "offset": 4 * KiB, "size": "8k",
                   "file": _memory(4096)}) as blk:
        blk.pwrite(0, b"\x5a" * 4096)
        assert blk.getlength() == 8 * KiB
        assert blk.pread(0, 4096) == b"\x5a" * 4096
        below = blk.root.child
        assert below.getlength() == 64 * KiB
        data = bytearray(8 * KiB)
        below.preadv(0, 8 * KiB, [memoryview(data)])
        assert bytes(data) == bytes(4 * KiB) + b"\x5a" * 4096


def test_any_offset_over_a_file_without_o_direct(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(range(256)) * 64)
    with rig.open({"driver": "raw", "offset": 1, "size": "4k",
                   "file": {"driver": "file", "filename": str(image)}}) as blk:
        assert blk.pread(0, 512) == (bytes(range(256)) * 3)[1:513]
