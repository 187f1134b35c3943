"""The ``recorder`` filter: logs every request that changed the device, as it completed.

Graph form::

    {"driver": "recorder", "log": "run.wlog", "compress": false, "file": {...child...}}

Every request goes on to the child unchanged. Once the child has completed a write, write-zeroes,
discard or flush successfully, the filter appends it to the write log (:mod:`rig.crash.logfile`)
with its data, so the record order is the completion order. Overlapping requests pass through one
at a time (a request and its record complete before an overlapping one starts), so for every
byte the log's order is the order the child saw: two concurrent writes to one block could
otherwise land in one order and be logged in the other, and the replay would differ from the
device. Reads, block status and the rest pass through unlogged. :meth:`RecorderFilter.mark`
appends a user mark.

* A flush record says which records it covers: those that had completed when the flush was
  submitted (a write completing while the flush runs is not covered by it).
* FUA is taken natively and passed to the child with the request, so the log keeps the flag (a
  child without native FUA emulates it below this node).
* With ``cache.no-flush`` (cache=unsafe) flushes are not logged and FUA is logged as absent:
  nothing of this graph is made durable then, and the log says so.
* A failed request is not logged as a request: its effect on the device is unknown, the model
  takes it as none. The filter appends a *system mark* naming it instead (``rig: failed write
  [0, +4096): EIO``), so a reader of the log sees that the run had errors. A discard the child
  does not support (ENOTSUP, or its ``discard=ignore``) changed nothing and is not logged.
* A resize cannot be recorded (the log's header holds the size): truncate is refused (ENOTSUP).

The log file is created (replaced) at open and closed with the node.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from rig.core.node import Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.core.tracked import RequestTracker
from rig.crash.logfile import LogWriter
from rig.errors import ConfigError
from rig.filters.base import Filter

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options


def _failure(verb: str, offset: int, length: int, e: OSError) -> str:
    name = errno.errorcode.get(e.errno or 0, str(e.errno))
    return f"rig: failed {verb} [{offset}, +{length}): {name}"


@register_driver("recorder")
class RecorderFilter(Filter):
    """Passes everything to its child and logs what changed the device. See the module doc."""

    def __init__(self, *, log: str, compress: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_path = log
        #: How errors name the log (the option it came from).
        self.log_option = "the write log (log=)"
        self.compress = compress
        self.failed = 0
        """Requests the child failed (each has a system mark in the log)."""
        self._writer: LogWriter | None = None
        #: Requests between the child and their record; overlapping ones wait for each other.
        self._in_flight = RequestTracker()

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        path = opts.str("log", required=True)
        assert path is not None
        if not path:
            raise ConfigError(f"Parameter '{opts.path}log' must name a file")
        node = cls(log=path, compress=opts.bool("compress", False), **ctx.node_kwargs())
        node.log_option = f"the write log ({opts.path}log=)"
        return node.open_child(ctx, then=node.start)

    def start(self) -> None:
        """Create the log (called at open, once the child is attached)."""
        self._writer = LogWriter(self.log_path, device_size=self.child.getlength(),
                                 logical_block_size=self.limits.request_alignment,
                                 compress=self.compress, option=self.log_option)

    @property
    def writer(self) -> LogWriter:
        if self._writer is None:
            raise ConfigError(f"recorder: the log {self.log_path!r} is not open")
        return self._writer

    def refresh_limits(self) -> None:
        super().refresh_limits()
        if self.children.get(self.child_role) is not None:
            self.supported_write_flags = self.child.supported_write_flags | ReqFlags.FUA
            self.supported_zero_flags = self.child.supported_zero_flags | ReqFlags.FUA

    def mark(self, text: str) -> int:
        """Append a user mark; returns its sequence number."""
        return self.writer.mark(text)

    def _logged_fua(self, flags: ReqFlags) -> bool:
        return bool(flags & ReqFlags.FUA) and not self.no_flush

    def _fail(self, verb: str, offset: int, length: int, e: OSError) -> None:
        self.failed += 1
        self.writer.mark(_failure(verb, offset, length, e), system=True)

    # ------------------------------------------------------------ driver hooks
    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        req = self._in_flight.begin(offset, offset + length, serialising=True)
        try:
            try:
                self.child.pwritev(offset, length, iov, flags)
            except OSError as e:
                self._fail("write", offset, length, e)
                raise
            self.writer.write(offset, b"".join(iov), fua=self._logged_fua(flags))
        finally:
            self._in_flight.end(req)

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        req = self._in_flight.begin(offset, offset + length, serialising=True)
        try:
            try:
                self.child.write_zeroes(offset, length, flags)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):  # the backend falls back
                    self._fail("write_zeroes", offset, length, e)
                raise
            self.writer.write_zeroes(offset, length, fua=self._logged_fua(flags),
                                     may_unmap=bool(flags & ReqFlags.MAY_UNMAP))
        finally:
            self._in_flight.end(req)

    def _discard(self, offset: int, length: int) -> None:
        if not self.child.discard_unmap:
            return
        req = self._in_flight.begin(offset, offset + length, serialising=True)
        try:
            try:
                self.child.discard(offset, length)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    self._fail("discard", offset, length, e)
                raise
            self.writer.discard(offset, length)
        finally:
            self._in_flight.end(req)

    def _flush(self) -> None:
        """The generic flush (this node and below), then a flush record covering what had
        completed before it."""
        covers = self.writer.last_seq
        try:
            super()._flush()
        except OSError as e:
            self._fail("flush", 0, 0, e)
            raise
        if not self.no_flush:
            self.writer.flush(covers)

    def _truncate(self, length: int) -> None:
        raise OSError(errno.ENOTSUP, "recorder: a resize cannot be recorded "
                      f"({os.strerror(errno.ENOTSUP)})")

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
