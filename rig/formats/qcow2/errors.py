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


class CorruptImageError(RigError):
    """The header or a metadata table is inconsistent (offset past EOF, misaligned, overlap).
    The message names the file, unless ``text`` gives QEMU's own words for it."""

    def __init__(self, path: str, what: str, *, text: str | None = None) -> None:
        super().__init__(text or f"qcow2 image '{path}' is corrupt: {what}")
        self.path = path
        self.what = what


class CorruptionEvent(CorruptImageError):
    """Corruption that QEMU signals while serving a request (qcow2_signal_corruption): a write
    about to land on metadata, an unaligned table or cluster offset. A writable node marks the
    image corrupt on disk and stops serving requests; ``what`` is QEMU's text."""
