"""QEMU 7.2's BlkdebugEvent enum, in its order (qapi/block-core.json), as data.

Every name is accepted in rules; the rig's own layers emit ``read_aio``/``write_aio`` (raw
format), ``pwritev``/``pwritev_zero``/``pwritev_done`` (the node doing the write), the
``pwritev_rmw_*`` events (read-modify-write), ``flush_to_os``/``flush_to_disk`` and ``none``
(once, when the blkdebug node opens). The qcow2/qed metadata events wait for those formats.
"""

from __future__ import annotations

from typing import Final

EVENTS: Final[tuple[str, ...]] = (
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
    "l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
    "read_aio", "read_backing_aio", "read_compressed", "write_aio", "write_compressed",
    "vmstate_load", "vmstate_save", "cow_read", "cow_write", "reftable_load", "reftable_grow",
    "reftable_update", "refblock_load", "refblock_update", "refblock_update_part",
    "refblock_alloc", "refblock_alloc_hookup", "refblock_alloc_write",
    "refblock_alloc_write_blocks", "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk",
    "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail",
    "pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
)
EVENT_SET: Final = frozenset(EVENTS)

#: BlkdebugIOType, and the default mask of an inject-error rule (everything but block-status).
IOTYPES: Final[tuple[str, ...]] = (
    "read", "write", "write-zeroes", "discard", "flush", "block-status",
)
DEFAULT_IOTYPES: Final = frozenset(IOTYPES) - {"block-status"}
