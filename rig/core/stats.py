"""Per-backend I/O accounting (QEMU's BlockAcctStats, the parts a test asserts on).

:meth:`BlockStats.as_qemu` gives the counters under QEMU's names, as ``query-blockstats``
returns them (``BlockDeviceStats`` of QEMU 7.2): write-zeroes count as writes and discards as
unmaps, as QEMU's device models account them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

OP_KINDS = ("read", "write", "zero", "discard", "flush")
#: QEMU's accounting class of each rig op (``rd``, ``wr``, ``flush``, ``unmap``).
QEMU_CLASS = {"read": "rd", "write": "wr", "zero": "wr", "discard": "unmap", "flush": "flush"}


@dataclass
class OpStats:
    ops: int = 0
    bytes: int = 0
    failed: int = 0
    total_ns: int = 0
    invalid: int = 0


@dataclass
class BlockStats:
    """Counters for one backend. ``wr_highest_offset`` is the end of the highest write."""

    by_op: dict[str, OpStats] = field(default_factory=lambda: {k: OpStats() for k in OP_KINDS})
    wr_highest_offset: int = 0
    invalid: int = 0
    """Requests refused before they ran (bad offset or length), all kinds together."""
    last_done_ns: int = 0
    """``time.monotonic_ns()`` when the last request ended (0: none yet): QEMU's idle time."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def account_invalid(self, kind: str) -> None:
        """A request refused before it ran (out of bounds, negative), as QEMU's
        ``block_acct_invalid``."""
        with self._lock:
            self.invalid += 1
            self.by_op[kind].invalid += 1

    def account(self, kind: str, nbytes: int, elapsed_ns: int, ok: bool,
                end_offset: int = 0) -> None:
        with self._lock:
            self.last_done_ns = time.monotonic_ns()
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
