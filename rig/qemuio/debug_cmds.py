"""qemu-io's blkdebug commands: ``break``, ``wait_break``, ``resume``, ``remove_break``.

They act on the first blkdebug node down the graph (QEMU's bdrv_find_debug_node) and print
qemu-io 7.2's lines on stdout.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from rig.qemuio.getopt import Parsed
from rig.qemuio.session import Session
from rig.qemuio.table import command

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from rig.filters.blkdebug import BlkdebugFilter


def _debug_node(s: Session) -> BlkdebugFilter | None:
    assert s.blk is not None
    from rig.filters.blkdebug import find_debug_node

    return find_debug_node(s.blk.root)


def _call(s: Session, action: Callable[[BlkdebugFilter], None], failure: str) -> int:
    """Run ``action`` on the debug node; print qemu-io's ``<failure>: <strerror>`` on error
    (ENOTSUP when the graph has no blkdebug node)."""
    node = _debug_node(s)
    code = errno.ENOTSUP if node is None else 0
    if node is not None:
        try:
            action(node)
        except OSError as e:
            code = e.errno or errno.EINVAL
    if code:
        s.out.write(f"{failure}: {os.strerror(code)}\n")
        return -code
    return 0


@command("break", "event tag", "sets a breakpoint on event and tags the stopped request as tag",
         argmin=2, argmax=2)
def break_cmd(s: Session, p: Parsed) -> int:
    return _call(s, lambda node: node.set_breakpoint(p.args[0], p.args[1]),
                 "Could not set breakpoint")


@command("remove_break", "tag", "remove a breakpoint by tag", argmin=1, argmax=1)
def remove_break_cmd(s: Session, p: Parsed) -> int:
    return _call(s, lambda node: node.remove_breakpoint(p.args[0]),
                 f"Could not remove breakpoint {p.args[0]}")


def _settle(s: Session, node: BlkdebugFilter, tag: str, limit: float = 10.0) -> bool:
    """Wait while an aio request may still be on its way to TAG: qemu-io runs a request until
    it parks before the next command reads a line, the rig's run on threads. True once one is
    parked at TAG; False when every request has finished or is parked elsewhere."""
    import time

    end = time.monotonic() + limit
    while time.monotonic() < end:
        if node.wait_break(tag, timeout=0.02):
            return True
        running = sum(1 for fut, _ in s.pending if not fut.done())
        if running <= len(node._suspended):  # the rest are parked (blkdebug.py has no getter)
            return node.wait_break(tag, timeout=0.02)
    return False


@command("resume", "tag", "resumes the request tagged as tag", argmin=1, argmax=1)
def resume_cmd(s: Session, p: Parsed) -> int:
    node = _debug_node(s)
    code = errno.ENOTSUP if node is None else (0 if node.resume(p.args[0]) else errno.ENOENT)
    if code == errno.ENOENT and node is not None and _settle(s, node, p.args[0]):
        code = 0 if node.resume(p.args[0]) else errno.ENOENT
    if code:
        s.out.write(f"Could not resume request: {os.strerror(code)}\n")
        return -code
    return 0


@command("wait_break", "tag", "waits for the suspension of a request", argmin=1, argmax=1)
def wait_break_cmd(s: Session, p: Parsed) -> int:
    """Like qemu-io it waits until a request is parked at TAG; unlike qemu-io it does not hang
    forever when no submitted request is left that could get there."""
    node = _debug_node(s)
    if node is None:
        return 0
    tag = p.args[0]
    while not node.wait_break(tag, timeout=0.05):
        if all(fut.done() for fut, _ in s.pending):
            if node.wait_break(tag, timeout=0.05):
                break
            s.err.write(f"wait_break: no request in flight can reach breakpoint '{tag}'\n")
            return -errno.EDEADLK
    return 0
