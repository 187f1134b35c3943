"""QEMU's cache modes (bdrv_parse_cache_mode) as three independent switches."""

from __future__ import annotations

from dataclasses import dataclass

from rig.errors import ConfigError


@dataclass(frozen=True)
class CacheMode:
    writeback: bool
    """The backend's write cache (WCE). Off = writethrough: every write is FUA."""
    direct: bool
    """O_DIRECT on host nodes (bypass the host page cache)."""
    no_flush: bool
    """Never flush to disk (cache=unsafe)."""


CACHE_MODES: dict[str, CacheMode] = {
    "writeback": CacheMode(writeback=True, direct=False, no_flush=False),
    "none": CacheMode(writeback=True, direct=True, no_flush=False),
    "off": CacheMode(writeback=True, direct=True, no_flush=False),
    "writethrough": CacheMode(writeback=False, direct=False, no_flush=False),
    "directsync": CacheMode(writeback=False, direct=True, no_flush=False),
    "unsafe": CacheMode(writeback=True, direct=False, no_flush=True),
}


def parse_cache_mode(name: str) -> CacheMode:
    try:
        return CACHE_MODES[name]
    except KeyError:
        raise ConfigError(f"Invalid cache option: {name} "
                          f"(one of: {', '.join(CACHE_MODES)})") from None
