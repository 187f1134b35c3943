"""QEMU's cache modes (bdrv_parse_cache_mode) as three independent switches."""

from __future__ import annotations

from rig.errors import ConfigError


class CacheMode:
    """Immutable and compared by value, like a frozen dataclass (written out for start-up)."""

    __slots__ = ("direct", "no_flush", "writeback")

    writeback: bool
    """The backend's write cache (WCE). Off = writethrough: every write is FUA."""
    direct: bool
    """O_DIRECT on host nodes (bypass the host page cache)."""
    no_flush: bool
    """Never flush to disk (cache=unsafe)."""

    def __init__(self, writeback: bool, direct: bool, no_flush: bool) -> None:
        object.__setattr__(self, "writeback", writeback)
        object.__setattr__(self, "direct", direct)
        object.__setattr__(self, "no_flush", no_flush)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} (CacheMode is immutable)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} (CacheMode is immutable)")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, CacheMode)
        return (self.writeback, self.direct, self.no_flush) == (
            other.writeback, other.direct, other.no_flush)

    def __hash__(self) -> int:
        return hash((self.writeback, self.direct, self.no_flush))

    def __reduce__(self) -> tuple[type[CacheMode], tuple[bool, bool, bool]]:
        return CacheMode, (self.writeback, self.direct, self.no_flush)

    def __repr__(self) -> str:
        return (f"CacheMode(writeback={self.writeback!r}, direct={self.direct!r}, "
                f"no_flush={self.no_flush!r})")


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
