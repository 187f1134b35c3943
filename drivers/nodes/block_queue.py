"""What the kernel says about a block device's request queue: ``/sys/dev/block/M:m/queue/*``.

``host_device`` takes QEMU 7.2's limits from here and from ioctls (file-posix's
``raw_refresh_limits``: BLKSSZGET for the O_DIRECT alignment, BLKSECTGET for ``max_hw_transfer``,
``queue/max_segments`` for ``max_hw_iov``); ``rig devices DEV`` shows all of it, with the
volatile write cache (``queue/write_cache``). A missing attribute (an old kernel, a device
without discard) reads as 0, or "" for text.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

#: (field, attribute, multiplier to bytes): the numeric attributes read.
_NUMBERS: tuple[tuple[str, str, int], ...] = (
    ("logical_block_size", "logical_block_size", 1),
    ("physical_block_size", "physical_block_size", 1),
    ("minimum_io_size", "minimum_io_size", 1),
    ("optimal_io_size", "optimal_io_size", 1),
    ("max_sectors", "max_sectors_kb", 1024),
    ("max_hw_sectors", "max_hw_sectors_kb", 1024),
    ("max_segments", "max_segments", 1),
    ("max_segment_size", "max_segment_size", 1),
    ("discard_granularity", "discard_granularity", 1),
    ("discard_max_bytes", "discard_max_bytes", 1),
    ("discard_max_hw_bytes", "discard_max_hw_bytes", 1),
    ("write_zeroes_max_bytes", "write_zeroes_max_bytes", 1),
)


@dataclass(frozen=True)
class QueueLimits:
    """A block device's queue limits, in bytes (``max_segments``: a count)."""

    logical_block_size: int = 0
    physical_block_size: int = 0
    minimum_io_size: int = 0
    optimal_io_size: int = 0
    max_sectors: int = 0
    """``max_sectors_kb`` in bytes: the largest request the block layer sends the device."""
    max_hw_sectors: int = 0
    """``max_hw_sectors_kb`` in bytes: the most ``max_sectors_kb`` may be raised to."""
    max_segments: int = 0
    max_segment_size: int = 0
    discard_granularity: int = 0
    discard_max_bytes: int = 0
    """0: the device does not discard."""
    discard_max_hw_bytes: int = 0
    write_zeroes_max_bytes: int = 0
    """0: the kernel writes zeroes itself (no WRITE ZEROES / WRITE SAME command)."""
    write_cache: str = ""
    """``write back`` (a volatile cache: flushes matter), ``write through``, or "" unknown."""
    fua: bool = False
    """The device takes FUA writes (``queue/fua``)."""
    rotational: bool = False

    @property
    def volatile_write_cache(self) -> bool:
        return self.write_cache == "write back"

    def as_dict(self) -> dict[str, int | str | bool]:
        return dataclasses.asdict(self)


def queue_dir(rdev: int) -> str:
    return f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/queue"


def read_attr(rdev: int, attr: str) -> str:
    """One queue attribute as text, "" when the kernel has none (or it cannot be read)."""
    try:
        with open(f"{queue_dir(rdev)}/{attr}") as f:
            return f.read(4096).strip()
    except OSError:
        return ""


def read_int(rdev: int, attr: str) -> int:
    """One numeric queue attribute; 0 when missing or not a non-negative decimal."""
    text = read_attr(rdev, attr)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else 0


def read_queue(rdev: int) -> QueueLimits:
    """The queue limits of the block device numbered ``rdev`` (``st_rdev``)."""
    numbers = {name: read_int(rdev, attr) * unit for name, attr, unit in _NUMBERS}
    return QueueLimits(**numbers, write_cache=read_attr(rdev, "write_cache"),
                       fua=read_int(rdev, "fua") == 1,
                       rotational=read_int(rdev, "rotational") == 1)
