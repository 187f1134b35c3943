"""Lazy refcounts and the dirty bit, as QEMU 7.2's qcow2 driver keeps them.

With lazy refcounts (``lazy-refcounts=on``, by default the header's compatible feature bit; a
compat=1.1 image only), the first write that links a new data cluster into an L2 table sets the
dirty bit in the header (written and flushed before the L2 table can be: QEMU's
qcow2_mark_dirty from qcow2_alloc_cluster_link_l2). While it is set, a flush writes the L2 and
L1 tables but leaves the refcount blocks in memory (qcow2_need_accurate_refcounts is false), so
a crash leaves L2 entries pointing at clusters with refcount 0; a new L2 table and a larger L1
table still get their refcounts written first, as in QEMU. A clean close (and a reopen, which the
rig does by closing) writes everything and clears the bit (qcow2_mark_clean).

An image found dirty when it is opened read-write is repaired first (:mod:`repair`, QEMU's
``qemu-img check -r all`` with its messages on stderr), then marked clean; opened read-only it
stays dirty and reads as it is.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from rig.errors import ConfigError, RigError
from rig.formats.qcow2 import header as hdr

if TYPE_CHECKING:
    from rig.formats.qcow2.driver import Qcow2Node


def is_dirty(node: Qcow2Node) -> bool:
    h = node.header
    return h is not None and bool(h.incompatible_features & hdr.INCOMPAT_DIRTY)


def set_lazy_refcounts(node: Qcow2Node, given: bool | None) -> None:
    """QEMU's use_lazy_refcounts: the option, else the header's compatible feature bit."""
    h = node.header
    assert h is not None
    lazy = bool(h.compatible_features & hdr.COMPAT_LAZY_REFCOUNTS) if given is None else given
    if lazy and h.version < 3:
        raise ConfigError("Lazy refcounts require a qcow2 image with at least qemu 1.1 "
                          "compatibility level")
    node.lazy_refcounts = lazy


def mark_dirty(node: Qcow2Node) -> None:
    """Before a new data cluster is linked into an L2 table (lazy refcounts only): the bit set
    on disk (file flushed, header written and flushed). If that fails the image is not treated
    as dirty, and its refcounts stay accurate, as in QEMU."""
    h = node.header
    assert h is not None
    if not node.lazy_refcounts or h.incompatible_features & hdr.INCOMPAT_DIRTY:
        return
    try:
        node.file.flush()
        h.incompatible_features |= hdr.INCOMPAT_DIRTY
        node._write_header()
        node.file.flush()
    except (OSError, RigError):
        h.incompatible_features &= ~hdr.INCOMPAT_DIRTY


def mark_clean(node: Qcow2Node) -> None:
    """QEMU's qcow2_mark_clean: everything written (refcounts included), then the header
    without the bit."""
    h = node.header
    assert h is not None
    if not h.incompatible_features & hdr.INCOMPAT_DIRTY:
        return
    h.incompatible_features &= ~hdr.INCOMPAT_DIRTY
    with contextlib.suppress(OSError, RigError):
        node._flush_metadata()
        node.refs.write_dirty()
        node.file.flush()
        node._write_header()
        node.file.flush()


def repair_if_dirty(node: Qcow2Node) -> None:
    """QEMU's 'Repair image if dirty' in qcow2_do_open: a read-write open of a dirty image
    checks and repairs its refcounts (``-r all``) and marks it clean when nothing is left
    corrupt; an error during the repair fails the open. The node's metadata is read again
    afterwards."""
    if node.read_only or not is_dirty(node):
        return
    from rig.formats.qcow2 import repair  # only for a dirty image

    node._clear_autoclear()  # the rig keeps no bitmaps: not counted, so not valid afterwards
    res = repair.check_refcounts(node, repair.FIX_ERRORS | repair.FIX_LEAKS)
    if res.check_errors:
        raise RigError("Could not repair dirty image: Input/output error")
    if not res.corruptions:
        mark_clean(node)
    else:
        with contextlib.suppress(OSError, RigError):
            node.refs.write_dirty()
            node.file.flush()
    node._read_image()
