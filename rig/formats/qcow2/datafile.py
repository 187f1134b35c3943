"""External data files (QEMU 7.2's ``data-file``; iotests 061, 270, 289).

An image with the incompatible feature bit "external data file" keeps its metadata in its
``file`` and its guest data in a second node, the ``data-file`` child: a data cluster's L2 entry
holds its offset in the data file, which is always the guest offset (QEMU's
do_alloc_cluster_offset), data clusters have no refcounts, and writes there pass no overlap
check. Compressed clusters are impossible (a compressed write is ENOTSUP). The autoclear bit
"raw external data" (``data_file_raw``) says the data file alone is a raw copy of the disk: the
rig keeps it, and a zero write then writes zeroes into the data file too, as QEMU.

The child comes from the ``data-file`` option (a file name or node options), else from the
name in the header's data file extension (opened as given, relative to the working directory,
as QEMU does), with QEMU's messages when neither is there or the option is given for an image
without the bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rig.core.options import Options
from rig.errors import ConfigError
from rig.formats.qcow2 import header as hdr

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.formats.qcow2.driver import Qcow2Node

ROLE = "data-file"


def open_data_file(node: Qcow2Node, opts: Options, ctx: OpenContext) -> None:
    """QEMU's 'Open external data file' step of qcow2_do_open."""
    from rig.core.graph import open_options

    h = node.header
    assert h is not None
    try:
        child = ctx.open_child(ROLE, required=False)
    except LookupError:
        child = None
    if h.incompatible_features & hdr.INCOMPAT_DATA_FILE:
        if child is None:
            raw = h.extension(hdr.EXT_DATA_FILE)
            name = raw.split(b"\0")[0].decode("utf-8", "replace") if raw else ""
            if name:
                child = open_options(Options({"filename": name}, f"{opts.path}{ROLE}.",
                                             ctx.inherited()))
        if child is None:
            raise ConfigError(f"'{ROLE}' is required for this image")
        node.attach_child(ROLE, child)
        return
    if child is not None:
        child.close()
        raise ConfigError(f"'{ROLE}' can only be set for images with an external data file")
    if h.autoclear_features & hdr.AUTOCLEAR_DATA_FILE_RAW:
        raise ConfigError("data-file-raw requires a data file")


def is_raw(node: Qcow2Node) -> bool:
    """``data_file_raw``: the data file is kept a raw image of the disk."""
    h = node.header
    return (h is not None and node.has_data_file
            and bool(h.autoclear_features & hdr.AUTOCLEAR_DATA_FILE_RAW))
