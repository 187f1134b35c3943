"""QEMU's qcow2 runtime options besides ``overlap-check`` (qcow2_update_options_prepare): the
cache sizes with QEMU's validation and messages, ``cache-clean-interval``, ``lazy-refcounts``
and the ``pass-discard-*`` switches.

What the rig does with them: ``l2-cache-size`` (or its share of ``cache-size``) bounds how many
L2 tables stay cached (whole tables; at least two, QEMU's minimum); the refcount cache size,
the L2 cache entry size, the clean interval and the discard switches are validated and
otherwise have no effect (the rig keeps every refcount block it has read, and always passes
discards of freed clusters down). ``lazy-refcounts`` is read by the driver.
"""

from __future__ import annotations

from typing import NamedTuple

from rig.core.options import Options
from rig.errors import ConfigError

#: QEMU's defaults and limits (block/qcow2.h).
DEFAULT_L2_CACHE_MAX_SIZE = 32 << 20
MIN_REFCOUNT_CACHE_SIZE = 4
MIN_L2_CACHE_SIZE = 2
MIN_CLUSTER_BITS = 9
UINT_MAX = (1 << 32) - 1
INT_MAX = (1 << 31) - 1


class RuntimeOptions(NamedTuple):
    l2_cache_tables: int
    """How many L2 tables may stay cached."""
    lazy_refcounts: bool | None
    """``lazy-refcounts`` if given (None: the header's feature bit decides)."""


def parse(opts: Options, cluster_size: int, disk_size: int) -> RuntimeOptions:
    """The options of one qcow2 node, checked as QEMU's read_cache_sizes does."""
    set_combined = opts.has("cache-size")
    set_l2 = opts.has("l2-cache-size")
    set_refcount = opts.has("refcount-cache-size")
    set_entry = opts.has("l2-cache-entry-size")
    combined = opts.size("cache-size", 0)
    l2_max_setting = opts.size("l2-cache-size", DEFAULT_L2_CACHE_MAX_SIZE)
    refcount = opts.size("refcount-cache-size", 0)
    entry = opts.size("l2-cache-entry-size", cluster_size)
    max_l2_cache = -(-(-(-disk_size // cluster_size) * 8) // cluster_size) * cluster_size
    min_refcount = MIN_REFCOUNT_CACHE_SIZE * cluster_size
    l2 = min(max_l2_cache, l2_max_setting)
    if set_combined:
        if set_l2 and set_refcount:
            raise ConfigError("cache-size, l2-cache-size and refcount-cache-size may not be set "
                              "at the same time")
        if set_l2 and l2_max_setting > combined:
            raise ConfigError("l2-cache-size may not exceed cache-size")
        if refcount > combined:
            raise ConfigError("refcount-cache-size may not exceed cache-size")
        if set_l2:
            refcount = combined - l2
        elif set_refcount:
            l2 = combined - refcount
        elif combined >= max_l2_cache + min_refcount:
            l2 = max_l2_cache
        else:
            refcount = min(combined, min_refcount)
            l2 = combined - refcount
    if l2 < max_l2_cache and not set_entry:
        entry = min(cluster_size, 4096)
    if entry < 1 << MIN_CLUSTER_BITS or entry > cluster_size or entry & (entry - 1):
        raise ConfigError("L2 cache entry size must be a power of two between "
                          f"{1 << MIN_CLUSTER_BITS} and the cluster size ({cluster_size})")
    if max(l2 // entry, MIN_L2_CACHE_SIZE) > INT_MAX:
        raise ConfigError("L2 cache size too big")
    if refcount // cluster_size > INT_MAX:
        raise ConfigError("Refcount cache size too big")
    interval = opts.int("cache-clean-interval", 600, minimum=None)
    if not 0 <= interval <= UINT_MAX:  # QEMU reads -1 as a huge unsigned number
        raise ConfigError("Cache clean interval too big")
    for name in ("pass-discard-request", "pass-discard-snapshot", "pass-discard-other"):
        opts.bool(name)
    lazy = opts.bool("lazy-refcounts") if opts.has("lazy-refcounts") else None
    return RuntimeOptions(max(MIN_L2_CACHE_SIZE, l2 // cluster_size), lazy)
