"""Per-node block limits (QEMU's BlockLimits), and how a filter stack combines them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Largest single request the chokepoint will pass down when a node sets no max_transfer.
#: The same cap as QEMU's BDRV_REQUEST_MAX_BYTES rounded down to 1 MiB.
DEFAULT_MAX_TRANSFER = 2147483648 - 1024 * 1024


@dataclass(frozen=True)
class BlockLimits:
    """What a node needs from its requests. All values in bytes; 0 means "no constraint"."""

    request_alignment: int = 1
    """Offsets and lengths of data requests must be multiples of this (O_DIRECT: logical block)."""
    buffer_alignment: int = 1
    """Memory buffers must start on this boundary (O_DIRECT)."""
    max_transfer: int = 0
    """Largest request the node accepts; the chokepoint splits larger ones. 0: unlimited."""
    opt_transfer: int = 0
    """Preferred request size (BLKIOOPT); advisory."""
    discard_granularity: int = 0
    """Discard works in units of this many bytes; 0: discard unsupported or unknown."""
    max_discard: int = 0
    max_write_zeroes: int = 0
    physical_block_size: int = 0
    """Advisory; the device's physical sector (BLKPBSZGET)."""
    max_hw_transfer: int = 0
    """Largest request the device takes in one command (QEMU's ``max_hw_transfer``: BLKSECTGET,
    i.e. ``queue/max_sectors_kb``). As in QEMU it does not split ordinary requests (the kernel
    does that); SCSI passthrough honours it. 0: unknown."""
    max_hw_iov: int = 0
    """Most memory segments the device takes in one command (QEMU's ``max_hw_iov``:
    ``queue/max_segments``). Advisory, as ``max_hw_transfer``. 0: unknown."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"BlockLimits.{field.name} must be a non-negative int: {value!r}")
        for name in ("request_alignment", "buffer_alignment"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"BlockLimits.{name} must be a power of two >= 1: {value}")
        if self.max_transfer and self.max_transfer % self.request_alignment:
            raise ValueError(
                f"BlockLimits.max_transfer {self.max_transfer} is not a multiple of "
                f"request_alignment {self.request_alignment}"
            )

    def replace(self, **changes: int) -> BlockLimits:
        return dataclasses.replace(self, **changes)

    def merged_with(self, child: BlockLimits) -> BlockLimits:
        """The limits a filter over ``child`` presents: the stricter of each constraint."""

        def min_nonzero(a: int, b: int) -> int:
            return min(x for x in (a, b) if x) if (a or b) else 0

        return BlockLimits(
            request_alignment=max(self.request_alignment, child.request_alignment),
            buffer_alignment=max(self.buffer_alignment, child.buffer_alignment),
            max_transfer=min_nonzero(self.max_transfer, child.max_transfer),
            opt_transfer=max(self.opt_transfer, child.opt_transfer),
            discard_granularity=max(self.discard_granularity, child.discard_granularity),
            max_discard=min_nonzero(self.max_discard, child.max_discard),
            max_write_zeroes=min_nonzero(self.max_write_zeroes, child.max_write_zeroes),
            physical_block_size=max(self.physical_block_size, child.physical_block_size),
            max_hw_transfer=min_nonzero(self.max_hw_transfer, child.max_hw_transfer),
            max_hw_iov=min_nonzero(self.max_hw_iov, child.max_hw_iov),
        )

    def as_dict(self) -> dict[str, int]:
        """Every limit by name, in bytes (``max_hw_iov``: segments), for listings and JSON."""
        return dataclasses.asdict(self)
