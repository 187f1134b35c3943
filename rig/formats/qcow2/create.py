"""Create a qcow2 image (v2 or v3), optionally over a backing file.

The layout is QEMU's: cluster 0 the header (extensions, backing file name), cluster 1 the
refcount table, cluster 2 its first refcount block, then the L1 table; the file ends where the
L1 table ends. Every cluster of that metadata has refcount 1.
"""

from __future__ import annotations

import os
from pathlib import Path

from rig.core.outputs import open_output
from rig.errors import ConfigError
from rig.formats import probe_format
from rig.formats.qcow2.header import (
    V3_LENGTH,
    Extension,
    Header,
    HeaderError,
    encode,
)

MIN_CLUSTER = 512
MAX_CLUSTER = 2 << 20
#: QEMU's limit on the L1 table (32 MiB).
MAX_L1_BYTES = 32 << 20

FEATURE_TABLE = (
    (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"),
    (0, 3, "compression type"), (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
)


def feature_table() -> bytes:
    """The feature name table extension QEMU writes (48-byte entries: type, bit, name)."""
    out = bytearray()
    for kind, bit, name in FEATURE_TABLE:
        out += bytes([kind, bit]) + name.encode().ljust(46, b"\0")
    return bytes(out)


def l1_entries_for(size: int, cluster_bits: int) -> int:
    per_l2 = 1 << (cluster_bits + cluster_bits - 3)
    return -(-size // per_l2)


def create(path: str | os.PathLike[str], size: int | None = None, *, cluster_size: int = 65536,
           backing: str | None = None, backing_fmt: str | None = None, version: int = 3,
           refcount_bits: int = 16) -> None:
    """Create (or overwrite) ``path`` as an empty qcow2 image of ``size`` bytes.

    ``backing`` is written into the header as is (a relative name is relative to the image's
    directory when opened); ``backing_fmt`` goes into the backing format extension. With a
    backing file and no ``size``, the backing file's virtual size is used.
    """
    if version not in (2, 3):
        raise ConfigError(f"qcow2: version must be 2 or 3, not {version}")
    if cluster_size < MIN_CLUSTER or cluster_size > MAX_CLUSTER or cluster_size & (
            cluster_size - 1):
        raise ConfigError(f"qcow2: cluster_size must be a power of two between 512 and 2M, "
                          f"not {cluster_size}")
    if refcount_bits not in (1, 2, 4, 8, 16, 32, 64):
        raise ConfigError(f"qcow2: refcount_bits must be a power of two up to 64, "
                          f"not {refcount_bits}")
    if version == 2 and refcount_bits != 16:
        raise ConfigError("qcow2: version 2 images need refcount_bits=16")
    if backing_fmt is not None and backing is None:
        raise ConfigError("qcow2: backing_fmt given without a backing file")
    if size is None:
        if backing is None:
            raise ConfigError("qcow2: the image size is missing")
        size = _backing_size(Path(path), backing, backing_fmt)
    if size < 0:
        raise ConfigError(f"qcow2: size must not be negative: {size}")
    cluster_bits = cluster_size.bit_length() - 1
    order = refcount_bits.bit_length() - 1
    l1_size = l1_entries_for(size, cluster_bits)
    if l1_size * 8 > MAX_L1_BYTES:
        raise ConfigError(f"qcow2: size {size} needs too large an L1 table for cluster size "
                          f"{cluster_size}")
    l1_clusters = max(1, -(-(l1_size * 8) // cluster_size))
    per_block = cluster_size * 8 // refcount_bits
    meta_clusters = 3 + l1_clusters
    if meta_clusters > per_block:
        raise ConfigError(f"qcow2: size {size} is too large for cluster size {cluster_size} "
                          f"with {refcount_bits}-bit refcounts")
    h = Header(version=version, cluster_bits=cluster_bits, size=size, l1_size=l1_size,
               l1_table_offset=3 * cluster_size, refcount_table_offset=cluster_size,
               refcount_table_clusters=1, refcount_order=order,
               header_length=V3_LENGTH if version == 3 else 0, backing_file=backing)
    if backing_fmt is not None:
        h.set_backing_format(backing_fmt)
    if version == 3:
        h.extensions.append(Extension(0x6803F857, feature_table()))
    try:
        head = encode(h)
    except HeaderError as e:
        raise ConfigError(f"qcow2: {e}") from None
    table = (2 * cluster_size).to_bytes(8, "big")
    block = bytearray(cluster_size)
    for c in range(meta_clusters):
        _put_refcount(block, c, 1, refcount_bits)
    # qemu-img create replaces an existing file too; a device is never an image file here.
    with open_output(path, "the qcow2 image", replace=True, binary=True) as f:
        f.write(head)
        f.seek(cluster_size)
        f.write(table)
        f.seek(2 * cluster_size)
        f.write(block)
        f.truncate(3 * cluster_size + max(l1_size * 8, 0) if l1_size else 3 * cluster_size)


def _put_refcount(block: bytearray, index: int, value: int, bits: int) -> None:
    if bits >= 8:
        n = bits // 8
        block[index * n:index * n + n] = value.to_bytes(n, "big")
    else:
        per_byte = 8 // bits
        block[index // per_byte] |= value << (index % per_byte) * bits


def _backing_size(image: Path, backing: str, fmt: str | None) -> int:
    import rig

    name = backing if os.path.isabs(backing) else str(image.parent / backing)
    spec = {"driver": fmt or probe_format(name), "file": {"driver": "file", "filename": name}}
    with rig.open(spec, read_only=True) as blk:
        return blk.getlength()
