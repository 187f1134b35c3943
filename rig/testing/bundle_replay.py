"""Re-run a repro bundle's operation sequence and report the first divergence.

The checks are the state machine's (:class:`~rig.testing.machines.BlockDeviceMachine`): the
model starts from backend 0's content (zeroed first if the bundle says so), every read must
return what the model holds, a discard may leave the old data or zeroes but nothing else, an
operation must not fail, and at the end every byte of every backend must equal the model.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rig.core import values
from rig.core.backend import BlockBackend
from rig.core.node import ReqFlags
from rig.errors import ConfigError
from rig.testing.model import DiskModel
from rig.testing.ops import (
    Discard,
    Flush,
    Op,
    Read,
    Write,
    apply_to_backend,
    apply_to_model,
    describe_op,
)

_CHUNK = 1 << 20
INITIAL = -1
"""``Divergence.op_index`` of a difference in the initial content (before any operation)."""


@dataclass(frozen=True)
class Divergence:
    """Where a replay first went wrong. ``op_index`` is the operation's index in the sequence,
    :data:`INITIAL` for the starting content, ``len(ops)`` for the final comparison."""

    op_index: int
    op: str
    backend: int
    message: str
    offset: int | None = None
    got: str = ""
    expected: str = ""

    def __str__(self) -> str:
        where = {INITIAL: "initial content"}.get(self.op_index, f"op {self.op_index} ({self.op})")
        return f"{where}: backend {self.backend}: {self.message}"


@dataclass(frozen=True)
class ReplayResult:
    ops_run: int
    divergence: Divergence | None
    skipped_discards: dict[int, int] = field(default_factory=dict)
    """Backend index -> discards not aligned for it, replaced by write_zeroes."""

    @property
    def reproduced(self) -> bool:
        return self.divergence is not None


class _Diverged(Exception):
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(str(divergence))
        self.divergence = divergence


def _first_difference(a: bytes, b: bytes) -> int:
    if a == b:
        return -1
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


class _Replayer:
    def __init__(self, backends: Sequence[BlockBackend], size: int) -> None:
        self.backends = list(backends)
        self.size = size
        self.model = DiskModel(0)
        self.index = INITIAL
        self.op = "start"
        self.skipped_discards: dict[int, int] = {}

    def diverge(self, backend: int, message: str, offset: int | None = None, got: bytes = b"",
                expected: bytes = b"") -> _Diverged:
        return _Diverged(Divergence(self.index, self.op, backend, message, offset,
                                    got[:16].hex(), expected[:16].hex()))

    def compare(self, backend: int, offset: int, got: bytes, want: bytes, what: str) -> None:
        pos = _first_difference(got, want)
        if pos >= 0:
            g, w = got[pos:pos + 16], want[pos:pos + 16]
            raise self.diverge(backend, f"{what} differs at byte {offset + pos}: got "
                               f"{g.hex()}... expected {w.hex()}...", offset + pos, g, w)

    def start(self, zero: bool) -> None:
        for i, blk in enumerate(self.backends):
            length = blk.getlength()
            if length < self.size:
                raise ConfigError(f"backend {i} has {length} bytes; the bundle needs "
                                  f"{self.size}")
            if zero:
                with self.guard(i):
                    blk.write_zeroes(0, self.size, ReqFlags.MAY_UNMAP)
                    blk.flush()
        with self.guard(0):
            initial = self.backends[0].pread(0, self.size)
        for i in range(1, len(self.backends)):
            with self.guard(i):
                got = self.backends[i].pread(0, self.size)
            self.compare(i, 0, got, initial, "initial content")
        self.model = DiskModel(self.size, initial)

    @contextlib.contextmanager
    def guard(self, backend: int) -> Iterator[None]:
        """An OSError inside is a divergence of ``backend``: an operation must not fail."""
        try:
            yield
        except OSError as e:
            raise self.diverge(backend, f"failed: {type(e).__name__}: {e}") from None

    def step(self, index: int, op: Op) -> None:
        self.index, self.op = index, describe_op(op)
        if isinstance(op, Read):
            want = self.model.read(op.offset, op.length)
            for i, blk in enumerate(self.backends):
                with self.guard(i):
                    got = blk.pread(op.offset, op.length)
                self.compare(i, op.offset, got, want, "read")
        elif isinstance(op, Discard):
            for i, blk in enumerate(self.backends):
                self.discard(i, blk, op)
        else:
            for i, blk in enumerate(self.backends):
                with self.guard(i):
                    apply_to_backend(op, blk)
        if not isinstance(op, Read):
            apply_to_model(op, self.model)

    def discard(self, i: int, blk: BlockBackend, op: Discard) -> None:
        """Old data or zeroes may remain after a discard, nothing else (as the machine).

        A discard the backend cannot take (the bundle came from a device with finer
        granularity; a block device refuses partial blocks) is left out there, as if the device
        had kept the data: the range is zeroed to stay in step with the model.
        """
        lim = blk.limits
        unit = max(lim.request_alignment, lim.discard_granularity, 1)
        if (op.offset | op.length) % unit:
            self.skipped_discards[i] = self.skipped_discards.get(i, 0) + 1
            with self.guard(i):
                blk.write_zeroes(op.offset, op.length)
            return
        before = self.model.read(op.offset, op.length)
        with self.guard(i):
            blk.discard(op.offset, op.length)
            after = blk.pread(op.offset, op.length)
        bad = next((p for p, (a, b) in enumerate(zip(after, before, strict=True))
                    if a and a != b), -1)
        if bad >= 0:
            raise self.diverge(i, f"byte {op.offset + bad} reads 0x{after[bad]:02x} after the "
                               f"discard: neither zero nor the old 0x{before[bad]:02x}",
                               op.offset + bad, after[bad:bad + 1], before[bad:bad + 1])
        if any(after):
            with self.guard(i):
                blk.write_zeroes(op.offset, op.length)

    def finish(self, n_ops: int) -> None:
        self.index, self.op = n_ops, "final content"
        for offset in range(0, self.size, _CHUNK):
            n = min(_CHUNK, self.size - offset)
            want = self.model.read(offset, n)
            for i, blk in enumerate(self.backends):
                with self.guard(i):
                    got = blk.pread(offset, n)
                self.compare(i, offset, got, want, "final content")


def _ram() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def check_ops(ops: Sequence[Op], size: int) -> None:
    """A ConfigError naming the first operation that does not fit a ``size``-byte device (or a
    ``size`` the model cannot hold in memory), before any request is made."""
    values.size("size", size)
    ram = _ram()
    if ram and size > ram:
        raise ConfigError(f"'size': the model holds the device in memory, and {size} bytes is "
                          f"more than this machine's RAM ({ram} bytes)")
    for i, op in enumerate(ops):
        if isinstance(op, Flush):
            continue
        try:
            offset = values.offset("offset", op.offset)
            length = values.size("length", op.length)
            if isinstance(op, Write):
                values.integer("seed", op.seed, -values.MAX_COUNT - 1, values.MAX_COUNT)
        except values.BadValue as e:
            raise ConfigError(f"op {i} ({describe_op(op)}): {e}") from None
        if offset + length > size:
            raise ConfigError(f"op {i} ({describe_op(op)}): ends past the {size}-byte device")


def replay(ops: Sequence[Op], backends: Sequence[BlockBackend], *, size: int,
           zero_on_start: bool = False) -> ReplayResult:
    """Run ``ops`` on ``backends`` against a model of their first ``size`` bytes.

    Raises ConfigError if a backend is smaller than ``size`` or none is given, or an operation
    does not fit ``size`` (:func:`check_ops`, before any request).
    """
    if not backends:
        raise ConfigError("replay needs at least one backend")
    check_ops(ops, size)
    runner = _Replayer(backends, size)
    try:
        runner.start(zero_on_start)
        for index, op in enumerate(ops):
            runner.step(index, op)
        runner.finish(len(ops))
    except _Diverged as d:
        ran = max(d.divergence.op_index, 0) if d.divergence.op_index < len(ops) else len(ops)
        return ReplayResult(ran, d.divergence, runner.skipped_discards)
    return ReplayResult(len(ops), None, runner.skipped_discards)
