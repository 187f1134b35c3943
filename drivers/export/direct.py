"""The export's direct path: small reads and writes the graph passes through, by native AIO.

The export's FUSE reader, given a READ or WRITE of at most :data:`SLOT_SIZE` bytes, asks the
backend (:meth:`~rig.core.backend.BlockBackend.direct`) whether every node on the way would pass
it straight to a host file: no rule that can match it, no event anyone listens to, no throttle,
cache or format mapping. If so, the reader submits the file I/O to the kernel
(:class:`~rig.drivers.ffi.aio.AioContext`) into a slot buffer of its own and goes back for the
next request at once, instead of a thread waiting in ``preadv`` for the disk (and then for the
interpreter lock). One reaper thread collects the completions in batches, accounts each as the
graph would, and answers it. A transfer that comes back short or failed is finished in a thread
of its own by the backend (:meth:`~rig.core.backend.BlockBackend.direct_failed`): the leaf's
own short-transfer handling, the error policy (``stop`` parks it there), the program's errno.
Anything else (no slot free, a larger request, a graph that says no) goes the usual way.

A request that finds itself alone (none in flight on the direct path, none waiting in
``/dev/fuse``: a program at queue depth 1) is done by the reader at once, with ``pread`` or
``pwrite``, and answered from there: that saves the kernel workqueue a native-AIO write
completes through and the reaper's wake-up. The first request of a burst may be done so; the
next ones find it in flight or find others waiting, and go by AIO.

Why: at queue depth 16 the thread-per-request path costs ~100 us of CPU per request in context
switches and interpreter-lock handoffs (``docs/export.md``); this is qemu-storage-daemon's
model (submit, then batched completions) for the requests where it changes nothing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from rig.core.backend import BlockBackend
from rig.core.buffers import aligned_buffer, buffer_address
from rig.drivers.ffi.aio import IOCB_CMD_PREAD, IOCB_CMD_PWRITE, AioContext, Iocb, IoEvent
from rig.drivers.ffi.calls import bind, library

_IO: dict[str, Any] = bind(library("c"), {
    "pread": ((ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64), ctypes.c_ssize_t),
    "pwrite": ((ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64), ctypes.c_ssize_t),
})
_pread, _pwrite = _IO["pread"], _IO["pwrite"]

#: The largest request the direct path takes (larger ones are few and gain nothing here).
SLOT_SIZE = 64 << 10
#: Requests in flight on the direct path at most (FUSE sends the export fewer than this).
SLOTS = 64
#: Addresses of WRITE data remembered (one is used; a few more cost nothing).
_SOURCES = 8
#: How long the reaper waits for completions before it looks whether it should end.
_REAP_WAIT = 0.25
#: How long :meth:`DirectPath.close` waits for requests in flight before it gives up on them.
_CLOSE_WAIT = 30.0


class _Slot:
    __slots__ = ("addr", "buf", "file_offset", "index", "iocb", "leaf", "length", "offset", "one",
                 "req", "start", "tracked", "write")

    def __init__(self, index: int) -> None:
        self.index = index
        self.buf = aligned_buffer(SLOT_SIZE)
        self.addr = buffer_address(self.buf) or 0
        self.iocb = Iocb()
        self.iocb.aio_data = index
        self.iocb.aio_buf = self.addr
        self.one = AioContext.one(self.iocb)
        self.req = 0
        self.write = False
        self.offset = self.length = self.start = self.file_offset = 0
        self.leaf: Any = None
        self.tracked: Any = None


class Replies(NamedTuple):
    """libfuse's answers to a READ (``read(req, addr, n)``) and a WRITE (``write(req, n)``),
    each bound twice: giving the interpreter lock up during the call, and keeping it
    (``*_held``)."""

    read: Callable[[int, int, int], Any]
    write: Callable[[int, int], Any]
    read_held: Callable[[int, int, int], Any]
    write_held: Callable[[int, int], Any]


class DirectPath:
    """Direct reads and writes of one export (see the module docstring). ``replies`` answer a
    request; ``fail(req, what, exc)`` answers it with the error an exception stands for."""

    def __init__(self, backend: BlockBackend, replies: Replies,
                 fail: Callable[[int, str, BaseException], None]) -> None:
        self._backend = backend
        #: Views of the memory WRITE data arrives in, by address (libfuse's single-threaded
        #: loop reads every request into one buffer, so a WRITE's data is always at the same
        #: address): copying through a view is a plain memoryview assignment, where a
        #: ``memcpy`` through ctypes cost ~3 us per request at queue depth 1.
        self._sources: dict[int, memoryview] = {}
        # The reaper and the finishing threads give the lock up while they answer: the reader
        # may run meanwhile (it gives it up in io_submit too). The reader, answering a lone
        # request (_now), keeps it: nobody else is waiting, and no thread can then see the
        # request answered but not yet counted.
        self._reply_read, self._reply_write = replies.read, replies.write
        self._reply_read_held, self._reply_write_held = replies.read_held, replies.write_held
        self._fail = fail
        self._ctx = AioContext(SLOTS)
        self._slots = [_Slot(i) for i in range(SLOTS)]
        #: Free slots; list.pop and list.append are atomic under the interpreter lock.
        self._free = list(reversed(self._slots))
        self._inflight: set[int] = set()
        self._finishing: set[threading.Thread] = set()
        self._closing = False
        #: Requests served by the direct path, those of them done at once by the reader
        #: (:meth:`_now`), and those that went back to the graph.
        self.served = 0
        self.done_at_once = 0
        self.handed_back = 0
        #: The FUSE connection, polled for requests waiting (:meth:`watch`).
        self._waiting: select.poll | None = None
        self._reaper = threading.Thread(target=self._reap, name="rig-export-aio", daemon=True)
        self._reaper.start()

    # ------------------------------------------------------------------ submit
    def _slot(self) -> _Slot | None:
        try:
            return self._free.pop()
        except IndexError:
            return None

    def read(self, req: int, offset: int, length: int) -> bool:
        """Take the READ if the graph lets it through (True: it will be answered)."""
        if length > SLOT_SIZE or self._closing:
            return False
        slot = self._slot()
        if slot is None:
            return False
        start = time.perf_counter_ns()
        plan = self._backend.direct(False, offset, length)
        if plan is None:
            self._free.append(slot)
            return False
        self._start(slot, req, False, offset, length, start, plan)
        return True

    def take_write(self, data: int, length: int) -> _Slot | None:
        """A slot holding a copy of the WRITE's ``length`` bytes at ``data`` (libfuse's request
        buffer), for :meth:`submit_write`; None when none is free or the WRITE is larger than a
        slot."""
        if length > SLOT_SIZE or self._closing:
            return None
        slot = self._slot()
        if slot is None:
            return None
        source = self._sources.get(data)
        if source is None:
            # A view of a slot's size: only the request's own bytes are ever read from it.
            source = memoryview((ctypes.c_char * SLOT_SIZE).from_address(data)).cast("B")
            if len(self._sources) < _SOURCES:
                self._sources[data] = source
        slot.buf[:length] = source[:length]
        return slot

    def submit_write(self, slot: _Slot, req: int, offset: int, length: int) -> bool:
        """Write the slot's data if the graph lets it through (True: it will be answered and
        the slot given back). False: the caller has the graph write it from ``slot.buf``, then
        gives the slot back (:meth:`release`)."""
        start = time.perf_counter_ns()
        plan = self._backend.direct(True, offset, length)
        if plan is None:
            return False
        self._start(slot, req, True, offset, length, start, plan)
        return True

    def _start(self, slot: _Slot, req: int, write: bool, offset: int, length: int, start: int,
               plan: tuple[Any, int, int, Any]) -> None:
        """Done at once when alone (none in flight, none waiting: :meth:`watch`), else by
        native AIO."""
        waiting = self._waiting
        if not self._inflight and waiting is not None and not waiting.poll(0):
            self._now(slot, req, write, offset, length, start, plan)
        else:
            self._submit(slot, req, write, offset, length, start, plan,
                         IOCB_CMD_PWRITE if write else IOCB_CMD_PREAD)

    def watch(self, fuse_fd: int | None) -> None:
        """Look at the FUSE connection ``fuse_fd`` (``/dev/fuse``) for requests waiting to be
        read: a request that finds none waiting and none in flight on the direct path is the
        only one, and the reader does it itself (:meth:`_now`). None: never (every direct
        request goes by native AIO)."""
        if fuse_fd is None:
            self._waiting = None
            return
        waiting = select.poll()
        waiting.register(fuse_fd, select.POLLIN)
        self._waiting = waiting

    def _hold(self, slot: _Slot, req: int, write: bool, offset: int, length: int, start: int,
              plan: tuple[Any, int, int, Any]) -> None:
        leaf, _fd, file_offset, tracked = plan
        slot.req, slot.write, slot.offset, slot.length, slot.start = (req, write, offset,
                                                                      length, start)
        slot.leaf, slot.file_offset, slot.tracked = leaf, file_offset, tracked
        self._inflight.add(slot.index)
        self.served += 1

    def _now(self, slot: _Slot, req: int, write: bool, offset: int, length: int, start: int,
             plan: tuple[Any, int, int, Any]) -> None:
        """Do the request here, the only one (:meth:`watch`), with ``pread`` or ``pwrite``
        (the interpreter lock released meanwhile), and answer it: a native-AIO write's
        completion goes through a kernel workqueue and then wakes the reaper, where a
        synchronous one wakes the reader directly (docs/export.md, "The direct path"). While it
        runs it is not in ``_inflight``: only the reader runs such requests, and the reader is
        the one that closes the direct path. If it comes back short or failed it joins
        ``_inflight`` and is finished as a native-AIO one would be."""
        _leaf, fd, file_offset, tracked = plan
        self.done_at_once += 1
        io = _pwrite if write else _pread
        res = io(fd, slot.addr, length, file_offset)
        while res < 0 and ctypes.get_errno() == errno.EINTR:
            res = io(fd, slot.addr, length, file_offset)
        if res != length:  # finished in a thread of its own, as a native-AIO one would be
            code = -ctypes.get_errno() if res < 0 else res
            self._hold(slot, req, write, offset, length, start, plan)
            self._hand_back(slot, code, None)
            return
        self.served += 1
        done = time.perf_counter_ns()
        try:
            if write:
                self._reply_write_held(req, length)
            else:
                self._reply_read_held(req, slot.addr, length)
        except BaseException as e:  # answered whatever happens
            self._fail(req, "write" if write else "read", e)
        self._free.append(slot)
        try:
            self._backend.direct_done(write, offset, length, start, tracked, done)
        except BaseException as e:  # a bug; the request was answered already
            sys.stderr.write(f"rig export: accounting a direct request: {e!r}\n")

    def _submit(self, slot: _Slot, req: int, write: bool, offset: int, length: int, start: int,
                plan: tuple[Any, int, int, Any], opcode: int) -> None:
        self._hold(slot, req, write, offset, length, start, plan)
        fd, file_offset = plan[1], plan[2]
        iocb = slot.iocb
        iocb.aio_lio_opcode = opcode
        iocb.aio_fildes = fd
        iocb.aio_nbytes = length
        iocb.aio_offset = file_offset
        try:
            self._ctx.submit(slot.one)
        except OSError as e:
            self._hand_back(slot, 0, e)

    def _hand_back(self, slot: _Slot, res: int, err: OSError | None) -> None:
        """Finish the slot's request in a thread of its own (:meth:`_finish`)."""
        t = threading.Thread(target=self._finish, args=(slot, res, err),
                             name="rig-export-aio-finish", daemon=True)
        self._finishing.add(t)
        t.start()
        self._inflight.discard(slot.index)

    # ---------------------------------------------------------------- complete
    def _reap(self) -> None:
        events = (IoEvent * SLOTS)()
        # The events as 64-bit words (data, obj, res, res2 each): an index is a plain int
        # here, where events[i].res would make a structure object per field read.
        words = memoryview(events).cast("B").cast("q")
        slots = self._slots
        answer = self._answer
        while not self._closing or self._inflight:
            try:
                n = self._ctx.reap(events, _REAP_WAIT)
            except OSError as e:
                if self._closing:
                    return  # the context was destroyed under the wait: nothing is in flight
                sys.stderr.write(f"rig export: the direct path's reaper: {e}\n")
                time.sleep(_REAP_WAIT)
                continue
            for i in range(n):
                slot = slots[words[4 * i]]
                res = words[4 * i + 2]
                # A request leaves _inflight only once answered, or once a thread that will
                # answer it is in _finishing: close() waits for both to empty.
                if res != slot.length:
                    self._hand_back(slot, res, None)
                else:
                    answer(slot)

    def _answer(self, slot: _Slot) -> None:
        """A request that transferred every byte: accounted, answered, its slot given back."""
        try:
            self._backend.direct_done(slot.write, slot.offset, slot.length, slot.start,
                                      slot.tracked)
            if slot.write:
                self._reply_write(slot.req, slot.length)
            else:
                self._reply_read(slot.req, slot.addr, slot.length)
        except BaseException as e:  # answered whatever happens
            self._fail(slot.req, "write" if slot.write else "read", e)
        self._inflight.discard(slot.index)
        self.release(slot)

    def _finish(self, slot: _Slot, res: int, err: OSError | None) -> None:
        """A short or failed transfer: the backend finishes it (and may park it), then it is
        answered."""
        self.handed_back += 1
        what = "write" if slot.write else "read"
        try:
            if err is None and res < 0:
                err = OSError(-res, f"{what}: {os.strerror(-res)}")
            view = slot.buf[:slot.length]
            self._backend.direct_failed(slot.write, slot.offset, [view], slot.start,
                                        slot.tracked, slot.leaf, slot.file_offset,
                                        max(res, 0), err)
            if slot.write:
                self._reply_write(slot.req, slot.length)
            else:
                self._reply_read(slot.req, slot.addr, slot.length)
        except BaseException as e:
            self._fail(slot.req, what, e)
        finally:
            self.release(slot)
            self._finishing.discard(threading.current_thread())

    def release(self, slot: _Slot) -> None:
        """Give a slot back."""
        slot.leaf = slot.tracked = None
        self._free.append(slot)

    # ------------------------------------------------------------------- close
    def close(self) -> bool:
        """Take no more requests, wait for those in flight to be answered, end the reaper and
        the AIO context. False if requests were still in flight after the wait (the context
        is left to the process's end then: destroying it would wait for them)."""
        self._closing = True
        deadline = time.monotonic() + _CLOSE_WAIT
        while (self._inflight or self._finishing) and time.monotonic() < deadline:
            time.sleep(0.005)
        if self._inflight or self._finishing:
            return False
        self._ctx.close()  # wakes the reaper from its wait, if the kernel does; else it times out
        self._reaper.join(timeout=2 * _REAP_WAIT)
        return True


