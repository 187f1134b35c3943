"""A dirty bitmap at a chosen granularity, fed by every write the backend completes."""

from __future__ import annotations

import threading


class DirtyBitmap:
    """One bit per ``granularity`` bytes of a device of ``length`` bytes."""

    def __init__(self, length: int, granularity: int = 65536, name: str = "") -> None:
        if granularity < 512 or granularity & (granularity - 1):
            raise ValueError(f"bitmap granularity must be a power of two >= 512: {granularity}")
        self.name = name
        self.granularity = granularity
        self.length = length
        self._bits = bytearray((self._nbits(length) + 7) // 8)
        self._lock = threading.Lock()
        self.enabled = True

    def _nbits(self, length: int) -> int:
        return (length + self.granularity - 1) // self.granularity

    def mark(self, offset: int, length: int) -> None:
        if not self.enabled or length <= 0:
            return
        first = offset // self.granularity
        last = (offset + length - 1) // self.granularity
        with self._lock:
            if last >= len(self._bits) * 8:
                self._bits.extend(bytes(last // 8 + 1 - len(self._bits)))
            for bit in range(first, last + 1):
                self._bits[bit >> 3] |= 1 << (bit & 7)

    def count(self) -> int:
        """Dirty bytes (whole granules)."""
        with self._lock:
            return sum(bin(b).count("1") for b in self._bits) * self.granularity

    def extents(self) -> list[tuple[int, int]]:
        """Dirty ``(offset, length)`` runs, merged."""
        out: list[tuple[int, int]] = []
        with self._lock:
            nbits = len(self._bits) * 8
            bit = 0
            while bit < nbits:
                if self._bits[bit >> 3] & (1 << (bit & 7)):
                    start = bit
                    while bit < nbits and self._bits[bit >> 3] & (1 << (bit & 7)):
                        bit += 1
                    out.append((start * self.granularity, (bit - start) * self.granularity))
                else:
                    bit += 1
        return out

    def clear(self) -> None:
        with self._lock:
            self._bits[:] = bytes(len(self._bits))
