"""DiskModel: what a block device must return, and what may survive a power cut.

The model keeps two byte maps: ``current`` (what reads return now) and ``durable`` (what is on
stable media). ``flush`` makes the current content durable; a FUA write or FUA write_zeroes
makes its own range durable. Writes since the last flush are kept as a list of ``(offset, data)``
so that :meth:`possible_after_power_cut` can say, per byte, which values a device may hold after
a power cut: the durable value or any value written to that byte since the last flush (a
volatile cache may write back any subset, torn at any byte, in any order).

Discard: a real device may read back zeroes or the old data after a discard (it is advisory).
The model says zeroes, because the rig's drivers punch holes (file) or BLKDISCARD devices that
zero; machines that allow old data check that themselves. Write-wise a discard is volatile like
a write of zeroes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PowerCutViolation:
    """A byte whose observed value no power cut could have produced."""

    offset: int
    observed: int
    allowed: frozenset[int]

    def __str__(self) -> str:
        allowed = ", ".join(f"0x{v:02x}" for v in sorted(self.allowed))
        return (f"byte {self.offset}: read 0x{self.observed:02x}, "
                f"but only {{{allowed}}} could survive a power cut")


class DiskModel:
    """A byte map of ``size`` bytes with a durable shadow. Starts zeroed, or as ``initial``."""

    def __init__(self, size: int, initial: bytes | None = None) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0: {size}")
        if initial is not None and len(initial) != size:
            raise ValueError(f"initial content is {len(initial)} bytes, not {size}")
        self.size = size
        self._current = bytearray(initial if initial is not None else size)
        self._durable = bytearray(self._current)
        self._pending: list[tuple[int, bytes]] = []

    # ------------------------------------------------------------- checks
    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"[{offset}, {offset + length}) is outside the model (0..{self.size})")

    # ------------------------------------------------------------- verbs
    def write(self, offset: int, data: bytes, fua: bool = False) -> None:
        data = bytes(data)
        self._check(offset, len(data))
        if not data:
            return
        self._current[offset:offset + len(data)] = data
        if fua:
            self._make_durable(offset, data)
        else:
            self._pending.append((offset, data))

    def zero(self, offset: int, length: int, fua: bool = False) -> None:
        self.write(offset, bytes(length), fua)

    def discard(self, offset: int, length: int) -> None:
        """Modelled as reading back zeroes (see the module docstring); not durable until flush."""
        self.write(offset, bytes(length))

    def flush(self) -> None:
        """Everything written so far becomes durable."""
        self._durable[:] = self._current
        self._pending.clear()

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return bytes(self._current[offset:offset + length])

    @property
    def dirty(self) -> bool:
        """True when some write is not durable yet."""
        return bool(self._pending)

    def durable(self, offset: int = 0, length: int | None = None) -> bytes:
        length = self.size - offset if length is None else length
        self._check(offset, length)
        return bytes(self._durable[offset:offset + length])

    def _make_durable(self, offset: int, data: bytes) -> None:
        """A FUA write: its bytes are durable, and older cached writes there are superseded."""
        end = offset + len(data)
        self._durable[offset:end] = data
        kept: list[tuple[int, bytes]] = []
        for p_off, p_data in self._pending:
            p_end = p_off + len(p_data)
            if p_end <= offset or p_off >= end:
                kept.append((p_off, p_data))
                continue
            if p_off < offset:
                kept.append((p_off, p_data[:offset - p_off]))
            if p_end > end:
                kept.append((end, p_data[end - p_off:]))
        self._pending = kept

    # -------------------------------------------------------- power cut
    def possible_after_power_cut(self, offset: int, length: int) -> list[frozenset[int]]:
        """For each byte of the range, the set of values a device may hold after a power cut."""
        self._check(offset, length)
        end = offset + length
        extra: dict[int, set[int]] = {}
        for p_off, p_data in self._pending:
            lo, hi = max(offset, p_off), min(end, p_off + len(p_data))
            for pos in range(lo, hi):
                extra.setdefault(pos, set()).add(p_data[pos - p_off])
        out: list[frozenset[int]] = []
        for pos in range(offset, end):
            values = extra.get(pos)
            durable = self._durable[pos]
            out.append(frozenset({durable}) if values is None else frozenset({durable, *values}))
        return out

    def power_cut_violations(self, offset: int, observed: bytes,
                             limit: int = 10) -> list[PowerCutViolation]:
        """Bytes of ``observed`` (read at ``offset`` after a power cut) no power cut explains."""
        observed = bytes(observed)
        self._check(offset, len(observed))
        out: list[PowerCutViolation] = []
        if not self._pending:  # fast path: everything must be durable
            want_all = self.durable(offset, len(observed))
            if observed == want_all:
                return out
            for i, (got, want) in enumerate(zip(observed, want_all, strict=True)):
                if got != want:
                    out.append(PowerCutViolation(offset + i, got, frozenset({want})))
                    if len(out) >= limit:
                        break
            return out
        for i, allowed in enumerate(self.possible_after_power_cut(offset, len(observed))):
            if observed[i] not in allowed:
                out.append(PowerCutViolation(offset + i, observed[i], allowed))
                if len(out) >= limit:
                    break
        return out

    def power_cut(self, observed: bytes) -> None:
        """Accept the whole device's content after a power cut; it becomes current and durable.

        Raises ``AssertionError`` naming the first bytes no power cut could have produced.
        """
        violations = self.power_cut_violations(0, observed)
        if violations:
            raise AssertionError("impossible content after power cut: "
                                 + "; ".join(str(v) for v in violations))
        self._current[:] = observed
        self.flush()
