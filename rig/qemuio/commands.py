"""qemu-io's commands: their entries in the table (:mod:`rig.qemuio.table`: names, usage,
argument counts) and their implementations; the blkdebug ones are in :mod:`rig.qemuio.debug_cmds`.

Each command returns 0 or a negative errno; the session's exit status is 1 if any failed. Output
goes where qemu-io 7.2 sends it: results and I/O errors to stdout, usage problems to stderr.
"""

from __future__ import annotations

import errno
import os
import time

from rig.core.buffers import aligned_buffer
from rig.core.cache import CACHE_MODES
from rig.core.node import ReqFlags
from rig.qemuio import (  # noqa: F401  (their commands register in the table)
    debug_cmds,
    process_cmds,
    reopen_cmd,
)
from rig.qemuio.format import cvtstr, dump_buffer, report
from rig.qemuio.getopt import GetoptError, Parsed, getopt
from rig.qemuio.numbers import sleep_seconds, strtol, strtosz
from rig.qemuio.session import OpenOptions, Session, image_node
from rig.qemuio.table import COMMANDS, Command, command, find

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:  # concurrent.futures loads with the first aio command
    from concurrent.futures import Future
    from typing import Any

BDRV_REQUEST_MAX_BYTES = 2147483136


class CommandFailed(Exception):
    """A message was printed and the command returns ``ret``."""

    def __init__(self, ret: int = -errno.EINVAL) -> None:
        super().__init__(ret)
        self.ret = ret


# ------------------------------------------------------------------ helpers
def usage(s: Session, cmd: Command) -> int:
    s.out.write(f"{cmd.name} {cmd.args} -- {cmd.oneline}\n")
    return -errno.EINVAL


#: Sizes with a suffix seen so far ("4k", "1M" ...): scripts repeat a handful of them.
_SIZES: dict[str, int] = {}


def cvtnum(s: Session, text: str) -> int:
    """qemu-io's cvtnum (:func:`rig.qemuio.numbers.strtosz`), with its error line."""
    if len(text) <= 18 and text.isdigit() and text.isascii():  # plain decimal: the usual case
        return int(text)
    cached = _SIZES.get(text)
    if cached is not None:
        return cached
    value = strtosz(text)
    if isinstance(value, str):
        s.out.write(f"Parsing error: {value} -- {text}\n")
        raise CommandFailed()
    if len(_SIZES) < 256:
        _SIZES[text] = value
    return value


def pattern_byte(s: Session, text: str) -> int:
    """``-P``: qemu-io's parse_pattern (``strtol(text, &end, 0)``, 0..255, nothing after)."""
    value = strtol(text)
    if value is None or not 0 <= value <= 255:
        s.out.write(f"{text} is not a valid pattern byte\n")
        raise CommandFailed()
    return value


def length_arg(s: Session, text: str) -> int:
    count = cvtnum(s, text)
    if count > BDRV_REQUEST_MAX_BYTES:
        s.out.write(f"length cannot exceed {BDRV_REQUEST_MAX_BYTES}, given {text}\n")
        raise CommandFailed()
    return count


class _IoBuffer:
    """A reusable aligned buffer and what it is known to hold."""

    __slots__ = ("fill", "view")

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.fill: int | None = 0  # anonymous mmap memory starts zeroed


#: Buffers for the synchronous commands (one runs at a time; the aio commands allocate their
#: own): size -> buffer, aligned and misaligned (``-m``). Buffers up to 1 MiB are kept.
_buffers: dict[int, _IoBuffer] = {}
_misaligned_buffers: dict[int, _IoBuffer] = {}
_KEEP_MAX = 1 << 20


def _io_buf(s: Session, size: int) -> _IoBuffer:
    kept = _misaligned_buffers if s.misalign else _buffers
    b = kept.get(size)
    if b is None:
        extra = 16 if s.misalign else 0
        b = _IoBuffer(aligned_buffer(size + extra)[extra:extra + size])
        if size + extra <= _KEEP_MAX:
            kept[size] = b
    return b


def io_buffer(s: Session, size: int, fill: int) -> memoryview:
    """qemu_io_alloc: an aligned buffer filled with ``fill`` (misaligned by 16 with ``-m``).

    The buffer is reused; it is refilled only when it may hold anything else. A write request
    never changes its source buffer, so a run of writes with one pattern fills once. Whoever
    lets the buffer be changed (a read into it) calls :func:`io_buffer_changed`.
    """
    b = _io_buf(s, size)
    if b.fill != fill:
        b.view[:] = bytes([fill]) * size
        b.fill = fill
    return b.view


def read_buffer(s: Session, size: int, observed: bool) -> memoryview:
    """The buffer a read lands in. qemu-io fills it with 0xab first; that content can only show
    if the read succeeds without storing every byte, and only through -v or -P (``observed``).
    Unobserved reads (the common ``read -q OFF LEN``) skip the fill: same output, less work."""
    b = _io_buf(s, size)
    if observed and b.fill != 0xAB:
        b.view[:] = b"\xab" * size
    b.fill = None  # the read changes it
    return b.view


def io_buffer_changed(s: Session, size: int) -> None:
    b = (_misaligned_buffers if s.misalign else _buffers).get(size)
    if b is not None:
        b.fill = None


def lengths(s: Session, texts: list[str]) -> list[int]:
    out = []
    total = 0
    for text in texts:
        n = cvtnum(s, text)
        if n > BDRV_REQUEST_MAX_BYTES:
            s.out.write(f"Argument '{text}' exceeds maximum size {BDRV_REQUEST_MAX_BYTES}\n")
            raise CommandFailed()
        if total > BDRV_REQUEST_MAX_BYTES - n:
            s.out.write(f"The total number of bytes exceed the maximum size "
                        f"{BDRV_REQUEST_MAX_BYTES}\n")
            raise CommandFailed()
        total += n
        out.append(n)
    return out


def fail(s: Session, what: str, e: OSError) -> int:
    code = e.errno or errno.EIO
    s.out.write(f"{what} failed: {os.strerror(code)}\n")
    return -code


def verify(s: Session, data: memoryview, offset: int, pattern: int, start: int,
           count: int) -> bool:
    if bytes(data[start:start + count]) != bytes([pattern]) * count:
        s.out.write(f"Pattern verification failed at offset {offset + start}, {count} bytes\n")
        return False
    return True


# ----------------------------------------------------------------- commands
@command("read", "[-abCqv] [-P pattern [-s off] [-l len]] off len",
         "reads a number of bytes at a specified offset", alt="r", argmin=2, argmax=-1,
         opts="abCl:pP:qs:v")
def read_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    csv = quiet = verbose = vmstate = False
    pattern: int | None = None
    poff = 0
    plen: int | None = None
    has_s = False
    for o, a in p.opts:
        if o == "C":
            csv = True
        elif o == "q":
            quiet = True
        elif o == "v":
            verbose = True
        elif o == "P":
            pattern = pattern_byte(s, a)
        elif o == "s":
            poff = cvtnum(s, a)
            has_s = True
        elif o == "l":
            plen = cvtnum(s, a)
        elif o == "b":
            vmstate = True
        elif o == "a":
            s.out.write("vmstate is not supported by rig io\n")
            return -errno.ENOTSUP
    args = p.args
    if len(args) != 2:
        return usage(s, COMMANDS["read"])
    offset = cvtnum(s, args[0])
    count = length_arg(s, args[1])
    if pattern is None and (plen is not None or has_s):
        return usage(s, COMMANDS["read"])
    if plen is None:
        plen = count - poff
    if plen < 0 or plen + poff > count:
        s.out.write("pattern verification range exceeds end of read data\n")
        return -errno.EINVAL
    if vmstate and not sector_aligned(s, offset, count):
        return -errno.EINVAL
    buf = read_buffer(s, count, verbose or pattern is not None)
    t1 = time.perf_counter()
    try:
        if vmstate:
            vmstate_io(s, offset, buf, save=False)
        else:
            s.blk.preadv(offset, [buf])
    except OSError as e:
        return fail(s, "read", e)
    elapsed = time.perf_counter() - t1
    ret = 0
    if pattern is not None and not verify(s, buf, offset, pattern, poff, plen):
        ret = -errno.EINVAL
    if quiet:
        return ret
    if verbose:
        s.out.write(dump_buffer(buf, offset))
    s.out.write(report("read", elapsed, offset, count, count, 1, csv))
    return ret


def _quiet_read(s: Session, off_text: str, len_text: str) -> int:
    """``read -q OFF LEN``: what :func:`read_cmd` does for it, as few steps as it takes (issue
    19: a script of such lines is the 4 KiB queue-depth-1 benchmark, and with caches cooled by
    the I/O each step of the way costs microseconds)."""
    try:
        if len(off_text) <= 18 and off_text.isdigit() and off_text.isascii():
            offset = int(off_text)
        else:
            offset = cvtnum(s, off_text)
        count = length_arg(s, len_text)
    except CommandFailed as e:
        return e.ret
    buf = read_buffer(s, count, False)
    try:
        s.blk.preadv(offset, [buf])  # type: ignore[union-attr]  # run() checked it
    except OSError as e:
        return fail(s, "read", e)
    return 0


@command("readv", "[-Cqv] [-P pattern] off len [len..]",
         "reads a number of bytes at a specified offset", argmin=2, argmax=-1, opts="CP:qv")
def readv_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    csv, quiet, verbose = p.has("C"), p.has("q"), p.has("v")
    pattern = None
    for o, a in p.opts:
        if o == "P":
            pattern = pattern_byte(s, a)
    if len(p.args) < 2:
        return usage(s, COMMANDS["readv"])
    offset = cvtnum(s, p.args[0])
    sizes = lengths(s, p.args[1:])
    total = sum(sizes)
    buf = read_buffer(s, total, verbose or pattern is not None)
    iov = _split(buf, sizes)
    t1 = time.perf_counter()
    try:
        s.blk.preadv(offset, iov)
    except OSError as e:
        return fail(s, "readv", e)
    elapsed = time.perf_counter() - t1
    ret = 0
    if pattern is not None and not verify(s, buf, offset, pattern, 0, total):
        ret = -errno.EINVAL
    if quiet:
        return ret
    if verbose:
        s.out.write(dump_buffer(buf, offset))
    s.out.write(report("read", elapsed, offset, total, total, 1, csv))
    return ret


def _split(buf: memoryview, sizes: list[int]) -> list[memoryview]:
    out = []
    pos = 0
    for n in sizes:
        out.append(buf[pos:pos + n])
        pos += n
    return out


@command("write", "[-bcCfnquz] [-P pattern | -s source_file] off len",
         "writes a number of bytes at a specified offset", alt="w", argmin=2, argmax=-1,
         opts="bcCfnpP:qs:uz", writes=True)
def write_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    flags = ReqFlags.NONE
    pattern = 0xCD
    source: str | None = None
    csv = quiet = zero = has_pattern = may_unmap = no_fallback = vmstate = False
    compressed = False
    for o, a in p.opts:
        if o == "q":
            quiet = True
        elif o == "C":
            csv = True
        elif o == "z":
            zero = True
        elif o == "f":
            flags |= ReqFlags.FUA
        elif o == "u":
            flags |= ReqFlags.MAY_UNMAP
            may_unmap = True
        elif o == "n":
            flags |= ReqFlags.NO_FALLBACK
            no_fallback = True
        elif o == "P":
            pattern = pattern_byte(s, a)
            has_pattern = True
        elif o == "s":
            source = a
        elif o == "b":
            vmstate = True
        elif o == "c":
            compressed = True
    if len(p.args) != 2:
        return usage(s, COMMANDS["write"])
    if vmstate and zero:
        s.out.write("-b and -z cannot be specified at the same time\n")
        return -errno.EINVAL
    if (vmstate or compressed) and flags & ReqFlags.FUA:
        s.out.write("-f and -b or -c cannot be specified at the same time\n")
        return -errno.EINVAL
    if zero + has_pattern + (source is not None) > 1:
        s.out.write("Only one of -z, -P, and -s can be specified at the same time\n")
        return -errno.EINVAL
    if may_unmap and not zero:
        s.out.write("-u requires -z to be specified\n")
        return -errno.EINVAL
    if no_fallback and not zero:
        s.out.write("-n requires -z to be specified\n")
        return -errno.EINVAL
    offset = cvtnum(s, p.args[0])
    count = length_arg(s, p.args[1])
    if (vmstate or compressed) and not sector_aligned(s, offset, count):
        return -errno.EINVAL
    t1 = time.perf_counter()
    try:
        if zero:
            s.blk.write_zeroes(offset, count, flags)
        else:  # the data comes from -s FILE, else it is the pattern (qemu-io's write_f)
            buf = io_buffer(s, count, pattern)
            if source is not None:
                io_buffer_changed(s, count)
                _read_source(s, source, buf)
            if vmstate:
                vmstate_io(s, offset, buf, save=True)
            elif compressed:
                compressed_write(s, offset, buf)
            else:
                s.blk.pwritev(offset, [buf], flags)
    except OSError as e:
        return fail(s, "write", e)
    elapsed = time.perf_counter() - t1
    if not quiet:
        s.out.write(report("wrote", elapsed, offset, count, count, 1, csv))
    return 0


def sector_aligned(s: Session, offset: int, count: int) -> bool:
    """qemu-io's check on vmstate (and compressed) requests."""
    if offset % 512:
        s.out.write(f"{offset} is not a sector-aligned value for 'offset'\n")
        return False
    if count % 512:
        s.out.write(f"{count} is not a sector-aligned value for 'count'\n")
        return False
    return True


def vmstate_io(s: Session, pos: int, buf: memoryview, *, save: bool) -> None:
    """QEMU's blk_save_vmstate / blk_load_vmstate (``-b``): the first node down the primary
    children that keeps VM state (qcow2) does it; none: ENOTSUP. Writethrough flushes after
    a save, as QEMU."""
    assert s.blk is not None
    node: Any = s.blk.root
    while node is not None and not hasattr(node, "save_vmstate"):
        node = node.primary_child
    if node is None:
        raise OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP))
    if not node.is_inserted():
        raise OSError(errno.ENOMEDIUM, os.strerror(errno.ENOMEDIUM))
    if save:
        node.save_vmstate(pos, [buf])
        if not s.blk.write_cache:
            s.blk.root.flush()
    else:
        node.load_vmstate(pos, [buf])


def compressed_write(s: Session, offset: int, buf: memoryview) -> None:
    """QEMU's blk_pwrite_compressed (``write -c``): the first node down the primary children
    that writes compressed clusters (qcow2) does it; none: ENOTSUP."""
    assert s.blk is not None
    if offset < 0 or offset + buf.nbytes > s.blk.getlength():
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    node: Any = s.blk.root
    while node is not None and not hasattr(node, "write_compressed"):
        node = node.primary_child
    if node is None:
        raise OSError(errno.ENOTSUP, os.strerror(errno.ENOTSUP))
    node.write_compressed(offset, [buf])
    if not s.blk.write_cache:
        s.blk.root.flush()


def _read_source(s: Session, path: str, buf: memoryview) -> None:
    try:
        with open(path, "rb") as f:
            n = f.readinto(buf)
    except OSError as e:
        s.out.write(f"Failed to open file '{path}': {os.strerror(e.errno or errno.EIO)}\n")
        raise CommandFailed(-(e.errno or errno.EIO)) from None
    if n != buf.nbytes:
        s.out.write(f"Failed to read file '{path}': file is too short\n")
        raise CommandFailed()


@command("writev", "[-Cfq] [-P pattern] off len [len..]",
         "writes a number of bytes at a specified offset", argmin=2, argmax=-1, opts="CfqP:",
         writes=True)
def writev_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    flags = ReqFlags.FUA if p.has("f") else ReqFlags.NONE
    pattern = 0xCD
    for o, a in p.opts:
        if o == "P":
            pattern = pattern_byte(s, a)
    if len(p.args) < 2:
        return usage(s, COMMANDS["writev"])
    offset = cvtnum(s, p.args[0])
    sizes = lengths(s, p.args[1:])
    total = sum(sizes)
    buf = io_buffer(s, total, pattern)
    t1 = time.perf_counter()
    try:
        s.blk.pwritev(offset, _split(buf, sizes), flags)
    except OSError as e:
        return fail(s, "writev", e)
    if not p.has("q"):
        s.out.write(report("wrote", time.perf_counter() - t1, offset, total, total, 1,
                           p.has("C")))
    return 0


@command("aio_read", "[-Ciqv] [-P pattern] off len [len..]",
         "asynchronously reads a number of bytes", argmin=2, argmax=-1, opts="CP:iqv")
def aio_read_cmd(s: Session, p: Parsed) -> int:
    blk = s.blk
    assert blk is not None
    if p.has("i"):
        s.out.write("injecting invalid read request\n")
        blk.stats.account("read", 0, 0, False)
        return 0
    pattern = None
    for o, a in p.opts:
        if o == "P":
            pattern = pattern_byte(s, a)
    if len(p.args) < 2:
        return usage(s, COMMANDS["aio_read"])
    offset = cvtnum(s, p.args[0])
    sizes = lengths(s, p.args[1:])
    total = sum(sizes)
    buf = aligned_buffer(total)
    buf[:] = b"\xab" * total
    iov = _split(buf, sizes)
    t1 = time.perf_counter()
    fut: Future[None] = blk.submit(blk.preadv, offset, iov)

    def done(f: Future[None]) -> int:
        e = f.exception()
        if isinstance(e, OSError):
            s.out.write(f"readv failed: {os.strerror(e.errno or errno.EIO)}\n")
            return 0
        if e is not None:
            raise e
        if pattern is not None and bytes(buf) != bytes([pattern]) * total:
            s.out.write(f"Pattern verification failed at offset {offset}, {total} bytes\n")
        if p.has("q"):
            return 0
        if p.has("v"):
            s.out.write(dump_buffer(buf, offset))
        s.out.write(report("read", time.perf_counter() - t1, offset, total, total, 1,
                           p.has("C")))
        return 0

    s.pending.append((fut, done))
    return 0


@command("aio_write", "[-Cfiquz] [-P pattern] off len [len..]",
         "asynchronously writes a number of bytes", argmin=2, argmax=-1, opts="CfiqP:uz",
         writes=True)
def aio_write_cmd(s: Session, p: Parsed) -> int:
    blk = s.blk
    assert blk is not None
    if p.has("i"):
        s.out.write("injecting invalid write request\n")
        blk.stats.account("write", 0, 0, False)
        return 0
    flags = ReqFlags.NONE
    pattern = 0xCD
    for o, a in p.opts:
        if o == "f":
            flags |= ReqFlags.FUA
        elif o == "u":
            flags |= ReqFlags.MAY_UNMAP
        elif o == "P":
            pattern = pattern_byte(s, a)
    zero = p.has("z")
    if len(p.args) < 2:
        return usage(s, COMMANDS["aio_write"])
    if zero and p.has("P"):
        s.out.write("-z and -P cannot be specified at the same time\n")
        return -errno.EINVAL
    if flags & ReqFlags.MAY_UNMAP and not zero:
        s.out.write("-u requires -z to be specified\n")
        return -errno.EINVAL
    if zero and len(p.args) > 2:
        s.out.write("-z supports only a single length parameter\n")
        return -errno.EINVAL
    offset = cvtnum(s, p.args[0])
    sizes = lengths(s, p.args[1:])
    total = sum(sizes)
    t1 = time.perf_counter()
    if zero:
        fut: Future[None] = blk.submit(blk.write_zeroes, offset, total, flags)
    else:
        buf = aligned_buffer(total)
        buf[:] = bytes([pattern]) * total
        fut = blk.submit(blk.pwritev, offset, _split(buf, sizes), flags)

    def done(f: Future[None]) -> int:
        e = f.exception()
        if isinstance(e, OSError):
            s.out.write(f"aio_write failed: {os.strerror(e.errno or errno.EIO)}\n")
            return 0
        if e is not None:
            raise e
        if not p.has("q"):
            s.out.write(report("wrote", time.perf_counter() - t1, offset, total, total, 1,
                               p.has("C")))
        return 0

    s.pending.append((fut, done))
    return 0


@command("aio_flush", "", "completes all outstanding aio requests")
def aio_flush_cmd(s: Session, p: Parsed) -> int:
    s.reap(wait=True)
    return 0


@command("flush", "", "flush all in-core file state to disk", alt="f")
def flush_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    try:
        s.blk.flush()
    except OSError as e:  # qemu-io prints nothing; only the exit status shows it
        return -(e.errno or errno.EIO)
    return 0


@command("discard", "[-Cq] off len", "discards a number of bytes at a specified offset",
         alt="d", argmin=2, argmax=-1, opts="Cq", writes=True)
def discard_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    if len(p.args) != 2:
        return usage(s, COMMANDS["discard"])
    offset = cvtnum(s, p.args[0])
    count = length_arg(s, p.args[1])
    t1 = time.perf_counter()
    try:
        s.blk.discard(offset, count)
    except OSError as e:
        return fail(s, "discard", e)
    if not p.has("q"):
        s.out.write(report("discard", time.perf_counter() - t1, offset, count, count, 1,
                           p.has("C")))
    return 0


@command("length", "", "gets the length of the current file")
def length_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    s.out.write(cvtstr(s.blk.getlength()) + "\n")
    return 0


@command("info", "", "prints information about the current file")
def info_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    root = image_node(s.blk.root)
    s.out.write(f"format name: {root.format_name or root.driver_name}\n")
    if root.driver_name in _PROTOCOL_NAMES:  # QEMU prints a protocol's name twice
        s.out.write(f"format name: {root.driver_name}\n")
    if root.driver_name == "null-co":  # no bdrv_get_info: QEMU's info fails here, silently
        return 1
    node = root  # a filter (blkdebug) answers with what the format below it has
    while node.format_name != "qcow2" and not node.format_name and node.primary_child:
        node = node.primary_child
    header = getattr(node, "header", None) if node.format_name == "qcow2" else None
    cluster = vm_state = 0
    if header is not None:
        cluster = header.cluster_size
        unit = 1 << (2 * header.cluster_bits - 3)  # what one L2 table maps
        vm_state = -(-s.blk.getlength() // unit) * unit
    s.out.write(f"cluster size: {cvtstr(cluster)}\nvm state offset: {cvtstr(vm_state)}\n")
    if header is not None and node is root:
        s.out.write(_qcow2_specific(header))
    return 0


#: Drivers QEMU gives a protocol name besides the format name (``info`` prints both).
_PROTOCOL_NAMES = frozenset({"file", "host_device", "host_cdrom", "blkdebug", "null-co"})


def _qcow2_specific(h: Any) -> str:
    """qemu-io info's "Format specific information" of a qcow2 header (QEMU 7.2's order)."""
    lines = ["Format specific information:"]
    compression = "zlib" if h.compression_type == 0 else "zstd"
    if h.version == 2:
        lines += ["compat: 0.10", f"compression type: {compression}",
                  f"refcount bits: {1 << h.refcount_order}"]
    else:
        lines += ["compat: 1.1", f"compression type: {compression}",
                  f"lazy refcounts: {str(bool(h.compatible_features & 1)).lower()}",
                  f"refcount bits: {1 << h.refcount_order}",
                  f"corrupt: {str(bool(h.incompatible_features & 2)).lower()}",
                  f"extended l2: {str(bool(h.incompatible_features & 16)).lower()}"]
    return "\n    ".join(lines) + "\n"


def _allocated_run(s: Session, offset: int, length: int) -> tuple[bool, int]:
    assert s.blk is not None
    st = s.blk.block_status(offset, length)
    return st.allocated, max(st.length, 1)


@command("map", "", "prints the allocated areas of a file")
def map_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    size = s.blk.getlength()
    offset = 0
    while offset < size:
        alloc, n = _allocated_run(s, offset, size - offset)
        end = offset + n
        while end < size:
            a2, n2 = _allocated_run(s, end, size - end)
            if a2 != alloc:
                break
            end += n2
        n = end - offset
        s.out.write(f"{cvtstr(n)} (0x{n:x}) bytes {'    ' if alloc else 'not '}allocated at "
                    f"offset {cvtstr(offset)} (0x{offset:x})\n")
        offset = end
    return 0


@command("alloc", "offset [count]", "checks if offset is allocated in the file",
         alt="a", argmin=1, argmax=2)
def alloc_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    offset = cvtnum(s, p.args[0])
    count = cvtnum(s, p.args[1]) if len(p.args) > 1 else 512
    remaining, pos, allocated = count, offset, 0
    size = s.blk.getlength()
    try:
        while remaining > 0:
            if pos >= size:  # QEMU's block status says 0 bytes there: the count shrinks
                count -= remaining
                break
            alloc, n = _allocated_run(s, pos, min(remaining, size - pos))
            n = min(n, remaining)
            if alloc:
                allocated += n
            pos += n
            remaining -= n
    except OSError as e:
        s.out.write(f"is_allocated failed: {os.strerror(e.errno or errno.EIO)}\n")
        return -(e.errno or errno.EIO)
    s.out.write(f"{allocated}/{count} bytes allocated at offset {cvtstr(offset)}\n")
    return 0


@command("truncate", "[-m prealloc_mode] off", "truncates the current file at the given offset",
         alt="t", argmin=1, argmax=3, opts="m:", writes=True)
def truncate_cmd(s: Session, p: Parsed) -> int:
    assert s.blk is not None
    if len(p.args) != 1:
        return usage(s, COMMANDS["truncate"])
    size = cvtnum(s, p.args[0])
    try:
        s.blk.truncate(size)
    except OSError as e:  # qemu-io: error_report_err of blk_truncate's message
        s.err.write(f"{s.prog}: {e.strerror or os.strerror(e.errno or errno.EIO)}\n")
        return -(e.errno or errno.EIO)
    return 0


@command("open", "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
         "open the file specified by path", alt="o", argmin=1, argmax=-1, opts="rsCnkUt:d:o:i:",
         nofile_ok=True)
def open_cmd(s: Session, p: Parsed) -> int:
    # qemu-io's open starts from its own defaults (writethrough, no format: probed), not from
    # the command line's; only --image-opts carries over.
    opts = OpenOptions(image_opts=s.defaults.image_opts)
    extra: list[str] = []
    for o, a in p.opts:
        if o == "r":
            opts = _replace(opts, read_only=True)
        elif o == "s":
            opts = _replace(opts, snapshot=True)
        elif o == "C":
            opts = _replace(opts, copy_on_read=True)
        elif o == "k":
            opts = _replace(opts, aio="native")
        elif o == "i":
            if a not in ("threads", "native", "io_uring"):
                s.err.write(f"{s.prog}: Invalid aio option: {a}\n")
                return -errno.EINVAL
            opts = _replace(opts, aio=a)
        elif o == "n":
            opts = _replace(opts, cache="none")
        elif o == "t":
            if a not in CACHE_MODES:
                s.err.write(f"{s.prog}: Invalid cache option: {a}\n")
                return -errno.EINVAL
            opts = _replace(opts, cache=a)
        elif o == "d":
            if a not in ("ignore", "off", "unmap", "on"):
                s.err.write(f"{s.prog}: Invalid discard option: {a}\n")
                return -errno.EINVAL
            opts = _replace(opts, discard=a)
        elif o == "o":
            if opts.image_opts:
                s.out.write("--image-opts and 'open -o' are mutually exclusive\n")
                return -errno.EINVAL
            extra.append(a)
        elif o == "U":
            opts = _replace(opts, force_share=True)
    if extra:
        opts = _replace(opts, extra=tuple(extra))
    if len(p.args) > 1:
        return usage(s, COMMANDS["open"])
    return s.open(p.args[0] if p.args else None, opts)


def _replace(opts: OpenOptions, **kw: Any) -> OpenOptions:
    return opts.replace(**kw)


@command("close", "", "close the current open file", alt="c")
def close_cmd(s: Session, p: Parsed) -> int:
    s.close()
    return 0


@command("sleep", "milliseconds", "waits for the given value in milliseconds", argmin=1,
         argmax=1, nofile_ok=True)
def sleep_cmd(s: Session, p: Parsed) -> int:
    """qemu-io 7.2: ``strtol`` (a negative or partly numeric value is "not a valid number"),
    then a host-clock timer ``ms`` ahead in 64-bit nanoseconds (see :func:`sleep_seconds`)."""
    text = p.args[0]
    ms = strtol(text)
    if ms is None or ms < 0:
        s.out.write(f"{text} is not a valid number\n")
        return -errno.EINVAL
    s.sleep(sleep_seconds(ms, time.time_ns()))
    return 0


@command("help", "[command]", "help for one or all commands", alt="?", argmax=1,
         nofile_ok=True)
def help_cmd(s: Session, p: Parsed) -> int:
    if p.args:
        cmd = find(p.args[0])
        if cmd is None:
            s.out.write(f"command {p.args[0]} not found\n")
            return -errno.EINVAL
        s.out.write(_help_line(cmd))
        return 0
    for name in sorted(COMMANDS):
        s.out.write(_help_line(COMMANDS[name]))
    s.out.write("\nUse 'help commandname' for extended help.\n")
    return 0


def _help_line(cmd: Command) -> str:
    alias = f"(or {cmd.altname}) " if cmd.altname else ""
    args = f"{cmd.args} " if cmd.args else ""
    return f"{cmd.name} {alias}{args}-- {cmd.oneline}\n"


_QUIET_IS_FLAG: dict[str, bool] = {}


def _quiet_is_flag(optstring: str) -> bool:
    """Whether ``-q`` is an option without an argument in ``optstring``."""
    known = _QUIET_IS_FLAG.get(optstring)
    if known is None:
        i = optstring.find("q")
        known = _QUIET_IS_FLAG[optstring] = i >= 0 and optstring[i + 1:i + 2] != ":"
    return known


def run(s: Session, line: str) -> tuple[int, bool]:
    """Run one command line. Returns (ret, quit)."""
    words = line.split(" ")
    if "" in words:
        words = [w for w in words if w]
        if not words:
            return 0, False
    if s.pending:
        s.reap()
    name = words[0]
    if name in ("quit", "q"):
        return 0, True
    cmd = find(name)
    if (cmd is not None and cmd.func is read_cmd and len(words) == 4 and words[1] == "-q"
            and s.blk is not None and words[2][:1] != "-" and words[3][:1] != "-"):
        return _quiet_read(s, words[2], words[3]), False  # the usual script line
    if cmd is None:
        s.err.write(f'command "{name}" not found\n')
        return -errno.EINVAL, False
    if not cmd.nofile_ok and s.blk is None:
        s.err.write("no file open, try 'help open'\n")
        return -errno.EINVAL, False
    argc = len(words) - 1
    if argc < cmd.argmin or (cmd.argmax != -1 and argc > cmd.argmax):
        if cmd.argmax == -1:
            expect = f"at least {cmd.argmin} arguments"
        elif cmd.argmin == cmd.argmax:
            expect = f"{cmd.argmin} arguments"
        else:
            expect = f"between {cmd.argmin} and {cmd.argmax} arguments"
        s.err.write(f"bad argument count {argc} to {name}, expected {expect}\n")
        return -errno.EINVAL, False
    if cmd.writes and s.blk is not None and s.blk.read_only and s.blk.root.is_inserted():
        s.err.write(f"{s.prog}: Block node is read-only\n")
        return -errno.EPERM, False
    if cmd.optstring == "":
        # qemu-io's commands without options never call getopt: "sleep -1" is an argument.
        parsed = Parsed(args=words[1:])
    elif (argc == 3 and words[1] == "-q" and words[2][:1] != "-" and words[3][:1] != "-"
            and _quiet_is_flag(cmd.optstring)):
        # The usual script line, "read -q OFF LEN": what getopt returns for it, without getopt.
        parsed = Parsed([("q", "")], words[2:])
    else:
        try:
            parsed = getopt(name, words[1:], cmd.optstring)
        except GetoptError as e:
            s.err.write(f"{e}\n")
            return usage(s, cmd), False
    try:
        return cmd.func(s, parsed), False
    except CommandFailed as e:
        return e.ret, False

