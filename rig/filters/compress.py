"""The ``compress`` filter (QEMU 7.2's block/filter-compress.c): every write through it is a
compressed write of the image below (iotest 214).

Options: ``file`` (the image: a format that writes compressed clusters, qcow2; anything else is
refused with QEMU's "Compression is not supported for underlying format: NAME").

Its request alignment is the image's cluster size (QEMU's compress_refresh_limits), so the
backend's read-modify-write turns a write that starts or ends inside a cluster into whole
clusters, and the image writes each one compressed (an unaligned or already allocated cluster
fails as a compressed write does). Reads, zero writes, discards and flushes pass through.
"""

from __future__ import annotations

from rig.core.limits import BlockLimits
from rig.core.node import Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options


@register_driver("compress")
class CompressFilter(Filter):
    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        node = cls(**ctx.node_kwargs())
        return node.open_child(ctx, node._check)

    def _check(self) -> None:
        child = self.child
        if not callable(getattr(child, "write_compressed", None)):
            name = child.format_name or child.driver_name
            raise ConfigError(f"Compression is not supported for underlying format: {name}")
        self.refresh_limits()

    def own_limits(self) -> BlockLimits:
        child = self.children.get(self.child_role)
        size = getattr(child, "cluster_size", 0) if child is not None else 0
        return BlockLimits(request_alignment=size if isinstance(size, int) and size > 0 else 1)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        # QEMU's compress_co_pwritev_part: flags |= BDRV_REQ_WRITE_COMPRESSED
        self.child.write_compressed(offset, iov)  # type: ignore[attr-defined]
