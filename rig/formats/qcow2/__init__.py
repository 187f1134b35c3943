"""The qcow2 format (versions 2 and 3): see docs/qcow2.md.

``header`` (field table, extensions), ``tables`` (L1/L2 mapping), ``refcount`` (allocation),
``metaio`` (metadata I/O and overlap checks), ``create`` (new images), ``driver`` (the node).
"""

from rig.formats.qcow2.create import create
from rig.formats.qcow2.errors import CorruptImageError, UnsupportedImageError

__all__ = ["CorruptImageError", "UnsupportedImageError", "create"]
