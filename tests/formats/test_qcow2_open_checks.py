"""The header checks of QEMU's qcow2 open, side by side with qemu-io 7.2: images that differ
from a qemu-img one in a field or two, opened by both; the rig accepts what QEMU accepts and
refuses what it refuses (with one line), and a refused image is left as it was."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from rig.errors import RigError
from tests.cli.helpers import qemu_io
from tests.formats.helpers import open_qcow2, run
from tests.fuzzing import one_line

pytestmark = pytest.mark.rig_needs("qemu_utils")

Patch = Callable[[bytearray], None]


def _u32(off: int, value: int) -> Patch:
    return lambda b: struct.pack_into(">I", b, off, value)


def _u64(off: int, value: int) -> Patch:
    return lambda b: struct.pack_into(">Q", b, off, value)


def _l1_at_eof(b: bytearray) -> None:
    end = -(-len(b) // 65536) * 65536  # the first cluster past the file
    struct.pack_into(">Q", b, 40, end)  # the table reads as zeroes: nothing allocated


def _extension(etype: int, data: bytes) -> Patch:
    """The extension area (after qemu-img's 112-byte header) holds just this one."""
    def patch(b: bytearray) -> None:
        area = struct.pack(">II", etype, len(data)) + data + bytes(-len(data) % 8) + bytes(8)
        b[112:112 + len(area)] = area
    return patch


CASES: dict[str, tuple[list[str], Patch, bool]] = {
    # name: (qemu-img create options, patch, QEMU opens it)
    "snapshot table offset unaligned": ([], _u64(64, 0x10008), False),
    "snapshot table offset past 2^63": ([], _u64(64, 1 << 63), False),
    "backing format extension of 16 bytes": ([], _extension(0xE2792ACA, b"raw".ljust(16, b"\0")),
                                             False),
    "bitmaps extension of 8 bytes": ([], _extension(0x23852875, bytes(8)), False),
    "extension header cut by the backing name": ([], lambda b: (_u64(8, 116)(b), _u32(16, 0)(b)),
                                                 False),
    "compression type bit with zlib": ([], _u64(72, 1 << 3), False),
    "L1 table at the end of the file": ([], _l1_at_eof, True),
    "header_length 8192 in a 2 MiB cluster image": (["-o", "cluster_size=2M"],
                                                     _u32(100, 8192), True),
    "header_length 105": ([], _u32(100, 105), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_open_as_qemu_io(tmp_path: Path, case: str) -> None:
    options, patch, opens = CASES[case]
    img = tmp_path / "a.qcow2"
    run("qemu-img", "create", "-f", "qcow2", *options, img, "1M")
    data = bytearray(img.read_bytes())
    patch(data)
    before = bytes(data)
    img.write_bytes(before)
    q = qemu_io("-f", "qcow2", "-c", "read -P 0 0 4k", str(img))
    assert (q.rc == 0) is opens, q.err
    img.write_bytes(before)
    try:
        with open_qcow2(img) as blk:  # read-write, as qemu-io opened it
            assert blk.pread(0, 4096) == bytes(4096)
    except RigError as e:
        assert not opens, f"the rig refused what QEMU opens: {e}"
        one_line(e)
        assert img.read_bytes() == before, "a refused image was changed"
    else:
        assert opens, "the rig opened what QEMU refuses"
