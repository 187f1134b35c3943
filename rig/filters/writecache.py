"""The ``writecache`` filter: a disk with a volatile write cache, and its power cuts.

Graph form::

    {"driver": "writecache", "file": {...child: the media...},
     "wce": true,              # the disk's write-cache-enable bit; off = write-through
     "cache-size": "1M",       # dirty data held before the oldest is written back (0: no limit)
     "policy": "drop-all",     # what power_cut() keeps by default: drop-all, keep-all, random
     "seed": 0}                # seed of the random policy

The child is the *media*: it gets data only when the cache writes it back. Requests:

* a write, write-zeroes or discard completes into the cache: reads see it at once (the cache is an
  overlay over the media, newest request wins), the media does not;
* a FUA write or FUA write-zeroes goes to the media at once (with FUA, so a child with its own
  cache is made durable too); the parts of older cached requests it overwrites are dropped from
  the cache, as a disk's cache would overwrite them;
* ``flush_to_disk`` writes back every cached request in the order they arrived, then the generic
  flush goes on to the child;
* with ``wce`` off every request goes to the media at once with FUA (a write-through disk); with
  ``cache-size`` the oldest cached requests are written back when the cache holds more than that;
* the node honours the cache modes: writethrough/directsync put FUA on every write (the backend),
  and ``cache.no-flush`` (cache=unsafe) skips ``flush_to_disk``, so a flush never reaches the
  cache; this node also ignores FUA then (as QEMU 10 does in bdrv_driver_pwritev; in 7.2 the
  FUA of file-posix is an emulated flush, which no-flush skips as well);
* :meth:`WriteCacheFilter.power_cut` throws the cache away. What reaches the media first is what a
  real disk may have written back before losing power: nothing (``drop-all``), everything
  (``keep-all``) or a seeded random choice (``random``): each cached request dropped, kept, or
  torn at sector granularity (512 bytes, or the request alignment when larger), in arrival order.
  The node keeps working afterwards, as a disk whose power came back.

Closing the node writes the cache back to the child without flushing it (closing is not a power
cut). A cached discard reads back as zeroes; when it is written back and the child cannot discard
the range (ENOTSUP, EINVAL, or its ``discard=ignore``), zeroes are written instead, so the media
ends up with what readers saw. A discard piece that is not aligned to the node's discard
alignment goes to the child at once, after the whole cache was written back (a real disk may
write back at any time; doing so keeps the order of overlapping requests).

Cost: the cache is a list of requests in arrival order. A read copies every cached request that
overlaps it over the media's data, O(n) in the number of cached requests, which is fine for the
sizes tests use. One lock covers the cache and the child calls made under it, so requests from a
thread pool are served one at a time.
"""

from __future__ import annotations

import errno
import random
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rig.core.buffers import aligned_buffer, iov_copy_in, iov_slice
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options

#: What :meth:`WriteCacheFilter.power_cut` can keep of the cache.
POLICIES = ("drop-all", "keep-all", "random")
#: The smallest unit a power cut can tear a request into (when the request alignment is smaller).
SECTOR = 512
#: Zero buffers for a child without write_zeroes are written in pieces of at most this size.
_ZERO_CHUNK = 1 << 20

WRITE, ZEROES, DISCARD = "write", "write_zeroes", "discard"


@dataclass(frozen=True, slots=True)
class CachedRequest:
    """One request held in the cache: ``data`` for a write, nothing for zeroes and discards."""

    offset: int
    length: int
    kind: str
    data: bytes = b""
    may_unmap: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.length

    def piece(self, start: int, end: int) -> CachedRequest:
        """The part of this request in ``[start, end)`` (which must lie inside it)."""
        data = self.data[start - self.offset:end - self.offset] if self.kind == WRITE else b""
        return CachedRequest(start, end - start, self.kind, data, self.may_unmap)

    def content(self, start: int, end: int) -> bytes:
        """What a read of ``[start, end)`` (inside the request) returns from it."""
        if self.kind == WRITE:
            return self.data[start - self.offset:end - self.offset]
        return bytes(end - start)


@dataclass(frozen=True)
class WriteCacheCounters:
    """A snapshot of what the cache did (see :meth:`WriteCacheFilter.counters`)."""

    writes_cached: int
    """Writes, write-zeroes and discards that completed into the cache."""
    writes_through: int
    """Requests that went to the media at once (FUA, ``wce`` off, unaligned discard pieces)."""
    writebacks: int
    """Cached requests written back to the media (flush, cache-size, WCE off, close, truncate)."""
    forced_writebacks: int
    """Of ``writebacks``, those forced by ``cache-size``."""
    flushes: int
    """``flush_to_disk`` calls that reached the cache (each writes all of it back)."""
    power_cuts: int
    dirty_requests: int
    """Requests in the cache now."""
    dirty_bytes: int
    """Distinct bytes whose newest content is only in the cache."""
    cached_bytes: int
    """Sum of the lengths of the cached requests (what ``cache-size`` limits)."""


@dataclass(frozen=True)
class PowerCutReport:
    """What one :meth:`WriteCacheFilter.power_cut` did with the cache."""

    policy: str
    seed: int | None
    """The seed of a random cut given explicitly (None: the node's own generator, or no seed)."""
    kept: int
    """Cached requests that reached the media whole."""
    torn: int
    """Cached requests of which only some sectors reached the media."""
    dropped: int
    """Cached requests lost entirely."""
    bytes_kept: int
    bytes_lost: int


def _merged_length(extents: list[tuple[int, int]]) -> int:
    """The number of distinct bytes covered by ``(start, end)`` ranges."""
    total = 0
    cur_start = cur_end = -1
    for start, end in sorted(extents):
        if start > cur_end:
            total += max(cur_end - cur_start, 0)
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    return total + max(cur_end - cur_start, 0)


@register_driver("writecache")
class WriteCacheFilter(Filter):
    """A volatile write cache over its child (the media). See the module docstring."""

    modifies_data: ClassVar[bool] = True

    def __init__(self, *, wce: bool = True, cache_size: int = 0, policy: str = "drop-all",
                 seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if policy not in POLICIES:
            raise ConfigError(f"writecache: unknown power-cut policy {policy!r} "
                              f"(one of: {', '.join(POLICIES)})")
        if cache_size < 0:
            raise ConfigError(f"writecache: cache-size must be >= 0: {cache_size}")
        self._wce = wce
        self.cache_size = cache_size
        self.policy = policy
        self.seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._pending: list[CachedRequest] = []
        self._cached_bytes = 0
        self._writes_cached = 0
        self._writes_through = 0
        self._writebacks = 0
        self._forced_writebacks = 0
        self._flushes = 0
        self._power_cuts = 0

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        node = cls(wce=opts.bool("wce", True), cache_size=opts.size("cache-size", 0),
                   policy=opts.enum("policy", POLICIES, "drop-all"), seed=opts.int("seed", 0),
                   **ctx.node_kwargs())
        return node.open_child(ctx)

    def refresh_limits(self) -> None:
        super().refresh_limits()
        if self.children.get(self.child_role) is not None:
            # The cache takes FUA itself: emulating it by a flush of this node would not see
            # the write (write_gen is bumped after the emulating flush on a non-leaf node).
            self.supported_write_flags = ReqFlags.FUA
            self.supported_zero_flags = (self.child.supported_zero_flags | ReqFlags.FUA
                                         | ReqFlags.MAY_UNMAP)

    # ------------------------------------------------------------------ control
    @property
    def wce(self) -> bool:
        """The write-cache-enable bit: True = volatile cache, False = write-through."""
        return self._wce

    def set_wce(self, enabled: bool) -> None:
        """Switch the cache on or off, as a disk's WCE bit. Switching it off writes the cache back
        and flushes the media first, as a disk does."""
        with self._lock:
            if self._wce and not enabled:
                self._write_back_all()
            self._wce = enabled
        if not enabled:
            self.child.flush()

    def counters(self) -> WriteCacheCounters:
        with self._lock:
            return WriteCacheCounters(
                writes_cached=self._writes_cached, writes_through=self._writes_through,
                writebacks=self._writebacks, forced_writebacks=self._forced_writebacks,
                flushes=self._flushes, power_cuts=self._power_cuts,
                dirty_requests=len(self._pending),
                dirty_bytes=_merged_length([(r.offset, r.end) for r in self._pending]),
                cached_bytes=self._cached_bytes)

    def dirty(self) -> list[CachedRequest]:
        """The cached requests, oldest first (the not-yet-durable part of the disk)."""
        with self._lock:
            return list(self._pending)

    def power_cut(self, keep: str | None = None, *, seed: int | None = None) -> PowerCutReport:
        """Lose power: the cache is thrown away after ``keep`` chose what reached the media.

        ``keep`` is ``"drop-all"``, ``"keep-all"`` or ``"random"`` (default: the node's
        ``policy`` option). A random cut draws from ``random.Random(seed)`` when ``seed`` is
        given, else from the node's generator (seeded by its ``seed`` option, so a sequence of
        cuts is reproducible). The media is not flushed: it is what remains after the cut.
        """
        policy = self.policy if keep is None else keep
        if policy not in POLICIES:
            raise ValueError(f"unknown power-cut policy {policy!r} (one of: {', '.join(POLICIES)})")
        with self._lock:
            rng = self._rng if seed is None else random.Random(seed)
            sector = max(SECTOR, self.limits.request_alignment)
            survivors: list[CachedRequest] = []
            kept = torn = dropped = bytes_kept = bytes_lost = 0
            for req in self._pending:
                pieces = self._surviving_pieces(req, policy, rng, sector)
                n = sum(p.length for p in pieces)
                bytes_kept += n
                bytes_lost += req.length - n
                if n == req.length:
                    kept += 1
                elif n == 0:
                    dropped += 1
                else:
                    torn += 1
                survivors.extend(pieces)
            self._pending = []
            self._cached_bytes = 0
            self._power_cuts += 1
            for piece in survivors:
                self._apply(piece, fua=False)
        return PowerCutReport(policy, seed, kept, torn, dropped, bytes_kept, bytes_lost)

    @staticmethod
    def _surviving_pieces(req: CachedRequest, policy: str, rng: random.Random,
                          sector: int) -> list[CachedRequest]:
        if policy == "drop-all":
            return []
        if policy == "keep-all":
            return [req]
        choice = rng.randrange(3)
        if choice == 0:
            return []
        if choice == 1:
            return [req]
        out: list[CachedRequest] = []
        pos = req.offset
        while pos < req.end:
            stop = min(req.end, (pos // sector + 1) * sector)
            if rng.random() < 0.5:
                out.append(req.piece(pos, stop))
            pos = stop
        return out

    # -------------------------------------------------------------- the cache
    def _apply(self, req: CachedRequest, *, fua: bool) -> None:
        """Put ``req`` on the media (the child)."""
        child = self.child
        if req.kind == WRITE:
            buf = memoryview(req.data)
            if child.limits.buffer_alignment > 1:  # O_DIRECT below: the chokepoint is above us
                buf = aligned_buffer(req.length)
                buf[:] = req.data
            child.pwritev(req.offset, req.length, [buf], ReqFlags.FUA if fua else ReqFlags.NONE)
        elif req.kind == ZEROES:
            self._zero_child(req.offset, req.length, req.may_unmap, fua)
        else:
            if child.discard_unmap:
                try:
                    child.discard(req.offset, req.length)
                    return
                except OSError as e:
                    if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
            # Readers saw zeroes: the media must hold what they saw.
            self._zero_child(req.offset, req.length, True, fua)

    def _zero_child(self, offset: int, length: int, may_unmap: bool, fua: bool) -> None:
        child = self.child
        flags = ReqFlags.MAY_UNMAP if may_unmap else ReqFlags.NONE
        try:
            child.write_zeroes(offset, length, flags | ReqFlags.FUA if fua else flags)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
        step = min(_ZERO_CHUNK, child.limits.max_transfer or _ZERO_CHUNK)
        zeroes = aligned_buffer(min(step, length))
        pos = 0
        while pos < length:
            n = min(step, length - pos)
            last = pos + n == length
            child.pwritev(offset + pos, n, [zeroes[:n]],
                          ReqFlags.FUA if fua and last else ReqFlags.NONE)
            pos += n

    def _write_back_all(self) -> None:
        """Write back every cached request, oldest first. Caller holds the lock. A failure
        leaves the failed request and the younger ones in the cache."""
        while self._pending:
            req = self._pending[0]
            self._apply(req, fua=False)
            del self._pending[0]
            self._cached_bytes -= req.length
            self._writebacks += 1

    def _drop_overlaps(self, start: int, end: int) -> None:
        """Remove ``[start, end)`` from every cached request (it was just made durable)."""
        kept: list[CachedRequest] = []
        for req in self._pending:
            if req.end <= start or req.offset >= end:
                kept.append(req)
                continue
            if req.offset < start:
                kept.append(req.piece(req.offset, start))
            if req.end > end:
                kept.append(req.piece(end, req.end))
        self._pending = kept
        self._cached_bytes = sum(r.length for r in kept)

    def _submit(self, req: CachedRequest, fua: bool) -> None:
        with self._lock:
            if not self._wce or (fua and not self.no_flush):
                # Write-through (durable at completion): FUA to the child, so a child with a
                # cache of its own is made durable too. Only once it is there do the older
                # cached requests lose the part it overwrote (a failed write changes nothing).
                self._apply(req, fua=True)
                if self._pending:
                    self._drop_overlaps(req.offset, req.end)
                self._writes_through += 1
                return
            self._pending.append(req)
            self._cached_bytes += req.length
            self._writes_cached += 1
            limit = self.cache_size
            while limit and self._cached_bytes > limit and self._pending:
                old = self._pending[0]
                self._apply(old, fua=False)
                del self._pending[0]
                self._cached_bytes -= old.length
                self._writebacks += 1
                self._forced_writebacks += 1

    # ------------------------------------------------------------ driver hooks
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        end = offset + length
        with self._lock:
            self.child.preadv(offset, length, iov, flags)
            for req in self._pending:
                lo, hi = max(offset, req.offset), min(end, req.end)
                if lo < hi:
                    iov_copy_in(iov_slice(iov, lo - offset, hi - lo),
                                memoryview(req.content(lo, hi)))

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        data = b"".join(iov)
        self._submit(CachedRequest(offset, length, WRITE, data), bool(flags & ReqFlags.FUA))

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        self._submit(CachedRequest(offset, length, ZEROES,
                                   may_unmap=bool(flags & ReqFlags.MAY_UNMAP)),
                     bool(flags & ReqFlags.FUA))

    def _discard(self, offset: int, length: int) -> None:
        lim = self.limits
        align = max(lim.request_alignment, lim.discard_granularity or 1)
        if (offset | length) % align:
            # A piece the media may refuse (EINVAL): it goes down now, with the cache written
            # back first so that overlapping requests stay in order.
            with self._lock:
                self._write_back_all()
                self.child.discard(offset, length)
                self._writes_through += 1
            return
        self._submit(CachedRequest(offset, length, DISCARD), False)

    def _flush_to_disk(self) -> None:
        with self._lock:
            self._flushes += 1
            self._write_back_all()

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        end = offset + length
        with self._lock:
            top: CachedRequest | None = None
            limit = end
            for req in self._pending:
                if req.offset <= offset < req.end:
                    top = req
                    limit = min(limit, req.end)
                elif offset < req.offset < limit:
                    limit = req.offset
            if top is None:
                st = self.child.block_status(offset, limit - offset)
                return BlockStatus(st.offset, min(st.length, limit - offset), st.data, st.zero,
                                   st.allocated)
        n = limit - offset
        if top.kind == WRITE:
            return BlockStatus(offset, n, data=True, zero=False, allocated=True)
        return BlockStatus(offset, n, data=top.kind == ZEROES, zero=True, allocated=True)

    def _truncate(self, length: int) -> None:
        with self._lock:
            self._write_back_all()
            self.child.truncate(length)

    def _close(self) -> None:
        # Closing is not a power cut: the disk keeps its power and writes its cache back.
        if self.children.get(self.child_role) is None:
            return
        with self._lock:
            self._write_back_all()
