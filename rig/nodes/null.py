"""The ``null-co`` protocol driver, QEMU 7.2's ``block/null.c``: a node of ``size`` bytes that
keeps nothing.

Options (QEMU's): ``size`` (default 1 GiB), ``read-zeroes`` (default off: a read leaves the
caller's buffer as it was, as QEMU's does; on: it reads zeroes), ``latency-ns`` (each request
sleeps that long first). Writes, zero writes and flushes succeed and change nothing; block
status says "not allocated" (with ``read-zeroes``: allocated zeroes, as QEMU's ZERO flag).
For a node that keeps its data use ``memory``.
"""

from __future__ import annotations

import time

from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

    from rig.core.graph import OpenContext
    from rig.core.options import Options


@register_driver("null-co")
class NullNode(Node):
    """QEMU's null-co: every request succeeds, nothing is kept."""

    format_name = "null-co"

    def __init__(self, size: int, *, read_zeroes: bool = False, latency_ns: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = size
        self.read_zeroes = read_zeroes
        self.latency_ns = latency_ns

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        latency = opts.int("latency-ns", 0, minimum=None)
        if latency < 0:
            raise ConfigError("latency-ns is invalid")
        return cls(opts.size("size", 1 << 30), read_zeroes=opts.bool("read-zeroes", False),
                   latency_ns=latency, **ctx.node_kwargs())

    def describe(self) -> str:
        return self.node_name or "null-co://"

    def _wait(self) -> None:
        if self.latency_ns:
            time.sleep(self.latency_ns / 1e9)

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self._wait()
        if self.read_zeroes:
            for buf in iov:
                buf[:] = bytes(buf.nbytes)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self._wait()

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        self._wait()

    def _flush_to_disk(self) -> None:
        self._wait()

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        z = self.read_zeroes
        return BlockStatus(offset, length, data=False, zero=z, allocated=z)

    def _getlength(self) -> int:
        return self.size
