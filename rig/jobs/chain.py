"""Backing chains as a job sees them: the images below a top, finding a base by file name,
QEMU's ``bdrv_is_allocated_above`` with its end-of-file rules, and unhooking the images a
finished stream job drops.

A chain is walked with :func:`rig.filters.copy_on_read.backing_of` (backing children, through
filters such as blkdebug), so a fault-injecting filter anywhere in the chain is part of it.
"""

from __future__ import annotations

import os

from rig.core.node import Node
from rig.errors import ConfigError
from rig.filters.base import Filter
from rig.filters.copy_on_read import backing_of


def images_below(top: Node) -> list[Node]:
    """The top's backing chain, top first excluded; filters skipped (their child is listed)."""
    out: list[Node] = []
    node = backing_of(top)
    while node is not None:
        if not (isinstance(node, Filter) and not node.format_name):
            out.append(node)
        node = backing_of(node)
    return out


def image_path(node: Node) -> str:
    """The file an image node reads (its description: the file child's name)."""
    return node.describe()


def find_base(top: Node, base: str | Node | None) -> Node | None:
    """The base image: a node of the chain, or the one whose file is ``base`` (same file, as
    QEMU matches a ``base`` name against the chain). Errors in QEMU's words."""
    if base is None:
        return None
    chain = images_below(top)
    if isinstance(base, Node):
        if base not in chain:
            raise ConfigError(f"Node '{base.node_name or base.describe()}' is not a backing "
                              f"image of '{top.describe()}'")
        return base
    want = os.path.realpath(base)
    for node in chain:
        if os.path.realpath(image_path(node)) == want:
            return node
    raise ConfigError(f"Can't find '{base}' in the backing chain of '{top.describe()}' "
                      "(give one of: " + ", ".join(image_path(n) for n in chain) + ")"
                      if chain else f"Can't find '{base}' in the backing chain "
                      f"('{top.describe()}' has no backing file)")


def allocated_above(top: Node, base: Node | None, offset: int, length: int) -> tuple[bool, int]:
    """Is ``[offset, offset+length)`` allocated somewhere from the top's backing down to the
    image above ``base`` (QEMU's bdrv_is_allocated_above with include_base on the base's
    overlay)? Returns (answer, bytes it holds for).

    As QEMU: the first backing image ending before ``offset`` gives ``(False, 0)`` (the stream
    job then finishes early); a shorter image further down reads as zeroes that hide what lies
    below, so it counts as allocated."""
    node = backing_of(top)
    first = True
    while node is not None and node is not base:
        if offset >= node.getlength():
            return (False, 0) if first else (True, length)
        status = node.block_status(offset, length)
        n = max(1, min(status.length, length))
        if status.allocated:
            return True, n
        length = n
        node = backing_of(node)
        first = False
    return False, length


def overlay_of(top: Node, base: Node) -> Node:
    """The node directly above ``base`` in the top's chain."""
    node = top
    while True:
        below = backing_of(node)
        if below is base:
            return node
        if below is None:
            raise ConfigError(f"'{base.describe()}' is not in the chain of '{top.describe()}'")
        node = below


def unhook(parent: Node, child: Node) -> None:
    """Remove ``child`` from ``parent``'s children without closing it."""
    for role, node in list(parent.children.items()):
        if node is child:
            del parent.children[role]
    parent.refresh()


def backing_name(top: Node, base: Node) -> str:
    """The name a stream writes into the top's header for ``base``: relative to the top's
    directory when both live under it, else absolute (QEMU writes the base's file name as
    given, which is relative to the current directory: a trap this avoids)."""
    path = os.path.abspath(image_path(base))
    top_dir = os.path.dirname(os.path.abspath(image_path(top)))
    rel = os.path.relpath(path, top_dir)
    return rel if not rel.startswith("..") else path
