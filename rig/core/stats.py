"""Per-backend I/O accounting (QEMU's BlockAcctStats, the parts a test asserts on).

:meth:`BlockStats.as_qemu` gives the counters under QEMU's names, as ``query-blockstats``
returns them (``BlockDeviceStats`` of QEMU 7.2): write-zeroes count as writes and discards as
unmaps, as QEMU's device models account them.
"""

from __future__ import annotations

import threading
import time

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

OP_KINDS = ("read", "write", "zero", "discard", "flush")
#: QEMU's accounting class of each rig op (``rd``, ``wr``, ``flush``, ``unmap``).
QEMU_CLASS = {"read": "rd", "write": "wr", "zero": "wr", "discard": "unmap", "flush": "flush"}


class OpStats:
    """One kind of request's counters (compared by value, as the dataclass it was)."""

    __slots__ = ("bytes", "failed", "invalid", "ops", "total_ns")

    def __init__(self, ops: int = 0, bytes: int = 0, failed: int = 0, total_ns: int = 0,
                 invalid: int = 0) -> None:
        self.ops = ops
        self.bytes = bytes
        self.failed = failed
        self.total_ns = total_ns
        self.invalid = invalid

    def _values(self) -> tuple[int, int, int, int, int]:
        return self.ops, self.bytes, self.failed, self.total_ns, self.invalid

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, OpStats)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass with eq

    def __repr__(self) -> str:
        return (f"OpStats(ops={self.ops!r}, bytes={self.bytes!r}, failed={self.failed!r}, "
                f"total_ns={self.total_ns!r}, invalid={self.invalid!r})")


class BlockStats:
    """Counters for one backend. ``wr_highest_offset`` is the end of the highest write.

    (A plain class, not a dataclass: the dataclasses module costs ``rig io`` start-up.)"""

    def __init__(self, by_op: dict[str, OpStats] | None = None, wr_highest_offset: int = 0,
                 invalid: int = 0, last_done_ns: int = 0) -> None:
        self.by_op = {k: OpStats() for k in OP_KINDS} if by_op is None else by_op
        self.wr_highest_offset = wr_highest_offset
        self.invalid = invalid
        """Requests refused before they ran (bad offset or length), all kinds together."""
        self.last_done_ns = last_done_ns
        """``time.monotonic_ns()`` when the last request ended (0: none yet): QEMU's idle
        time."""
        self._lock = threading.Lock()

    def _values(self) -> tuple[Any, ...]:
        return self.by_op, self.wr_highest_offset, self.invalid, self.last_done_ns

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, BlockStats)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"BlockStats(by_op={self.by_op!r}, wr_highest_offset="
                f"{self.wr_highest_offset!r}, invalid={self.invalid!r}, "
                f"last_done_ns={self.last_done_ns!r})")

    def account_invalid(self, kind: str) -> None:
        """A request refused before it ran (out of bounds, negative), as QEMU's
        ``block_acct_invalid``."""
        with self._lock:
            self.invalid += 1
            self.by_op[kind].invalid += 1

    def account(self, kind: str, nbytes: int, elapsed_ns: int, ok: bool,
                end_offset: int = 0, done_ns: int = 0) -> None:
        """Count one request; ``done_ns``: when it ended (``time.monotonic_ns()``, which on
        Linux is the clock of ``time.perf_counter_ns()``, so the caller's end time does)."""
        with self._lock:
            self.last_done_ns = done_ns or time.monotonic_ns()
            s = self.by_op[kind]
            s.total_ns += elapsed_ns
            if ok:
                s.ops += 1
                s.bytes += nbytes
                if kind in ("write", "zero") and end_offset > self.wr_highest_offset:
                    self.wr_highest_offset = end_offset
            else:
                s.failed += 1

    def as_dict(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {
                f"{kind}_{name}": getattr(s, name)
                for kind, s in self.by_op.items()
                for name in ("ops", "bytes", "failed", "total_ns")
            }
            out["wr_highest_offset"] = self.wr_highest_offset
            out["invalid"] = self.invalid
            return out

    def as_qemu(self) -> dict[str, Any]:
        """The counters as QEMU 7.2's ``BlockDeviceStats`` (``query-blockstats``)."""
        out: dict[str, Any] = {}
        with self._lock:
            for cls in ("rd", "wr", "flush", "unmap"):
                kinds = [k for k in OP_KINDS if QEMU_CLASS[k] == cls]
                ops = [self.by_op[k] for k in kinds]
                if cls != "flush":
                    out[f"{cls}_bytes"] = sum(o.bytes for o in ops)
                    out[f"{cls}_merged"] = 0
                out[f"{cls}_operations"] = sum(o.ops for o in ops)
                out[f"{cls}_total_time_ns"] = sum(o.total_ns for o in ops)
                out[f"failed_{cls}_operations"] = sum(o.failed for o in ops)
                out[f"invalid_{cls}_operations"] = sum(o.invalid for o in ops)
            out["wr_highest_offset"] = self.wr_highest_offset
            if self.last_done_ns:
                out["idle_time_ns"] = time.monotonic_ns() - self.last_done_ns
        out["account_invalid"] = True
        out["account_failed"] = True
        out["timed_stats"] = []
        return out
