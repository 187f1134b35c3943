"""Fuzzing the qcow2 driver's header and table parsing: real images (made by qemu-img, data
written by qemu-io, a backing chain, compressed clusters) with bytes of the header, the header
extensions and backing name, the L1 and L2 tables, the refcount table and a refcount block
changed where Hypothesis chooses, then opened read-write and used.

Contract: the open succeeds or raises the rig's own error with one line, and then leaves the
image byte for byte as it was; requests succeed or raise OSError; nothing else, and no hang.
``RIG_FUZZ=long`` runs 10,000 images (see tests/fuzzing.py)."""

from __future__ import annotations

import signal
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.errors import RigError
from rig.formats.qcow2.header import decode
from tests.formats.helpers import open_qcow2, run
from tests.fuzzing import fuzz, one_line

pytestmark = [pytest.mark.fuzz, pytest.mark.rig_needs("qemu_utils")]

SIZE = 1 << 20
CS = 4096
HANG_SECONDS = 20
OFFSET = 0x00FF_FFFF_FFFF_FE00


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes
    regions: tuple[tuple[str, int, int], ...]
    """(what, first byte, end) of each metadata area mutations go to."""

    def __repr__(self) -> str:
        return f"Seed({self.name!r})"


def _regions(data: bytes) -> tuple[tuple[str, int, int], ...]:
    h = decode(data[:CS])
    l1 = h.l1_table_offset
    l2 = int(struct.unpack_from(">Q", data, l1)[0]) & OFFSET
    rt = h.refcount_table_offset
    rb = int(struct.unpack_from(">Q", data, rt)[0]) & OFFSET
    ext_end = h.backing_file_offset + h.backing_file_size if h.backing_file_offset else 400
    out = [("header", 0, 112), ("extensions", 112, max(ext_end, 120)),
           ("L1", l1, l1 + 16), ("reftable", rt, rt + 24), ("refblock", rb, rb + 64)]
    if l2:
        out.append(("L2", l2, l2 + 256))
    return tuple(out)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Seed]]:
    """The seed images, made once per module; mutated copies go to the same directory (where
    the backing file is)."""
    d = tmp_path_factory.mktemp("qcow2-fuzz")
    opts = ["-o", f"cluster_size={CS}"]
    made: dict[str, Path] = {}
    empty = made["empty"] = d / "empty.qcow2"
    run("qemu-img", "create", "-f", "qcow2", *opts, empty, str(SIZE))
    data = made["data"] = d / "data.qcow2"
    run("qemu-img", "create", "-f", "qcow2", *opts, data, str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 70000", "-c", "write -P 0x22 600k 9k",
        "-c", "write -z 8k 8k", data)
    base = d / "base.qcow2"
    run("qemu-img", "create", "-f", "qcow2", *opts, base, str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 300k", base)
    top = made["backing"] = d / "top.qcow2"
    run("qemu-img", "create", "-f", "qcow2", *opts, "-b", "base.qcow2", "-F", "qcow2", top)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x44 100k 50k", top)
    raw = d / "c.raw"
    raw.write_bytes(bytes(range(256)) * 400 + bytes(SIZE - 102_400))
    comp = made["compressed"] = d / "compressed.qcow2"
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", *opts, raw, comp)
    out = []
    for name, path in made.items():
        data_ = path.read_bytes()
        out.append(Seed(name, data_, _regions(data_)))
    return d, out


def edits(seed: Seed) -> st.SearchStrategy[list[tuple[int, int, int]]]:
    """1 to 4 edits (offset, bit to flip or -1, byte) inside the seed's metadata areas."""
    one = st.sampled_from(seed.regions).flatmap(
        lambda r: st.tuples(st.integers(r[1], r[2] - 1), st.integers(-1, 7), st.integers(0, 255)))
    return st.lists(one, min_size=1, max_size=4)


def mutated(seed: Seed, changes: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(seed.data)
    for pos, bit, value in changes:
        if pos >= len(buf):
            buf += bytes(pos + 1 - len(buf))
        buf[pos] = buf[pos] ^ (1 << bit) if bit >= 0 else value
    return bytes(buf)


@pytest.fixture(scope="module")
def no_hang() -> Iterator[None]:
    """SIGALRM fails an example that takes longer than HANG_SECONDS (armed per example)."""
    def hang(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"no answer within {HANG_SECONDS} s (a hang)")

    old = signal.signal(signal.SIGALRM, hang)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _use(img: Path) -> bool:
    """Open read-write and run a few requests: each succeeds or raises OSError. False when
    the open was refused (with one line)."""
    try:
        blk = open_qcow2(img)
    except RigError as e:
        one_line(e)
        return False
    with blk:
        for op in ("read", "status", "write", "zero", "discard", "read"):
            try:
                if op == "read":
                    blk.pread(0, SIZE)
                elif op == "status":
                    pos = 0
                    while pos < SIZE:
                        pos += blk.block_status(pos, SIZE - pos).length
                elif op == "write":
                    blk.pwrite(1000, bytes([0x55]) * 70_000)
                elif op == "zero":
                    blk.write_zeroes(600_000, 20_000)
                else:
                    blk.discard(0, 16384)
                    blk.flush()
            except OSError as e:
                assert str(e), f"{op}: an OSError without a message"
    return True


@given(data=st.data())
@fuzz
def test_mutated_images(seeds: tuple[Path, list[Seed]], no_hang: None,
                        data: st.DataObject) -> None:
    d, images = seeds
    seed = data.draw(st.sampled_from(images), label="seed")
    image = mutated(seed, data.draw(edits(seed), label="edits (offset, bit, byte)"))
    img = d / "m.qcow2"
    img.write_bytes(image)
    signal.alarm(HANG_SECONDS)
    try:
        opened = _use(img)
    finally:
        signal.alarm(0)
    if not opened:
        assert img.read_bytes() == image, "a refused image was changed"
