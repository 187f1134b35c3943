"""The qcow2 header (QEMU's docs/interop/qcow2.txt), declared as a field table, and its header
extensions. :func:`decode` and :func:`encode` are exact inverses for the fields and extensions
they know; unknown extensions are kept as opaque bytes so a rewrite preserves them.

Layout of cluster 0: the fixed fields (72 bytes in v2, ``header_length`` bytes in v3), then the
extensions (type u32, length u32, data padded to 8 bytes, ended by type 0), then the backing file
name, which ``backing_file_offset``/``backing_file_size`` point at.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from rig.errors import RigError

MAGIC = 0x514649FB  # "QFI\xfb"

#: (name, struct code, byte offset, first version with the field). Big-endian throughout.
FIELDS: tuple[tuple[str, str, int, int], ...] = (
    ("magic", "I", 0, 2),
    ("version", "I", 4, 2),
    ("backing_file_offset", "Q", 8, 2),
    ("backing_file_size", "I", 16, 2),
    ("cluster_bits", "I", 20, 2),
    ("size", "Q", 24, 2),
    ("crypt_method", "I", 32, 2),
    ("l1_size", "I", 36, 2),
    ("l1_table_offset", "Q", 40, 2),
    ("refcount_table_offset", "Q", 48, 2),
    ("refcount_table_clusters", "I", 56, 2),
    ("nb_snapshots", "I", 60, 2),
    ("snapshots_offset", "Q", 64, 2),
    ("incompatible_features", "Q", 72, 3),
    ("compatible_features", "Q", 80, 3),
    ("autoclear_features", "Q", 88, 3),
    ("refcount_order", "I", 96, 3),
    ("header_length", "I", 100, 3),
)
V2_LENGTH = 72
V3_MIN_LENGTH = 104
#: The optional compression-type byte (v3, header_length >= 105); QEMU writes 112-byte headers.
COMPRESSION_TYPE_OFFSET = 104
V3_LENGTH = 112

# Feature bits.
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

INCOMPAT_NAMES = {
    INCOMPAT_DIRTY: "the dirty bit (lazy refcounts needing repair)",
    INCOMPAT_CORRUPT: "the corrupt bit",
    INCOMPAT_DATA_FILE: "an external data file",
    INCOMPAT_COMPRESSION: "a compression type other than zlib",
    INCOMPAT_EXTL2: "extended L2 entries (subclusters)",
}

# Header extension types.
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441


class HeaderError(RigError, ValueError):
    """The header bytes cannot be decoded (the driver turns this into CorruptImageError)."""


@dataclass
class Extension:
    type: int
    data: bytes


@dataclass
class Header:
    version: int
    cluster_bits: int
    size: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    backing_file_offset: int = 0
    backing_file_size: int = 0
    crypt_method: int = 0
    nb_snapshots: int = 0
    snapshots_offset: int = 0
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = 0
    """0 in v2 (fixed 72 bytes); in v3 the length of the fixed part (104 or more)."""
    compression_type: int = 0
    extensions: list[Extension] = field(default_factory=list)
    backing_file: str | None = None

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def fixed_length(self) -> int:
        return V2_LENGTH if self.version == 2 else self.header_length

    def extension(self, type_: int) -> bytes | None:
        """The data of the extension of this type; the last one when there are several (QEMU
        reads them in order, each overwriting what the one before set)."""
        found = None
        for ext in self.extensions:
            if ext.type == type_:
                found = ext.data
        return found

    @property
    def backing_format(self) -> str | None:
        data = self.extension(EXT_BACKING_FORMAT)
        return None if data is None else data.decode("utf-8", "replace")

    def set_backing_format(self, fmt: str | None) -> None:
        self.extensions = [e for e in self.extensions if e.type != EXT_BACKING_FORMAT]
        if fmt is not None:
            self.extensions.insert(0, Extension(EXT_BACKING_FORMAT, fmt.encode()))


def _u32(buf: bytes, off: int) -> int:
    return int(struct.unpack_from(">I", buf, off)[0])


def decode_fixed(buf: bytes) -> Header:
    """The fixed fields only (``buf`` holds at least the fixed part)."""
    if len(buf) < V2_LENGTH:
        raise HeaderError(f"header truncated ({len(buf)} bytes)")
    if _u32(buf, 0) != MAGIC:
        raise HeaderError("bad magic (not a qcow2 image)")
    version = _u32(buf, 4)
    if version not in (2, 3):
        raise HeaderError(f"unsupported qcow2 version {version}")
    values: dict[str, int] = {}
    for name, code, off, since in FIELDS:
        if since > version:
            continue
        if off + struct.calcsize(code) > len(buf):
            raise HeaderError(f"header truncated ({len(buf)} bytes)")
        values[name] = int(struct.unpack_from(">" + code, buf, off)[0])
    del values["magic"]
    if version == 3:
        hlen = values["header_length"]
        if hlen < V3_MIN_LENGTH:
            raise HeaderError(f"invalid header_length {hlen} (at least {V3_MIN_LENGTH})")
        if hlen > COMPRESSION_TYPE_OFFSET and len(buf) > COMPRESSION_TYPE_OFFSET:
            values["compression_type"] = buf[COMPRESSION_TYPE_OFFSET]
    else:
        values["refcount_order"] = 4
        values["header_length"] = 0
    return Header(**values)  # type: ignore[arg-type]


def decode(buf: bytes) -> Header:
    """Header, extensions and backing file name from the first cluster of an image (a shorter
    ``buf`` reads as if zeroes followed, as a file read past its end does). The checks are
    QEMU's (qcow2_do_open, qcow2_read_extensions), in our words."""
    h = decode_fixed(buf)
    if not 9 <= h.cluster_bits <= 21:
        raise HeaderError(f"cluster_bits {h.cluster_bits} outside 9..21")
    cs = h.cluster_size
    if len(buf) < cs:
        buf = bytes(buf) + bytes(cs - len(buf))
    if h.fixed_length > cs:
        raise HeaderError(f"header_length {h.fixed_length} exceeds the cluster size {cs}")
    if h.backing_file_offset > cs:
        raise HeaderError(f"backing_file_offset {h.backing_file_offset} is past the header "
                          "cluster")
    end = h.backing_file_offset or cs
    pos = h.fixed_length
    while pos < end:
        if pos + 8 > end:
            raise HeaderError(f"header extension at {pos} runs past the extension area "
                              f"(which ends at {end})")
        etype, elen = struct.unpack_from(">II", buf, pos)
        pos += 8
        if elen > end - pos:
            raise HeaderError(f"header extension 0x{etype:08x} ({elen} bytes) runs past the "
                              f"extension area (which ends at {end})")
        if etype == EXT_END:
            break
        data = bytes(buf[pos:pos + elen])
        _check_extension(h, etype, data)
        h.extensions.append(Extension(etype, data))
        pos += (elen + 7) & ~7
    if h.backing_file_offset:
        off, size = h.backing_file_offset, h.backing_file_size
        if size > min(1023, cs - off):
            raise HeaderError(f"backing file name ({size} bytes at {off}) is past the header "
                              "cluster or longer than 1023 bytes")
        try:
            h.backing_file = bytes(buf[off:off + size]).decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError("backing file name is not UTF-8") from None
    return h


#: QEMU keeps the backing format in 16 bytes (with its NUL).
MAX_BACKING_FORMAT = 15
BITMAPS_EXT_LENGTH = 24
MAX_BITMAPS = 65535
MAX_BITMAP_DIRECTORY = 64 << 20
CRYPT_LUKS = 2


def _check_extension(h: Header, etype: int, data: bytes) -> None:
    """The extensions QEMU refuses to open an image with."""
    if etype == EXT_BACKING_FORMAT and len(data) > MAX_BACKING_FORMAT:
        raise HeaderError(f"backing format extension is {len(data)} bytes (at most "
                          f"{MAX_BACKING_FORMAT})")
    if etype == EXT_CRYPTO and h.crypt_method != CRYPT_LUKS:
        raise HeaderError("crypto header extension in an image without LUKS encryption")
    if etype == EXT_BITMAPS:
        if len(data) != BITMAPS_EXT_LENGTH:
            raise HeaderError(f"bitmaps extension is {len(data)} bytes (not "
                              f"{BITMAPS_EXT_LENGTH})")
        if not h.autoclear_features & AUTOCLEAR_BITMAPS:
            return  # stale: QEMU ignores (and drops) it
        count, reserved, size, offset = struct.unpack(">IIQQ", data)
        if reserved:
            raise HeaderError("bitmaps extension has its reserved field set")
        if not 1 <= count <= MAX_BITMAPS:
            raise HeaderError(f"bitmaps extension lists {count} bitmaps (1 to {MAX_BITMAPS})")
        if offset % h.cluster_size:
            raise HeaderError(f"bitmap directory offset 0x{offset:x} is not cluster aligned")
        if size > MAX_BITMAP_DIRECTORY:
            raise HeaderError(f"bitmap directory of {size} bytes is larger than 64 MiB")


def encode_fixed(h: Header) -> bytes:
    """The fixed part (72 bytes in v2, ``header_length`` bytes in v3)."""
    out = bytearray(h.fixed_length)
    values = {**h.__dict__, "magic": MAGIC}
    for name, code, off, since in FIELDS:
        if since <= h.version:
            struct.pack_into(">" + code, out, off, values[name])
    if h.version == 3 and h.header_length > COMPRESSION_TYPE_OFFSET:
        out[COMPRESSION_TYPE_OFFSET] = h.compression_type
    return bytes(out)


def encode(h: Header) -> bytes:
    """Fixed part, extensions, end marker and backing file name; sets the backing fields."""
    body = bytearray(encode_fixed(h))
    for ext in h.extensions:
        _check_extension(h, ext.type, ext.data)
        body += struct.pack(">II", ext.type, len(ext.data)) + ext.data
        body += bytes(-len(ext.data) % 8)
    body += bytes(8)  # end marker
    if h.backing_file is not None:
        name = h.backing_file.encode("utf-8")
        if len(name) > 1023:
            raise HeaderError("backing file name longer than 1023 bytes")
        h.backing_file_offset, h.backing_file_size = len(body), len(name)
        body += name
    else:
        h.backing_file_offset, h.backing_file_size = 0, 0
    body[:h.fixed_length] = encode_fixed(h)
    if len(body) > h.cluster_size:
        raise HeaderError(f"header ({len(body)} bytes) does not fit in one cluster")
    return bytes(body)
