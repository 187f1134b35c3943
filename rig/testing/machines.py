"""State machines: a device beside the :class:`DiskModel`, or several devices in lockstep.

Subclass and implement :meth:`BlockDeviceMachine.make_backends`; run with Hypothesis::

    class MyDisk(BlockDeviceMachine):
        def make_backends(self, data):
            cache = data.draw(cache_modes(), label="cache")
            return [self.open_graph({"driver": "host_device", "filename": "/dev/sdx"},
                                    cache=cache)]

    TestMyDisk = MyDisk.TestCase

Each example opens the backends in an ``initialize`` step (draws there, such as a cache mode,
vary per example), runs rules, then compares the whole device with the model at teardown and
releases the backends (:meth:`release_backends`, closing them by default).

When an example fails, Hypothesis's final (shrunk) run writes a repro bundle
(:mod:`rig.testing.bundle`): the graphs opened with :meth:`~BlockDeviceMachine.open_graph`, the
operations, and where the backends diverged; ``rig replay BUNDLE`` re-runs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from hypothesis import strategies as st
from hypothesis.errors import InvalidDefinition
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rig.core.backend import BlockBackend
from rig.core.graph import GraphSpec
from rig.core.node import ReqFlags
from rig.testing.model import DiskModel
from rig.testing.ops import (
    Discard,
    Flush,
    Op,
    Read,
    Write,
    WriteZeroes,
    apply_to_backend,
    apply_to_model,
)
from rig.testing.recorder import Recorder
from rig.testing.strategies import extents

_COMPARE_CHUNK = 1 << 20


def first_difference(a: bytes, b: bytes) -> int:
    """The index of the first differing byte (``-1`` when equal)."""
    if a == b:
        return -1
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


class BlockDeviceMachine(RuleBasedStateMachine):
    """Backends from :meth:`make_backends` driven against a :class:`DiskModel`."""

    #: Largest request the rules issue.
    max_len: ClassVar[int] = 64 * 1024
    #: Test only the first ``window`` bytes of the devices (None: all of them).
    window: ClassVar[int | None] = None
    #: Zero the devices when an example starts (else the model starts from their content).
    zero_on_start: ClassVar[bool] = False
    #: make_backends() must return at least this many.
    min_backends: ClassVar[int] = 1
    #: The block size the rules aim their edge cases at. None: the largest request_alignment of
    #: the backends. Set it when a backend probes its alignment from its content (an O_DIRECT
    #: file reads block 0, which a hole answers differently), or Hypothesis sees the strategies
    #: change between examples and reports a flaky definition.
    io_align: ClassVar[int | None] = None
    #: Write a repro bundle (rig.testing.bundle) when an example fails.
    repro_bundles: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.backends: list[BlockBackend] = []
        self.model = DiskModel(0)
        self.size = 0
        self.align = 1
        self.discard_align = 1
        self.discards_kept_data = 0
        """Discards after which some backend still held old data (allowed, then zeroed)."""
        self._rule_failed = False
        cls = type(self)
        self.recorder = Recorder(f"{cls.__module__}.{cls.__qualname__}")
        """The example's graphs, operations and failure, for the repro bundle."""

    # -------------------------------------------------------------- hooks
    def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
        """Open the backends for one example. ``data`` draws per-example choices."""
        raise InvalidDefinition(f"{type(self).__name__} must implement make_backends()")

    def release_backends(self) -> None:
        """Called at the end of every example: close the backends."""
        for blk in self.backends:
            blk.close()

    def open_graph(self, spec: GraphSpec, *, cache: str = "writeback",
                   read_only: bool = False) -> BlockBackend:
        """``rig.open(spec, ...)``, remembered so a repro bundle can name the graph and
        ``rig replay`` can open it again. Use it in :meth:`make_backends`."""
        import rig

        blk = rig.open(spec, cache=cache, read_only=read_only)
        self.recorder.opened(blk, spec, cache, read_only)
        return blk

    def describe(self, index: int) -> str:
        blk = self.backends[index]
        return f"backend {index} ({blk.root.describe()})"

    # -------------------------------------------------------------- setup
    @initialize(data=st.data())
    def open_backends(self, data: st.DataObject) -> None:
        self.backends = list(self.make_backends(data))
        self.recorder.ready(self.backends, self.describe)
        if len(self.backends) < self.min_backends:
            raise InvalidDefinition(f"{type(self).__name__}.make_backends() returned "
                                    f"{len(self.backends)} backends, needs {self.min_backends}")
        self.size = min(blk.getlength() for blk in self.backends)
        if self.window is not None:
            self.size = min(self.size, self.window)
        self.align = self.io_align or max(blk.limits.request_alignment for blk in self.backends)
        self.discard_align = max(self.align, *(blk.limits.discard_granularity
                                               for blk in self.backends))
        if self.zero_on_start:
            for blk in self.backends:
                blk.write_zeroes(0, self.size, ReqFlags.MAY_UNMAP)
                blk.flush()
        initial = self.backends[0].pread(0, self.size)
        for i in range(1, len(self.backends)):
            self._assert_same(i, 0, self.backends[i].pread(0, self.size), initial,
                              "initial content")
        self.model = DiskModel(self.size, initial)

    # -------------------------------------------------------------- checks
    def _assert_same(self, index: int, offset: int, got: bytes, want: bytes, what: str) -> None:
        pos = first_difference(got, want)
        if pos < 0:
            return
        self._rule_failed = True
        g = got[pos:pos + 16].hex()
        w = want[pos:pos + 16].hex()
        message = (f"{self.describe(index)}: {what} differs at byte {offset + pos}: "
                   f"got {g}... expected {w}...")
        self.recorder.fail("mismatch", message, backend=index, offset=offset + pos, got=g,
                           expected=w)
        raise AssertionError(message)

    def check_read(self, offset: int, results: list[bytes], expected: bytes) -> None:
        """Every backend's read must equal the model's."""
        for i, got in enumerate(results):
            self._assert_same(i, offset, got, expected, f"read [{offset}, +{len(expected)})")

    @contextlib.contextmanager
    def step(self, op: Op) -> Iterator[None]:
        """Run one operation's code inside: it is recorded, and an exception marks the example
        failed (the teardown then skips the final comparison and writes the repro bundle)."""
        self.recorder.op(op)
        self._rule_failed = True  # until the op and its checks complete
        try:
            yield
        except BaseException as e:
            self.recorder.raised(e)
            raise
        self._rule_failed = False

    def do(self, op: Op) -> None:
        """Apply ``op`` to the model and to every backend, checking reads."""
        with self.step(op):
            if isinstance(op, Read):
                expected = self.model.read(op.offset, op.length)
                results = [blk.pread(op.offset, op.length) for blk in self.backends]
                self.check_read(op.offset, results, expected)
            else:
                for blk in self.backends:
                    apply_to_backend(op, blk)
                apply_to_model(op, self.model)

    def _extent(self, data: st.DataObject, *, aligned_to: int = 0) -> tuple[int, int]:
        align = aligned_to or self.align
        return data.draw(extents(self.size, align, self.max_len, unaligned=not aligned_to),
                         label="extent")

    # -------------------------------------------------------------- rules
    @rule(data=st.data(), seed=st.integers(0, 0xFFFF))
    def write(self, data: st.DataObject, seed: int) -> None:
        self.do(Write(*self._extent(data), seed))

    @rule(data=st.data(), seed=st.integers(0, 0xFFFF))
    def write_fua(self, data: st.DataObject, seed: int) -> None:
        self.do(Write(*self._extent(data), seed, fua=True))

    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        self.do(Read(*self._extent(data)))

    @rule(data=st.data(), may_unmap=st.booleans(), fua=st.booleans())
    def zeroes(self, data: st.DataObject, may_unmap: bool, fua: bool) -> None:
        self.do(WriteZeroes(*self._extent(data), may_unmap, fua))

    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        """Discard whole blocks. A backend may keep the old data (discard is advisory): each
        byte must read back as zero or as before, and a backend that kept data is zeroed so the
        devices stay in lockstep with the model (which says zeroes)."""
        if self.size < self.discard_align:
            return
        offset, length = self._extent(data, aligned_to=self.discard_align)
        with self.step(Discard(offset, length)):
            before = self.model.read(offset, length)
            for i, blk in enumerate(self.backends):
                blk.discard(offset, length)
                after = blk.pread(offset, length)
                if any(after):
                    bad = [p for p, (a, b) in enumerate(zip(after, before, strict=True))
                           if a and a != b]
                    if bad:
                        pos = offset + bad[0]
                        message = (f"{self.describe(i)}: after discard [{offset}, +{length}) "
                                   f"byte {pos} reads 0x{after[bad[0]]:02x}: neither zero nor "
                                   f"the old 0x{before[bad[0]]:02x}")
                        self.recorder.fail("discard", message, backend=i, offset=pos)
                        raise AssertionError(message)
                    self.discards_kept_data += 1
                    blk.write_zeroes(offset, length)
            self.model.discard(offset, length)

    @rule()
    def flush(self) -> None:
        self.do(Flush())

    @invariant()
    def lengths_unchanged(self) -> None:
        for i, blk in enumerate(self.backends):
            assert blk.getlength() >= self.size, f"{self.describe(i)} shrank"

    # ----------------------------------------------------------- teardown
    def check_all(self) -> None:
        """Compare the whole device range of every backend with the model."""
        for offset in range(0, self.size, _COMPARE_CHUNK):
            n = min(_COMPARE_CHUNK, self.size - offset)
            expected = self.model.read(offset, n)
            for i, blk in enumerate(self.backends):
                self._assert_same(i, offset, blk.pread(offset, n), expected, "final content")

    def teardown(self) -> None:
        try:
            if self.backends and not self._rule_failed:
                self.recorder.finishing()
                try:
                    self.check_all()
                except AssertionError as e:
                    self.recorder.raised(e)
                    self.write_repro_bundle()
                    raise
            elif self._rule_failed:
                self.write_repro_bundle()
        finally:
            self.release_backends()

    def write_repro_bundle(self) -> Path | None:
        """Write the failed example's repro bundle (see :mod:`rig.testing.bundle`), unless
        ``repro_bundles`` is off or this is not Hypothesis's final run of the example."""
        if not self.repro_bundles:
            return None
        return self.recorder.write(self.size, self.zero_on_start)


class LockstepMachine(BlockDeviceMachine):
    """Several backends driven with the same operations; every read must agree across all of
    them (a disagreement names the backends on each side) and with the model.

    The devices are zeroed when each example starts, so they begin equal.
    """

    zero_on_start: ClassVar[bool] = True

    min_backends: ClassVar[int] = 2

    def check_read(self, offset: int, results: list[bytes], expected: bytes) -> None:
        for i in range(1, len(results)):
            pos = first_difference(results[i], results[0])
            if pos >= 0:
                self._rule_failed = True
                agree = [j for j, r in enumerate(results) if r == results[0]]
                model_side = "backend 0's side" if results[0] == expected else (
                    f"backend {i}'s side" if results[i] == expected else "neither side")
                message = (
                    f"backends disagree on read [{offset}, +{len(expected)}) at byte "
                    f"{offset + pos}: {self.describe(0)} (with {agree}) has "
                    f"{results[0][pos:pos + 8].hex()}, {self.describe(i)} has "
                    f"{results[i][pos:pos + 8].hex()}; the model is on {model_side}")
                self.recorder.fail("disagreement", message, backends=[0, i], agree_with_0=agree,
                                   offset=offset + pos, model_side=model_side)
                raise AssertionError(message)
        super().check_read(offset, results, expected)

