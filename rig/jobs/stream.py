"""The block-stream job (QEMU 7.2's block/stream.c): copy what the backing chain down to an
optional base holds into the top image, then point the top at the base (or at nothing).

Per 512 KiB chunk (QEMU's STREAM_CHUNK): sleep (the rate-limit delay; the pause point), stop if
cancelled, skip what the top holds, ask the chain above the base (:func:`allocated_above`), copy
what it holds through a copy-on-read filter into the top, count the chunk in the progress
whether copied or not, and delay only after copied chunks. Errors go through the ``on-error``
policy (always reported as a ``read``): report ends the job, ignore goes on but fails it at the
end, stop pauses it with the io-status set and retries the chunk on resume, enospc stops on
ENOSPC and reports the rest. The backing file is rewritten only when the job succeeds.

Guest I/O goes on through the same :class:`BlockBackend`: each copy is a *serialising* tracked
request over the top's clusters it touches, so an overlapping guest write waits for it (and it
for a guest write already in flight), and the copy-on-read filter re-checks the top's
allocation before writing: a guest write is never overwritten by older backing data.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable

from rig.core.backend import BlockBackend, ErrorAction
from rig.core.buffers import aligned_buffer
from rig.core.clock import WaitClock
from rig.core.node import Node
from rig.errors import ConfigError
from rig.filters.copy_on_read import CopyOnReadFilter, backing_of
from rig.formats.qcow2.driver import Qcow2Node
from rig.jobs.chain import (
    allocated_above,
    backing_name,
    find_base,
    image_path,
    overlay_of,
    unhook,
)
from rig.jobs.events import Listener
from rig.jobs.job import Job

STREAM_CHUNK = 512 << 10


def parse_on_error(value: str | ErrorAction) -> ErrorAction:
    try:
        return ErrorAction(value)
    except ValueError:
        raise ConfigError(f"on-error: unknown policy {str(value)!r} (one of report, ignore, "
                          "stop, enospc)") from None


def stream_top(blk: BlockBackend) -> Qcow2Node:
    """The image a stream writes into: the backend's root, which must be a writable qcow2."""
    top = blk.root
    if not isinstance(top, Qcow2Node):
        raise ConfigError(f"'{top.describe()}' is a {top.format_name or top.driver_name} node; "
                          "streaming needs a qcow2 image at the top")
    if blk.read_only or top.read_only:
        raise ConfigError("Block node is read-only (open the image read-write to stream "
                          "into it)")
    return top


class StreamJob(Job):
    """``StreamJob(blk, base=..., speed=..., on_error=...)``, then :meth:`start`."""

    job_type = "stream"

    def __init__(self, blk: BlockBackend, *, base: str | Node | None = None,
                 backing_file: str | None = None, job_id: str = "", speed: int = 0,
                 on_error: str | ErrorAction = ErrorAction.REPORT,
                 clock: WaitClock | None = None, listeners: Iterable[Listener] = ()) -> None:
        self.blk = blk
        self.top = top = stream_top(blk)
        self.on_error = parse_on_error(on_error)
        self.base = find_base(top, base)
        if backing_file is not None and self.base is None:
            raise ConfigError("backing file specified, but streaming the entire chain")
        self.backing_file = backing_file
        super().__init__(job_id or top.node_name or os.path.basename(image_path(top)),
                         speed=speed, clock=clock, listeners=listeners)
        self.nothing_to_do = backing_of(top) is self.base
        self._cor = CopyOnReadFilter()
        self._cor.attach_child("file", top)
        self._cor.base = self.base
        self.copied = 0
        """Bytes the job asked the chain to copy (chunks that held data above the base)."""

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        if self.nothing_to_do:
            return 0
        length = self.top.getlength()
        self.progress_set_remaining(length)
        buf = aligned_buffer(STREAM_CHUNK)
        offset = delay = error = 0
        while offset < length:
            self.sleep(delay)
            if self.is_cancelled:
                break
            n = min(STREAM_CHUNK, length - offset)
            copy = False
            try:
                status = self.top.block_status(offset, n)
                n = max(1, min(status.length, n))
                if not status.allocated:
                    copy, n = allocated_above(self.top, self.base, offset, n)
                    if not copy and n == 0:
                        n = length - offset  # the backing file ends here
                if copy:
                    self._populate(offset, n, buf)
                err = 0
            except OSError as e:
                err = e.errno or errno.EIO
            if err:
                action = self.error_action(self.on_error, err, is_read=True)
                if action is ErrorAction.STOP:
                    continue  # paused at the next pause point; the chunk is retried
                error = error or err
                if action is ErrorAction.REPORT:
                    break
            offset += n
            self.progress_update(n)
            delay = self.ratelimit_delay(n) if copy else 0
        return error

    def _populate(self, offset: int, n: int, buf: memoryview) -> None:
        """Copy ``[offset, offset+n)`` into the top through the copy-on-read filter, as one
        serialising tracked request over the whole top clusters it writes (on the backend's
        tracker, the one the guest's writes register in: overlapping guest writes wait for
        it, and it for those already in flight)."""
        cs = self._cor.cluster_size
        start = offset - offset % cs
        end = -(-(offset + n) // cs) * cs
        tracker = self.blk.tracker  # the one the guest's writes register in
        req = tracker.begin(start, end, serialising=True)
        try:
            # QEMU's stream reads with BDRV_REQ_PREFETCH: the data is not handed back
            self._cor.prefetch(offset, n, buf[:n])
        finally:
            tracker.end(req)
        self.copied += n

    # ------------------------------------------------------------- finish
    def prepare(self) -> None:
        """Success: the header names the base (or nothing), then the graph drops the images
        that are no longer needed (they are closed)."""
        if self.nothing_to_do:
            return
        top, base = self.top, self.base
        old = backing_of(top)
        if base is None:
            top.change_backing_file(None, None)
        else:
            top.change_backing_file(self.backing_file or backing_name(top, base),
                                    base.format_name or None)
        overlay = overlay_of(top, base) if base is not None else None
        # The top first (under its lock, so no guest request is still inside the old chain),
        # then the old chain lets go of the base: the other way round, a guest write merging
        # a partial cluster would read zeroes from an overlay that has just lost its backing.
        top.set_backing(base)
        if overlay is not None and base is not None:
            unhook(overlay, base)
        if old is not None and old is not base:
            old.close()

    def clean(self) -> None:
        self._cor.children.clear()

