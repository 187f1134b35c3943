"""BlockBackend: the front door and the ONE request chokepoint.

Every request from a user, the CLI, pytest or the export server enters here, and only here is it
validated (bounds, flags), split at ``max_transfer``, aligned (read-modify-write through aligned
bounce buffers, overlapping RMWs serialized by tracked requests), accounted (stats, dirty
bitmaps), and subjected to the error policy. Nodes below receive only clean requests.

Cache modes: ``write_cache=False`` is QEMU's writethrough: every write carries FUA, which a node
without native FUA emulates with a flush.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time

# weakref.ref is _weakref's: the weakref module costs start-up (issue 19).
from _weakref import ref as weakref_ref
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum

from rig.core.bitmap import DirtyBitmap
from rig.core.buffers import (
    PAGE_SIZE,
    BufferPool,
    aligned_buffer,
    as_byte_views,
    iov_aligned,
    iov_copy_in,
    iov_copy_out,
    iov_slice,
)
from rig.core.limits import DEFAULT_MAX_TRANSFER, BlockLimits
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.stats import BlockStats
from rig.core.tracked import RequestTracker, TrackedRequest
from rig.errors import ConfigError, StateError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:  # concurrent.futures (and logging) load when a request is first submitted
    from concurrent.futures import Future, ThreadPoolExecutor
    from typing import Any, TypeVar

    T = TypeVar("T")

_perf_counter_ns = time.perf_counter_ns

_WRITE_FLAGS = ReqFlags.FUA
_ZERO_FLAGS = ReqFlags.FUA | ReqFlags.MAY_UNMAP | ReqFlags.NO_FALLBACK
#: Bounce buffers for unaligned I/O and zero-fill fallback are processed in pieces of this size.
BOUNCE_CHUNK = 1 << 20


class ErrorAction(StrEnum):
    """What the backend does when a request fails (QEMU's rerror/werror)."""

    REPORT = "report"
    IGNORE = "ignore"
    STOP = "stop"
    ENOSPC = "enospc"


class IoStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    NOSPACE = "nospace"


class PolicyEvent:
    """What the error policy did, told to :attr:`BlockBackend.listeners` (in the request's
    thread): ``kind`` is ``"io-error"`` (a request failed: ``op``, ``offset``, ``length``,
    ``errno`` and the ``action`` taken), ``"stop"`` (the backend stopped: the first request
    parked, or :meth:`BlockBackend.pause`) or ``"resume"``."""

    __slots__ = ("action", "errno", "kind", "length", "offset", "op")

    def __init__(self, kind: str, op: str = "", offset: int = 0, length: int = 0,
                 errno: int = 0, action: str = "") -> None:
        self.kind = kind
        self.op = op
        self.offset = offset
        self.length = length
        self.errno = errno
        self.action = action

    def __repr__(self) -> str:
        return (f"PolicyEvent({self.kind!r}, op={self.op!r}, offset={self.offset}, "
                f"length={self.length}, errno={self.errno}, action={self.action!r})")


class _Parked:
    """A request parked by the ``stop`` policy; ``retry`` is set when it is released."""

    __slots__ = ("retry",)

    def __init__(self) -> None:
        self.retry: bool | None = None


def _aligned_middle(offset: int, end: int, align: int) -> tuple[int, int]:
    """Split ``[offset, end)`` at ``align``: returns ``(head_end, tail_start)``, so the pieces are
    the unaligned head ``[offset, head_end)``, the aligned middle ``[head_end, tail_start)`` and
    the unaligned tail ``[tail_start, end)`` (each possibly empty)."""
    head_end = min(end, -(-offset // align) * align)
    return head_end, max(head_end, end - end % align)


def _discard_pieces(offset: int, length: int, req_align: int, granularity: int,
                    max_discard: int) -> list[tuple[int, int]]:
    """QEMU 7.2's fragmentation of a discard (``bdrv_co_pdiscard``), as ``(start, stop)``
    pieces: small pieces up to the first boundary of the granule ``max(granularity,
    req_align)`` (first to ``req_align``), whole granules up to the last boundary (at most
    ``max_discard`` each, rounded down to the granule), then the tail (its part aligned to
    ``req_align`` first). A node that only discards whole granules (qcow2: clusters) thus sees
    them whole wherever ``max_discard`` cuts the range (iotests 177, 204)."""
    req_align = max(req_align, 1)
    align = max(granularity, req_align)
    if align % req_align:
        align = req_align
    max_discard = max(max_discard - max_discard % align, req_align)
    end = offset + length
    head, tail = offset % align, end % align
    pieces = []
    while offset < end:
        num = end - offset
        if head:
            num = min(num, align - head)
            if num % req_align:
                num %= req_align
            head = (head + num) % align
        elif tail:
            if num > align:
                num -= tail
            elif tail % req_align and tail > req_align:
                tail %= req_align
                num -= tail
        num = min(num, max_discard)
        pieces.append((offset, offset + num))
        offset += num
    return pieces


def _eio(msg: str) -> OSError:
    return OSError(errno.EIO, msg)


def _byte_views(iov: Sequence[Any]) -> tuple[list[memoryview], int]:
    """``as_byte_views(iov)`` and its total length; one flat byte view (the usual request) takes
    a shortcut to the same result."""
    if len(iov) == 1:
        v = iov[0]
        if type(v) is memoryview and v.ndim == 1 and v.format == "B":
            return [v], v.nbytes
    views = as_byte_views(iov)
    return views, sum(v.nbytes for v in views)


class BlockBackend:
    """The front door over a node graph."""

    def __init__(
        self,
        root: Node,
        *,
        write_cache: bool = True,
        read_only: bool | None = None,
        on_read_error: str | ErrorAction = ErrorAction.REPORT,
        on_write_error: str | ErrorAction = ErrorAction.REPORT,
        aio_workers: int = 8,
        swallow_rmw_read_errors: bool = False,
    ) -> None:
        self.root = root
        self.write_cache = write_cache
        self.read_only = root.read_only if read_only is None else read_only
        try:
            self.on_read_error = ErrorAction(on_read_error)
            self.on_write_error = ErrorAction(on_write_error)
        except ValueError as e:
            raise ConfigError(f"error policy: {e} (one of report, ignore, stop, enospc)") from None
        if self.on_read_error is ErrorAction.ENOSPC:
            raise ConfigError("on_read_error: 'enospc' applies only to writes")
        self.stats = BlockStats()
        self.bitmaps: list[DirtyBitmap] = []
        self.iostatus = IoStatus.OK
        self._tracker = RequestTracker()
        self._stopped = threading.Condition()
        self._paused = False
        self._parked: list[_Parked] = []
        self._no_stops = False
        self._closing = False
        #: Called with a :class:`PolicyEvent` for every failed request and every stop and
        #: resume (the QMP server turns them into BLOCK_IO_ERROR, STOP and RESUME).
        self.listeners: list[Callable[[PolicyEvent], None]] = []
        self._aio_workers = aio_workers
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: set[Future[Any]] = set()
        self._inflight_lock = threading.Lock()
        self._zero_buf: memoryview | None = None
        #: Reused bounce buffers (``BOUNCE_CHUNK`` each) for unaligned requests.
        self._bounce_pool = BufferPool(BOUNCE_CHUNK, keep=8)
        self._last_aligned: tuple[weakref_ref[memoryview], int] | None = None
        self.swallow_rmw_read_errors = swallow_rmw_read_errors
        """QEMU 7.2 quirk: a failing read-modify-write read is ignored and the write goes on
        (the unread part is written as zeroes). Off by default; ``rig io`` turns it on."""
        self.closed = False
        self._length = root.getlength() if root.is_inserted() else 0

    # ---------------------------------------------------------------- basics
    @property
    def limits(self) -> BlockLimits:
        return self.root.limits

    @property
    def tracker(self) -> RequestTracker:
        """The tracked requests of this backend's writes: a job that writes beside the guest
        (the stream job) registers its serialising requests here, so they wait for each other."""
        return self._tracker

    def getlength(self) -> int:
        return self._length

    def refresh_length(self) -> int:
        self._length = self.root.getlength() if self.root.is_inserted() else 0
        return self._length

    def add_dirty_bitmap(self, granularity: int = 65536, name: str = "") -> DirtyBitmap:
        bitmap = DirtyBitmap(self._length, granularity, name)
        self.bitmaps.append(bitmap)
        return bitmap

    def _check(self, offset: int, length: int, write: bool) -> None:
        if self.closed:
            raise StateError("the block backend is closed")
        if write and self.read_only:
            raise OSError(errno.EPERM, "Block node is read-only")
        if offset < 0 or length < 0:
            self.stats.account_invalid("write" if write else "read")
            raise _eio(f"invalid request: offset {offset} length {length}")
        if offset + length > self._length:
            if self._length == 0 and not self.root.is_inserted():
                raise OSError(errno.ENOMEDIUM, "No medium found")
            self.stats.account_invalid("write" if write else "read")
            raise _eio(f"request [{offset}, {offset + length}) is beyond the end of the "
                       f"device ({self._length} bytes)")

    # --------------------------------------------------------- error policy
    def _action_for(self, is_write: bool, err: int) -> ErrorAction:
        action = self.on_write_error if is_write else self.on_read_error
        if action is ErrorAction.ENOSPC:
            return ErrorAction.STOP if err == errno.ENOSPC else ErrorAction.REPORT
        return action

    def _run(self, kind: str, offset: int, nbytes: int, end: int, fn: Callable[..., None],
             *args: Any) -> None:
        """Run one request, ``fn(*args)``, under accounting and the error policy. While the
        backend is stopped, a new request waits before it starts (as a stopped VM's guest
        issues nothing)."""
        if self._paused:
            self._wait_running()
        while True:
            start = time.perf_counter_ns()
            try:
                fn(*args)
            except OSError as e:
                if self._failed(kind, offset, nbytes, start, e):
                    continue
                return
            self.stats.account(kind, nbytes, time.perf_counter_ns() - start, True, end)
            return

    def _failed(self, kind: str, offset: int, nbytes: int, start: int, e: OSError) -> bool:
        """A request of :meth:`_run` failed with ``e`` (being handled): account it and apply
        the error policy. Raises ``e`` (report), or returns False (ignore: the request
        succeeds) or True (stop, then resumed: run it again)."""
        self.stats.account(kind, nbytes, time.perf_counter_ns() - start, False)
        code = e.errno or errno.EIO
        action = self._action_for(kind != "read", code)
        if action is ErrorAction.STOP and self._no_stops:
            action = ErrorAction.REPORT
        if self.listeners:
            self._tell(PolicyEvent("io-error", kind, offset, nbytes, code, action.value))
        if action is ErrorAction.REPORT:
            raise e
        if action is ErrorAction.IGNORE:
            return False
        self._stop(e)
        return True

    def _tell(self, event: PolicyEvent) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _stop(self, err: OSError) -> None:
        """``stop``: record the iostatus and park the request until :meth:`resume` (retry it)
        or :meth:`fail_stopped` (fail it with ``err``)."""
        parked = _Parked()
        with self._stopped:
            if self._no_stops or self.closed:
                raise err
            if self.iostatus is IoStatus.OK:
                self.iostatus = IoStatus.NOSPACE if err.errno == errno.ENOSPC else IoStatus.FAILED
            first = not self._paused
            self._paused = True
            self._parked.append(parked)
        if first and self.listeners:
            self._tell(PolicyEvent("stop"))
        with self._stopped:
            while parked.retry is None:
                self._stopped.wait()
        if not parked.retry:
            raise err

    def _wait_running(self) -> None:
        with self._stopped:
            while self._paused and not self._closing:
                self._stopped.wait()
            if self._closing:
                raise OSError(errno.EIO, "the device was stopped when it was closed")

    @property
    def paused(self) -> bool:
        """True while the backend is stopped (a request parked, or :meth:`pause`)."""
        return self._paused

    @property
    def parked(self) -> int:
        """How many requests the ``stop`` policy holds right now."""
        with self._stopped:
            return len(self._parked)

    def pause(self) -> None:
        """Stop the backend as QMP's ``stop`` does: new requests wait until :meth:`resume`."""
        with self._stopped:
            if self._paused or self.closed:
                return
            self._paused = True
        if self.listeners:
            self._tell(PolicyEvent("stop"))

    def resume(self) -> None:
        """Retry the requests parked by the ``stop`` policy, let waiting ones start; the
        iostatus becomes ``ok`` (QMP's ``cont``)."""
        self._release(retry=True)

    def fail_stopped(self) -> None:
        """Fail the parked requests with their errors (the program sees them), then run."""
        self._release(retry=False)

    def end_stops(self) -> None:
        """No more stops from now on (``stop`` acts as ``report``); parked requests fail. An
        export calls this before its teardown: a parked request would hold up its loop
        device's detach for ever."""
        with self._stopped:
            self._no_stops = True
        self._release(retry=False)

    def _release(self, *, retry: bool) -> None:
        with self._stopped:
            was = self._paused
            for parked in self._parked:
                parked.retry = retry
            self._parked.clear()
            self._paused = False
            self.iostatus = IoStatus.OK
            self._stopped.notify_all()
        if was and self.listeners:
            self._tell(PolicyEvent("resume"))

    # ----------------------------------------------------------- direct path
    def direct(self, write: bool, offset: int, length: int
               ) -> tuple[Node, int, int, TrackedRequest | None] | None:
        """A read or write the caller may do itself on a host file, as the graph would
        (docs/export.md, "The direct path"): ``(leaf, fd, file_offset, tracked)`` when the backend
        runs, the request is in bounds, aligned for the whole chain (into a page-aligned
        buffer) and within ``max_transfer``, a write needs no write-through, dirty bitmap or
        wait for a read-modify-write, and every node on the way passes it through
        (:meth:`Node.direct`). The caller ends it with :meth:`direct_done` or, for a failed or
        short transfer, :meth:`direct_failed`. None: make the request as usual."""
        if self.closed or self._paused or offset < 0 or offset + length > self._length:
            return None
        root = self.root
        lim = root.limits
        if ((offset | length) & (lim.request_alignment - 1) or lim.buffer_alignment > PAGE_SIZE
                or length > (lim.max_transfer or DEFAULT_MAX_TRANSFER)):
            return None
        req = None
        if write:
            if self.read_only or not self.write_cache or self.bitmaps:
                return None
            req = self._tracker.try_begin(offset, offset + length)
            if req is None:
                return None
        plan = root.direct(write, offset, length)
        if plan is None:
            if req is not None:
                self._tracker.end(req)
            return None
        return plan[0], plan[1], plan[2], req

    def direct_done(self, write: bool, offset: int, length: int, start: int,
                    tracked: TrackedRequest | None, done: int = 0) -> None:
        """A direct request transferred every byte: account it as the graph would have
        (``done``: when it ended, ``time.perf_counter_ns()``; default now)."""
        if tracked is not None:
            self._tracker.end(tracked)
        done = done or _perf_counter_ns()
        if write:
            self.stats.account("write", length, done - start, True, offset + length, done)
        else:
            self.stats.account("read", length, done - start, True, 0, done)

    def direct_failed(self, write: bool, offset: int, iov: Iov, start: int,
                      tracked: TrackedRequest | None, leaf: Node, file_offset: int,
                      done: int, err: OSError | None) -> None:
        """A direct request came back short (``done`` bytes, ``err`` None: the leaf finishes
        it as it finishes its own short transfers) or failed with ``err``: what the graph does
        with the error follows (accounting, the error policy, a retry through the graph after
        ``stop`` and ``cont``). Returns when the request succeeded; raises its error."""
        length = sum(v.nbytes for v in iov)
        try:
            if err is None:
                try:
                    leaf.finish_direct(write, file_offset, length, iov, done)
                except OSError as e:
                    err = e
                else:
                    self.direct_done(write, offset, length, start, tracked)
                    tracked = None
                    return
        finally:
            if tracked is not None:
                self._tracker.end(tracked)
        kind = "write" if write else "read"
        if self._failed(kind, offset, length, start, err):
            if write:
                self._run(kind, offset, length, offset + length, self._do_write, offset, length,
                          iov, ReqFlags.NONE)
            else:
                self._run(kind, offset, length, 0, self._do_read, offset, length, iov)

    # ------------------------------------------------------------------ read
    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.preadv(offset, [memoryview(buf)])
        return bytes(buf)

    def preadv(self, offset: int, iov: Sequence[Any], flags: ReqFlags = ReqFlags.NONE) -> None:
        # The usual request, written out (issue 19: at queue depth 1 every call and attribute
        # here adds to each request's latency, and more so with caches cooled by the I/O): one
        # flat byte buffer that passed the alignment check before (the caller reuses it), no
        # flags, in bounds, within max_transfer, a running backend. It goes down the graph in
        # one call and is accounted; everything else, and any error, takes the general path.
        last = self._last_aligned
        if last is not None and len(iov) == 1 and not flags:
            v = iov[0]
            root = self.root
            lim = root.limits
            held = last[0]()
            length = held.nbytes if held is not None and held is v else -1
            if (length >= 0 and last[1] == lim.buffer_alignment and offset >= 0
                    and offset + length <= self._length and not self.closed and not self._paused
                    and (offset | length) & (lim.request_alignment - 1) == 0
                    and length <= (lim.max_transfer or DEFAULT_MAX_TRANSFER)):
                start = _perf_counter_ns()
                iov = [v]
                try:
                    root.preadv(offset, length, iov)
                except OSError as e:
                    if self._failed("read", offset, length, start, e):
                        self._run("read", offset, length, 0, self._do_read, offset, length,
                                  iov)
                    return
                done = _perf_counter_ns()
                self.stats.account("read", length, done - start, True, 0, done)
                return
        views, length = _byte_views(iov)
        if self.closed or offset < 0 or length < 0 or offset + length > self._length:
            self._check(offset, length, False)  # raises the error for what is wrong
        if flags:
            raise ValueError(f"preadv takes no flags, got {flags!r}")
        if self._paused:
            self._run("read", offset, length, 0, self._do_read, offset, length, views)
            return
        # _run's loop written out for the usual read (a running backend): a 4 KiB read at
        # queue depth 1 pays for every call here (issue 19).
        start = _perf_counter_ns()
        try:
            self._do_read(offset, length, views)
        except OSError as e:
            if self._failed("read", offset, length, start, e):
                self._run("read", offset, length, 0, self._do_read, offset, length, views)
            return
        done = _perf_counter_ns()
        self.stats.account("read", length, done - start, True, 0, done)

    def _do_read(self, offset: int, length: int, iov: Iov) -> None:
        lim = self.root.limits
        align = lim.request_alignment
        max_xfer = lim.max_transfer or DEFAULT_MAX_TRANSFER
        if (offset | length) & (align - 1) == 0 and self._iov_aligned(iov, lim.buffer_alignment):
            if length <= max_xfer:
                self.root.preadv(offset, length, iov)
                return
            pos = 0
            while pos < length:
                n = min(max_xfer, length - pos)
                self.root.preadv(offset + pos, n, iov_slice(iov, pos, n))
                pos += n
            return
        self._bounce_read(offset, length, iov, align, max_xfer)

    def _iov_aligned(self, iov: Iov, alignment: int) -> bool:
        """:func:`iov_aligned`, remembering the last one-buffer iovec it passed. Callers such as
        ``rig io`` reuse one buffer per request size, and finding a buffer's address costs more
        than the rest of a small request's checks. A memoryview's address and size never change;
        the weak reference keeps no export alive (the caller may resize or close its buffer)."""
        last = self._last_aligned  # one read: the aio workers share it
        if last is not None and len(iov) == 1 and last[0]() is iov[0] and last[1] == alignment:
            return True
        if not iov_aligned(iov, alignment):
            return False
        if len(iov) == 1:
            self._last_aligned = (weakref_ref(iov[0]), alignment)
        return True

    @contextlib.contextmanager
    def _bounce(self, size: int) -> Iterator[memoryview]:
        """An aligned bounce buffer of ``size`` bytes: a pooled one when it fits (no fresh
        memory, no mmap/munmap per request), else a new one."""
        if size > self._bounce_pool.size:
            yield aligned_buffer(size)
            return
        with self._bounce_pool.lend(size) as buf:
            yield buf

    def _bounce_read(self, offset: int, length: int, iov: Iov, align: int, max_xfer: int) -> None:
        chunk = max(align, min(max_xfer, BOUNCE_CHUNK) // align * align)
        a_start = offset - offset % align
        a_end = -(-(offset + length) // align) * align
        with self._bounce(min(chunk, a_end - a_start)) as bounce:
            self._bounce_read_via(bounce, offset, length, iov, chunk, a_start, a_end)

    def _bounce_read_via(self, bounce: memoryview, offset: int, length: int, iov: Iov,
                         chunk: int, a_start: int, a_end: int) -> None:
        pos = a_start
        while pos < a_end:
            n = min(chunk, a_end - pos)
            self.root.preadv(pos, n, [bounce[:n]])
            lo = max(offset, pos)
            hi = min(offset + length, pos + n)
            if hi > lo:
                iov_copy_in(iov_slice(iov, lo - offset, hi - lo), bounce[lo - pos:hi - pos])
            pos += n

    # ----------------------------------------------------------------- write
    def pwrite(self, offset: int, data: Any, *, fua: bool = False) -> None:
        self.pwritev(offset, [data], ReqFlags.FUA if fua else ReqFlags.NONE)

    def pwritev(self, offset: int, iov: Sequence[Any], flags: ReqFlags = ReqFlags.NONE) -> None:
        views, length = _byte_views(iov)
        if (self.closed or self.read_only or offset < 0 or length < 0
                or offset + length > self._length):
            self._check(offset, length, True)  # raises the error for what is wrong
        if flags and int(flags) & ~int(_WRITE_FLAGS):  # IntFlag's ~ keeps only known bits
            raise ValueError(f"pwritev accepts only FUA, got {flags!r}")
        if not self.write_cache:
            flags |= ReqFlags.FUA
        try:
            if self._paused:
                self._run("write", offset, length, offset + length, self._do_write, offset,
                          length, views, flags)
                return
            # _run's loop written out for a running backend, as in preadv.
            start = _perf_counter_ns()
            try:
                self._do_write(offset, length, views, flags)
            except OSError as e:
                if self._failed("write", offset, length, start, e):
                    self._run("write", offset, length, offset + length, self._do_write, offset,
                              length, views, flags)
                return
            done = _perf_counter_ns()
            self.stats.account("write", length, done - start, True, offset + length, done)
        finally:
            if self.bitmaps:
                self._mark_dirty(offset, length)

    def _do_write(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        lim = self.root.limits
        align = lim.request_alignment
        if (offset | length) & (align - 1) == 0:
            if not self._iov_aligned(iov, lim.buffer_alignment):
                with self._bounce(length) as bounce:
                    iov_copy_out(iov, bounce)
                    self._tracked_write(offset, length, [bounce], flags)
                return
            self._tracked_write(offset, length, iov, flags)
            return
        self._rmw_write(offset, length, iov, flags, align)

    def _tracked_write(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        req = self._tracker.begin(offset, offset + length, serialising=False)
        try:
            self._aligned_write(offset, length, iov, flags)
        finally:
            self._tracker.end(req)

    def _aligned_write(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        root = self.root
        max_xfer = root.limits.max_transfer or DEFAULT_MAX_TRANSFER
        if length <= max_xfer:
            root.pwritev(offset, length, iov, flags)
        else:
            # As QEMU does: only the last piece carries FUA.
            pos = 0
            while pos < length:
                n = min(max_xfer, length - pos)
                last = pos + n == length
                root.pwritev(offset + pos, n, iov_slice(iov, pos, n),
                             flags if last else flags & ~ReqFlags.FUA)
                pos += n

    def _rmw_write(self, offset: int, length: int, iov: Iov, flags: ReqFlags,
                   align: int) -> None:
        a_start = offset - offset % align
        a_end = -(-(offset + length) // align) * align
        req = self._tracker.begin(a_start, a_end, serialising=True)
        try:
            with self._bounce(a_end - a_start) as bounce:
                self._rmw_via(bounce, offset, length, iov, flags, align, a_start, a_end)
        finally:
            self._tracker.end(req)

    def _rmw_via(self, bounce: memoryview, offset: int, length: int, iov: Iov, flags: ReqFlags,
                 align: int, a_start: int, a_end: int) -> None:
        # Events fire only when the alignment that QEMU would pad at the event node (a
        # blkdebug ``align``) is what the request misses.
        sink = self.root.event_sink
        ev_align = sink.event_alignment if sink is not None else 1
        if offset != a_start:
            self._padding_read(a_start, bounce[:align], "head",
                               offset % ev_align != 0)
        tail_start = a_end - align
        if offset + length != a_end and (tail_start != a_start or offset == a_start):
            self._padding_read(tail_start, bounce[tail_start - a_start:], "tail",
                               (offset + length) % ev_align != 0)
        iov_copy_out(iov, bounce[offset - a_start:offset - a_start + length])
        self._aligned_write(a_start, a_end - a_start, [bounce], flags)

    def _padding_read(self, offset: int, buf: memoryview, where: str, events: bool) -> None:
        root = self.root
        if events:
            root.emit(f"pwritev_rmw_{where}")
        try:
            root.preadv(offset, buf.nbytes, [buf], ReqFlags.PADDING)
        except OSError:
            if not self.swallow_rmw_read_errors:
                raise
            buf[:] = bytes(buf.nbytes)
        if events:
            root.emit(f"pwritev_rmw_after_{where}")

    def _mark_dirty(self, offset: int, length: int) -> None:
        for bitmap in self.bitmaps:
            bitmap.mark(offset, length)

    # ----------------------------------------------------------- zero/discard
    def write_zeroes(self, offset: int, length: int, flags: ReqFlags = ReqFlags.NONE) -> None:
        self._check(offset, length, True)
        if int(flags) & ~int(_ZERO_FLAGS):  # IntFlag's ~ keeps only known bits
            raise ValueError(f"write_zeroes accepts FUA, MAY_UNMAP, NO_FALLBACK; got {flags!r}")
        if not self.write_cache:
            flags |= ReqFlags.FUA
        try:
            self._run("zero", offset, length, offset + length,
                      lambda: self._do_zeroes(offset, length, flags))
        finally:
            self._mark_dirty(offset, length)

    def _zeroes(self) -> memoryview:
        if self._zero_buf is None:
            self._zero_buf = aligned_buffer(BOUNCE_CHUNK)
        return self._zero_buf

    def _do_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        end = offset + length
        head_end, tail_start = _aligned_middle(offset, end, self.root.limits.request_alignment)
        write_flags = flags & ReqFlags.FUA
        if head_end > offset:
            if flags & ReqFlags.NO_FALLBACK:
                raise OSError(errno.ENOTSUP, "unaligned write_zeroes needs a fallback write")
            self._do_write(offset, head_end - offset, [self._zeroes()[:head_end - offset]],
                           write_flags)
        if tail_start > head_end:
            req = self._tracker.begin(head_end, tail_start, serialising=False)
            try:
                self._aligned_zeroes(head_end, tail_start - head_end, flags)
            finally:
                self._tracker.end(req)
        if end > tail_start:
            if flags & ReqFlags.NO_FALLBACK:
                raise OSError(errno.ENOTSUP, "unaligned write_zeroes needs a fallback write")
            self._do_write(tail_start, end - tail_start, [self._zeroes()[:end - tail_start]],
                           write_flags)

    def _aligned_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        """QEMU's bdrv_co_do_pwrite_zeroes: pieces up to the first boundary of the root's
        ``write_zeroes_alignment`` (blkdebug's ``opt-write-zero``), whole units of it (at most
        ``max_write_zeroes``, rounded down to it), then the tail; a piece the node refuses
        (ENOTSUP) is written as zeroes (iotest 204)."""
        root = self.root
        lim = root.limits
        req_align = lim.request_alignment
        align = max(getattr(root, "write_zeroes_alignment", 0), req_align)
        if align % req_align:
            align = req_align
        max_zero = lim.max_write_zeroes or DEFAULT_MAX_TRANSFER
        max_zero = max(max_zero - max_zero % align, req_align)
        max_xfer = lim.max_transfer or DEFAULT_MAX_TRANSFER
        end = offset + length
        head, tail = offset % align, end % align
        while offset < end:
            n = end - offset
            if head:
                n = min(n, max_xfer, align - head)
                head = (head + n) % align
            elif tail and n > align:
                n -= tail
            n = min(n, max_zero)
            try:
                root.write_zeroes(offset, n, flags)
            except OSError as e:
                if e.errno != errno.ENOTSUP or flags & ReqFlags.NO_FALLBACK:
                    raise
                self._zero_fallback(offset, n, flags & ReqFlags.FUA)
            offset += n

    def _zero_fallback(self, offset: int, length: int, flags: ReqFlags) -> None:
        zeroes = self._zeroes()
        max_xfer = self.root.limits.max_transfer or DEFAULT_MAX_TRANSFER
        step = min(BOUNCE_CHUNK, max_xfer)
        pos = 0
        while pos < length:
            n = min(step, length - pos)
            last = pos + n == length
            self.root.pwritev(offset + pos, n, [zeroes[:n]], flags if last else ReqFlags.NONE)
            pos += n

    def discard(self, offset: int, length: int) -> None:
        """Discard is advisory: an unsupported discard (ENOTSUP) counts as success, as in QEMU.

        As QEMU's bdrv_co_pdiscard does, the range goes down in up to three pieces: the
        unaligned head, the aligned middle, the unaligned tail. A node that can discard bytes
        (a file: hole punching) discards exactly the range; one that cannot says ENOTSUP.
        """
        self._check(offset, length, True)
        lim = self.root.limits
        pieces = _discard_pieces(offset, length, lim.request_alignment,
                                 lim.discard_granularity, lim.max_discard or DEFAULT_MAX_TRANSFER)

        def run() -> None:
            for start, stop in pieces:
                # Tracked, as QEMU's BDRV_TRACKED_DISCARD: a job's serialising copy of the same
                # range (block-stream) waits for it instead of undoing it.
                req = self._tracker.begin(start, stop, serialising=False)
                try:
                    self.root.discard(start, stop - start)
                except OSError as e:
                    if e.errno != errno.ENOTSUP:
                        raise
                finally:
                    self._tracker.end(req)
            if not self.write_cache:
                self.root.flush()

        try:
            self._run("discard", offset, length, 0, run)
        finally:
            self._mark_dirty(offset, length)

    # ------------------------------------------------------------------ flush
    def flush(self) -> None:
        """QEMU's flush: ``flush_to_os`` then, if anything was written, ``flush_to_disk``."""
        if self.closed:
            raise StateError("the block backend is closed")
        self._run("flush", 0, 0, 0, self.root.flush)

    # ------------------------------------------------------------ the rest
    def block_status(self, offset: int, length: int) -> BlockStatus:
        self._check(offset, length, False)
        return self.root.block_status(offset, length)

    def truncate(self, length: int) -> None:
        if self.read_only:
            raise OSError(errno.EPERM, "Block node is read-only")
        if length < 0:
            raise _eio(f"invalid length {length}")
        self.root.truncate(length)
        self.refresh_length()

    def is_inserted(self) -> bool:
        return self.root.is_inserted()

    def media_changed(self) -> bool:
        return self.root.media_changed()

    def eject(self, eject: bool = True, *, force: bool = False) -> None:
        """Open (``eject``) or close the tray; a locked medium is EBUSY unless ``force``."""
        self.root.eject(eject, force=force)
        self.refresh_length()

    def lock_medium(self, locked: bool) -> None:
        self.root.lock_medium(locked)

    # ----------------------------------------------------------------- aio
    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run a backend call on the worker pool (queue depth > 1)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(self._aio_workers, thread_name_prefix="rig-aio")
        fut = self._executor.submit(fn, *args)
        with self._inflight_lock:
            self._inflight.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: Future[Any]) -> None:
        with self._inflight_lock:
            self._inflight.discard(fut)

    def drain(self) -> None:
        """Wait for every submitted request to complete (errors stay in their futures).

        The graph is drained as QEMU drains it: ``drain_begin`` first (throttle nodes lift
        their limits), ``drain_end`` once nothing is in flight."""
        self.root.drain_begin()
        try:
            while True:
                with self._inflight_lock:
                    pending = list(self._inflight)
                if not pending:
                    return
                from concurrent.futures import CancelledError

                for fut in pending:
                    with contextlib.suppress(CancelledError):
                        fut.exception()
        finally:
            self.root.drain_end()

    def close(self) -> None:
        if self.closed:
            return
        with self._stopped:
            self._closing = True  # what waits on a pause fails instead of running
        self.end_stops()
        self.drain()
        with self._stopped:
            self.closed = True
            self._stopped.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.root.close()

    def __enter__(self) -> BlockBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
