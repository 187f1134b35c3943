"""Per-backend I/O accounting (QEMU's BlockAcctStats, the parts a test asserts on)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

OP_KINDS = ("read", "write", "zero", "discard", "flush")


@dataclass
class OpStats:
    ops: int = 0
    bytes: int = 0
    failed: int = 0
    total_ns: int = 0


@dataclass
class BlockStats:
    """Counters for one backend. ``wr_highest_offset`` is the end of the highest write."""

    by_op: dict[str, OpStats] = field(default_factory=lambda: {k: OpStats() for k in OP_KINDS})
    wr_highest_offset: int = 0
    invalid: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def account(self, kind: str, nbytes: int, elapsed_ns: int, ok: bool,
                end_offset: int = 0) -> None:
        with self._lock:
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
