"""The ways a qcow2 image is refused: it uses a feature the driver does not implement, or it is
corrupt. All of them fit on one line."""

from __future__ import annotations

from rig.errors import ConfigError, RigError


class UnsupportedImageError(ConfigError):
    """The image is valid but uses a feature this driver refuses (encryption, snapshots...)."""

    def __init__(self, path: str, feature: str) -> None:
        super().__init__(f"qcow2 image '{path}' uses {feature}, which is not supported")
        self.path = path
        self.feature = feature


#: The open checks QEMU makes too, and its words for them (qcow2_do_open,
#: qcow2_read_extensions, validate_table_offset): (the start of the rig's ``what``, a word it
#: contains, QEMU's message). ``rig io`` prints them after "can't open device FILE:" as
#: qemu-io does (iotest 080); ``what`` keeps the detail.
QEMU_WORDS: tuple[tuple[str, str, str], ...] = (
    ("header_length", "exceeds", "qcow2 header exceeds cluster size"),
    ("backing_file_offset", "past", "Invalid backing file offset"),
    ("header extension", "past the extension area", "Header extension too large"),
    ("refcount table (", "too large", "Reference count table too large"),
    ("refcount table offset", "", "Reference count table offset invalid"),
    ("snapshot table (", "too large", "Snapshot table too large"),
    ("snapshot table offset", "", "Snapshot table offset invalid"),
    ("L1 table (", "too small", "L1 table is too small"),
    ("L1 table (", "too large", "Active L1 table too large"),
    ("L1 table offset", "", "Active L1 table offset invalid"),
    ("backing file name (", "", "Backing file name too long"),
    ("the compression type bit is set", "zlib",
     "qcow2: Compression type incompatible feature bit must not be set"),
    ("the compression type bit is not set", "zstd",
     "qcow2: Compression type incompatible feature bit must be set"),
)


def qemu_words(what: str) -> str | None:
    for start, word, text in QEMU_WORDS:
        if what.startswith(start) and word in what:
            return text
    return None


class CorruptImageError(RigError):
    """The header or a metadata table is inconsistent (offset past EOF, misaligned, overlap).
    The message is QEMU's where QEMU makes the same check (:data:`QEMU_WORDS`, or ``text``),
    else it names the file and the problem; ``what`` always has the detail."""

    def __init__(self, path: str, what: str, *, text: str | None = None) -> None:
        super().__init__(text or qemu_words(what) or f"qcow2 image '{path}' is corrupt: {what}")
        self.path = path
        self.what = what


class CorruptionEvent(CorruptImageError):
    """Corruption that QEMU signals while serving a request (qcow2_signal_corruption): a write
    about to land on metadata, an unaligned table or cluster offset. A writable node marks the
    image corrupt on disk and stops serving requests; ``what`` is QEMU's text."""
