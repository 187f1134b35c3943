"""Per-node block limits (QEMU's BlockLimits), and how a filter stack combines them."""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

#: Largest single request the chokepoint will pass down when a node sets no max_transfer.
#: The same cap as QEMU's BDRV_REQUEST_MAX_BYTES rounded down to 1 MiB.
DEFAULT_MAX_TRANSFER = 2147483648 - 1024 * 1024


#: The fields of :class:`BlockLimits`, in order.
LIMIT_FIELDS = ("request_alignment", "buffer_alignment", "max_transfer", "opt_transfer",
                "discard_granularity", "max_discard", "max_write_zeroes",
                "physical_block_size", "max_hw_transfer", "max_hw_iov")


class BlockLimits:
    """What a node needs from its requests. All values in bytes; 0 means "no constraint".

    Immutable, compared and hashed by value, like a frozen dataclass (written out: the
    dataclasses module and its per-class code generation cost ``rig io`` start-up, issue 19).
    """

    __slots__ = LIMIT_FIELDS

    request_alignment: int
    """Offsets and lengths of data requests must be multiples of this (O_DIRECT: logical block)."""
    buffer_alignment: int
    """Memory buffers must start on this boundary (O_DIRECT)."""
    max_transfer: int
    """Largest request the node accepts; the chokepoint splits larger ones. 0: unlimited."""
    opt_transfer: int
    """Preferred request size (BLKIOOPT); advisory."""
    discard_granularity: int
    """Discard works in units of this many bytes; 0: discard unsupported or unknown."""
    max_discard: int
    max_write_zeroes: int
    physical_block_size: int
    """Advisory; the device's physical sector (BLKPBSZGET)."""
    max_hw_transfer: int
    """Largest request the device takes in one command (QEMU's ``max_hw_transfer``: BLKSECTGET,
    i.e. ``queue/max_sectors_kb``). As in QEMU it does not split ordinary requests (the kernel
    does that); SCSI passthrough honours it. 0: unknown."""
    max_hw_iov: int
    """Most memory segments the device takes in one command (QEMU's ``max_hw_iov``:
    ``queue/max_segments``). Advisory, as ``max_hw_transfer``. 0: unknown."""

    def __init__(self, request_alignment: int = 1, buffer_alignment: int = 1,
                 max_transfer: int = 0, opt_transfer: int = 0, discard_granularity: int = 0,
                 max_discard: int = 0, max_write_zeroes: int = 0, physical_block_size: int = 0,
                 max_hw_transfer: int = 0, max_hw_iov: int = 0) -> None:
        values = (request_alignment, buffer_alignment, max_transfer, opt_transfer,
                  discard_granularity, max_discard, max_write_zeroes, physical_block_size,
                  max_hw_transfer, max_hw_iov)
        for name, value in zip(LIMIT_FIELDS, values, strict=True):
            object.__setattr__(self, name, value)
        self._check()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} (BlockLimits is immutable)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} (BlockLimits is immutable)")

    def _values(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in LIMIT_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, BlockLimits)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type[BlockLimits], tuple[int, ...]]:
        return BlockLimits, self._values()  # copy and pickle: through __init__

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in LIMIT_FIELDS)
        return f"BlockLimits({inner})"

    def _check(self) -> None:
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"BlockLimits.{name} must be a non-negative int: {value!r}")
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
        return BlockLimits(**{**self.as_dict(), **changes})

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
        return {name: getattr(self, name) for name in LIMIT_FIELDS}
