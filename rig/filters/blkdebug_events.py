"""QEMU 7.2's BlkdebugEvent enum, in its order (qapi/block-core.json), as data, and who emits
each event.

Every name is accepted in rules. Who emits what, in the rig:

- **a driver's own events** are declared on its class, as a class attribute::

      @register_driver("raw")
      class RawFormat(Filter):
          blkdebug_events: ClassVar[frozenset[str]] = frozenset({"read_aio", "write_aio"})

  ``blkdebug_events`` lists every event the driver's code sends down its primary child's chain
  (``self.emit_below(EV)`` or ``self.<child>.emit(EV)``, QEMU's ``BLKDBG_EVENT(bs->file, EV)``).
  A driver that declares nothing emits nothing of its own. :func:`declared_events` reads it;
  ``tests/filters/test_blkdebug_reach.py`` checks every registered driver's names are events.
- **the block layer's events** need no declaration: ``flush_to_os``/``flush_to_disk`` come from
  the flush of *any* node to its primary child's chain (:data:`FLUSH_EVENTS`);
  ``pwritev``/``pwritev_zero``/``pwritev_done`` and ``none`` from the blkdebug node itself
  (:data:`OWN_EVENTS`); the ``pwritev_rmw_*`` events from the chokepoint's read-modify-write when
  a request misses blkdebug's ``align`` (:data:`RMW_EVENTS`).

A rule whose event no node of its graph can send to its blkdebug node is reported when the graph
opens (:mod:`rig.filters.blkdebug_reach`); :data:`QEMU_EMITTERS` names what would emit it.
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

#: Sent by the flush of every node to its primary child's chain (QEMU's bdrv_co_flush).
FLUSH_EVENTS: Final = frozenset({"flush_to_os", "flush_to_disk"})
#: Sent by a blkdebug node to itself: around each write it takes, and once at open.
OWN_EVENTS: Final = frozenset({"pwritev", "pwritev_zero", "pwritev_done", "none"})
#: Sent by the chokepoint's read-modify-write, when a request misses blkdebug's ``align``.
RMW_EVENTS: Final = frozenset({"pwritev_rmw_head", "pwritev_rmw_after_head",
                               "pwritev_rmw_tail", "pwritev_rmw_after_tail"})

_QCOW2_ONLY = ("vmstate_load", "vmstate_save", "l1_grow_alloc_table", "l1_grow_write_table",
               "l1_grow_activate_table", "l1_shrink_write_table", "l1_shrink_free_l2_clusters",
               "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
               "reftable_load", "reftable_grow", "reftable_update", "refblock_load",
               "refblock_update", "refblock_update_part", "refblock_alloc",
               "refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
               "refblock_alloc_write_table", "refblock_alloc_switch_table", "cluster_alloc",
               "cluster_alloc_bytes", "cluster_free", "cluster_alloc_space",
               "empty_image_prepare", "read_compressed", "write_compressed")
#: Event -> what emits it in QEMU 7.2 (for messages about events no node of a graph emits).
QEMU_EMITTERS: Final[dict[str, str]] = {
    **{event: "qcow2" for event in _QCOW2_ONLY},
    "l1_update": "qcow2, qcow, qed", "l2_load": "qcow2, qcow, qed", "l2_update": "qcow2, qcow, qed",
    "read_aio": "raw, qcow2, qcow, qed, vmdk", "write_aio": "raw, qcow2, qcow, qed, vmdk",
    "read_backing_aio": "qcow2, qcow, qed", "cow_read": "qcow2, qed, vmdk",
    "cow_write": "qcow2, qed, vmdk", "cor_write": "copy-on-read",
    "flush_to_os": "the flush of a node above blkdebug",
    "flush_to_disk": "the flush of a node above blkdebug",
    **{event: "blkdebug itself" for event in OWN_EVENTS},
    **{event: "the read-modify-write of a request that misses blkdebug's align"
       for event in RMW_EVENTS},
}


def declared_events(cls: type) -> frozenset[str]:
    """The events a driver class declares it emits (``blkdebug_events``; none if absent)."""
    events: frozenset[str] = getattr(cls, "blkdebug_events", frozenset())
    return events
