"""Known on-disk signatures (filesystems, swap, LUKS, partition tables), found by reading the first
blocks of a device read-only, the way ``wipefs``/``blkid`` spot them.

A lab disk that carries one probably holds something someone wants: the lab inventory refuses
to write to it unless its entry says ``allow_signature = true``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: ``(name, byte offset, magic)``, as data. ext2/3/4: s_magic 0xEF53 (little endian) in the
#: superblock at 1024; btrfs: the superblock at 64 KiB; swap: the last 10 bytes of the first
#: 4 KiB page; GPT: the header in LBA 1 (512- or 4096-byte sectors); MBR: the boot signature.
SIGNATURES: tuple[tuple[str, int, bytes], ...] = (
    ("ext2/3/4", 1080, b"\x53\xef"),
    ("xfs", 0, b"XFSB"),
    ("btrfs", 65600, b"_BHRfS_M"),
    ("swap", 4086, b"SWAPSPACE2"),
    ("swap (v0)", 4086, b"SWAP-SPACE"),
    ("LUKS", 0, b"LUKS\xba\xbe"),
    ("GPT", 512, b"EFI PART"),
    ("GPT (4K sectors)", 4096, b"EFI PART"),
    ("MBR or boot sector", 510, b"\x55\xaa"),
)
#: How much :func:`detect` reads: enough for the deepest signature.
SCAN_BYTES = max(offset + len(magic) for _, offset, magic in SIGNATURES)


@dataclass(frozen=True)
class Signature:
    name: str
    offset: int
    magic: bytes

    def __str__(self) -> str:
        text = self.magic.decode("ascii", "replace")
        magic = repr(text) if text.isprintable() and text.isascii() else self.magic.hex(" ")
        return f"{self.name} (magic {magic} at byte {self.offset})"


def scan(head: bytes) -> list[Signature]:
    """The signatures present in ``head``, the first bytes of a device."""
    return [Signature(name, off, magic) for name, off, magic in SIGNATURES
            if head[off:off + len(magic)] == magic]


def read_head(path: str, length: int = SCAN_BYTES) -> bytes:
    """The first ``length`` bytes of ``path``, read-only (fewer if it is smaller)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        got = 0
        while got < length:
            chunk = os.pread(fd, length - got, got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def detect(path: str) -> list[Signature]:
    """Signatures on the device (or image) at ``path``; reads, never writes."""
    return scan(read_head(path))
