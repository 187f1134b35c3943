"""The two ways a qcow2 image is refused: it uses a feature the driver does not implement, or it
is corrupt. Both name the image file and fit on one line."""

from __future__ import annotations

from rig.errors import ConfigError, RigError


class UnsupportedImageError(ConfigError):
    """The image is valid but uses a feature this driver refuses (encryption, snapshots...)."""

    def __init__(self, path: str, feature: str) -> None:
        super().__init__(f"qcow2 image '{path}' uses {feature}, which is not supported")
        self.path = path
        self.feature = feature


class CorruptImageError(RigError):
    """The header or a metadata table is inconsistent (offset past EOF, misaligned, overlap)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"qcow2 image '{path}' is corrupt: {what}")
        self.path = path
        self.what = what
