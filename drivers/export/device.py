"""Export a rig graph as a real block device: a FUSE-served file with a loop device on top.

:func:`export` mounts one file (the backend's size) from a FUSE server running in a thread of this
process (libfuse3's low-level API through ctypes: one thread reads the kernel's requests,
small reads and writes the graph passes through go to the image file by native AIO, the rest to
``threads`` graph workers; ``fuse_ops``), then binds a loop device to it with the settings
that never lose a write error (``docs/export.md``): FUSE direct_io on every open, loop direct
I/O, and the loop queue's ``max_sectors_kb`` capped to FUSE's ``max_write``.

Nothing outlives the process: the loop device is autoclear (its fd dies with us), the mount uses
``auto_unmount`` (fusermount3 unmounts it when our /dev/fuse fd closes, even after SIGKILL), a
reaper (:class:`~rig.drivers.procs.DeathWatch`) kills the programs this process ran
(``RIG_OWNER``), unmounts whatever fusermount3 could not, and removes the mountpoint directory
after a SIGKILL, and :func:`sweep_stale` removes mountpoint dirs (and any mount left on them) of
dead processes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from rig.core.backend import BlockBackend
from rig.drivers.export.fuse_ops import FILE_NAME, ExportOperations, fuse_library
from rig.drivers.export.lowlevel import Session
from rig.drivers.ffi.ioctls import ioctl
from rig.drivers.loop import LoopDevice
from rig.drivers.procs import KILL_OWNED, DeathWatch, pid_alive
from rig.drivers.safety import device_usage
from rig.errors import ConfigError, RigError

#: Mountpoints are ``<tmp>/blockrig-export-<pid>-<random>``: the sweeper spots dead pids.
PREFIX = "blockrig-export-"
_DIR_RE = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")
#: FUSE max_write for libfuse3 (max_pages=256): the loop queue is capped to this.
LIBFUSE3_MAX_WRITE = 1 << 20
MOUNT_TIMEOUT = 10.0
#: Graph workers by default (``threads``: requests that go through the graph run on these, up
#: to this many at once; docs/export.md), and the most an export takes.
DEFAULT_THREADS = 8
MAX_THREADS = 64
_NEED_FUSE = ("exports need /dev/fuse, fusermount3 and libfuse3 3.12 or later "
              "(apt-get install fuse3 libfuse3-3)")


@dataclass(frozen=True)
class Export:
    """A live export: ``path`` is the block device, ``file`` the FUSE file under it."""

    path: str
    mountpoint: str
    file: str
    max_write: int
    loop: LoopDevice
    operations: ExportOperations

    def drop_cache(self) -> None:
        """Write back and drop the device's page cache (BLKFLSBUF), so the next reader sees
        what the graph holds now, not what an earlier reader left cached."""
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ioctl(fd, "BLKFLSBUF")
        finally:
            os.close(fd)

    def mountpoints(self) -> list[str]:
        """Where the device (or a partition of it) is mounted right now."""
        return device_usage(self.path).mountpoints

    def unmount(self, mountpoint: str) -> None:
        """Unmount ``mountpoint`` (a mount of this device; lazily if it is busy)."""
        done = subprocess.run(["umount", mountpoint], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=True)


def load_libfuse() -> None:
    """Check that libfuse3 loads and is 3.12 or later (told by a symbol 3.12 added, its
    multithreaded loop; the export runs the single-threaded one), or raise RigError."""
    try:
        lib = fuse_library()
        lib["fuse_session_loop_mt_312"]
    except (OSError, AttributeError) as e:
        raise RigError(f"{_NEED_FUSE}: {e}") from None


def fuse_available() -> bool:
    """True if :func:`export` can work here (root, /dev/fuse, fusermount3, libfuse3 >= 3.12)."""
    if not (os.path.exists("/dev/fuse") and shutil.which("fusermount3")):
        return False
    try:
        load_libfuse()
    except RigError:
        return False
    return True


# ------------------------------------------------------------------------------ mounts
def fuse_mounts(under: str | None = None) -> list[str]:
    """Mountpoints of FUSE mounts in this mount namespace (optionally those starting ``under``)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, mnt = fields[sep + 1], fields[4].replace("\\040", " ")
            if (fstype == "fuse" or fstype.startswith("fuse.")) and (
                under is None or mnt.startswith(under)
            ):
                found.append(mnt)
    return found


def _unmount(mountpoint: str) -> None:
    """``fusermount3 -u``; if still busy after a few tries, lazily (``-z``)."""
    for _ in range(20):
        if mountpoint not in fuse_mounts(mountpoint):
            return
        r = subprocess.run(["fusermount3", "-u", "-q", mountpoint], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.05)
    subprocess.run(["fusermount3", "-u", "-z", "-q", mountpoint], capture_output=True)


def sweep_stale(tmpdir: str | None = None) -> list[str]:
    """Unmount and remove export mountpoints left by dead processes; returns what it removed."""
    base = tmpdir or tempfile.gettempdir()
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            m = _DIR_RE.match(name)
            if not m or pid_alive(int(m.group(1))):
                continue
            path = os.path.join(base, name)
            _unmount(path)
            with contextlib.suppress(OSError):
                os.rmdir(path)
                removed.append(path)
    return removed


def _watcher_pids(mountpoint: str) -> list[int]:
    """Our ``fusermount3`` children watching ``mountpoint`` (libfuse forks one per
    auto_unmount mount and never waits for it)."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                comm_end = (stat := f.read()).rindex(")")
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        ppid = int(stat[comm_end + 2:].split()[1])
        if ppid == me and stat.find("(fusermount3)") > 0 and mountpoint.encode() in argv:
            found.append(int(name))
    return found


def _reap(pids: list[int], timeout: float = 2.0) -> None:
    """Kill the watchers once we have unmounted ourselves, and reap them.

    A watcher waits for EOF on a socket that libfuse 3.14 never closes, so without this every
    export would leave a ``fusermount3`` process (and a zombie) until this process exits.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # it ignores SIGTERM; the mount is gone already
    deadline = time.monotonic() + timeout
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.remove(pid)
        if pending:
            time.sleep(0.02)


#: What an export's :class:`DeathWatch` does when the exporting process died: kill the programs
#: the process ran (they may hold the loop device, which holds the FUSE file), then unmount. The
#: mount is looked up in the mount table, not with ``mountpoint -q`` or ``[ -d ]``: on a dead FUSE
#: mount (its server gone) every stat fails with ENOTCONN, and those would skip the unmount. The
#: unmount is retried for 5 s while busy (the loop device lets go of the FUSE file only once the
#: kernel has run its autoclear), then done lazily; then the directory is removed.
#: ``$1`` is the mountpoint, ``$2`` the same as /proc/self/mountinfo spells it.
_REAP_EXPORT = (
    KILL_OWNED + '; ' + (
        # A filesystem the dead programs left mounted on the loop device holds it, and so the
        # FUSE file: unmount it (lazily: nothing is left to write to it).
        # $W_LOOP is the export's loop device (told once attached); its backing file reads
        # "/disk" once fusermount3's own watcher has detached the dead FUSE mount.
        'n=$W_LOOP; b=$(cat "/sys/block/$n/loop/backing_file" 2>/dev/null); '
        'if [ -n "$n" ] && { [ "$b" = "$1/disk" ] || [ "$b" = /disk ]; }; then '
        'd=$(cat "/sys/block/$n/dev"); k=0; '
        'while [ $k -lt 20 ] && grep -q "^[0-9]* [0-9]* $d " /proc/self/mountinfo; do '
        'umount -l "/dev/$n" 2>/dev/null; k=$((k + 1)); done; fi; ')
    + 'e=$2; mounted() { grep -qF -- " $e " /proc/self/mountinfo; }; i=0; '
    'while [ $i -lt 25 ] && mounted; do fusermount3 -u -q "$1" 2>/dev/null && break; '
    'sleep 0.2; i=$((i + 1)); done; '
    'if mounted; then fusermount3 -u -z -q "$1" 2>/dev/null || umount -l "$1" 2>/dev/null; fi; '
    'rmdir "$1" 2>/dev/null; exit 0')


def _unmount_leftovers(device: str) -> None:
    """Unmount what a program left mounted on the exported device (lazily), saying so: it would
    keep the loop device, and so the FUSE file, from ever going away."""
    for mnt in device_usage(device).mountpoints:
        done = subprocess.run(["umount", "-l", mnt], capture_output=True, text=True)
        what = "unmounted it" if done.returncode == 0 else \
            f"could not unmount it: {done.stderr.strip()}"
        sys.stderr.write(f"rig export: {device} was still mounted at {mnt} when the export "
                         f"ended; {what}\n")


def _mountinfo_escape(path: str) -> str:
    """``path`` as /proc/self/mountinfo prints it (octal escapes for space, tab, newline, \\)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def _reaper(mountpoint: str) -> DeathWatch:
    """Cleans up after this process if it dies while serving ``mountpoint`` (SIGKILL).

    fusermount3's own auto_unmount watcher tries the unmount only once, and finds the mount
    busy when the loop device over the FUSE file has not let go of it yet.
    """
    return DeathWatch("rig-export-reaper", _REAP_EXPORT, mountpoint,
                      _mountinfo_escape(mountpoint))


# ------------------------------------------------------------------------------ timeouts
#: Where the kernel (6.14 and later) keeps its FUSE request timeouts, in seconds.
FUSE_SYSCTL = "/proc/sys/fs/fuse"
#: The kernel looks for overdue requests every 15 s (FUSE_TIMEOUT_TIMER_FREQ) and never uses
#: a timeout below that.
KERNEL_TIMER_S = 15
#: How much sooner than the kernel the export answers a request it has not finished.
KERNEL_MARGIN_S = 2.0


def kernel_request_timeout(sysctl: str = FUSE_SYSCTL) -> int:
    """The seconds after which this kernel aborts a new FUSE connection whose server has not
    answered a request (0: never). libfuse 3.14 asks for no timeout of its own, so it is
    ``default_request_timeout``, capped by ``max_request_timeout`` (which alone also sets
    one), and never below the kernel's 15 s timer."""
    def read(name: str) -> int:
        try:
            with open(os.path.join(sysctl, name)) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    timeout, cap = read("default_request_timeout"), read("max_request_timeout")
    if cap:
        timeout = min(timeout, cap) if timeout else cap
    return max(timeout, KERNEL_TIMER_S) if timeout else 0


def within_kernel_timeout(request_timeout: float, kernel_timeout: int) -> float:
    """The export's request timeout given the kernel's: when the kernel would abort the whole
    FUSE connection after ``kernel_timeout`` s (the export then dies: every later request
    fails with ENOTCONN), requests are answered ETIMEDOUT ``KERNEL_MARGIN_S`` sooner, so a
    stalled or parked request costs only itself."""
    if not kernel_timeout:
        return request_timeout
    bound = kernel_timeout - KERNEL_MARGIN_S
    return min(request_timeout, bound) if request_timeout else bound


# ------------------------------------------------------------------------------ serving
class _Server:
    """libfuse's low-level loop (:class:`~rig.drivers.export.lowlevel.Session`), single-threaded,
    in a daemon thread of this process: it reads the kernel's requests and hands them on
    (:class:`~rig.drivers.export.fuse_ops.ExportOperations`)."""

    def __init__(self, ops: ExportOperations, mountpoint: str) -> None:
        self.ops = ops
        self.mountpoint = mountpoint
        self.error: BaseException | None = None
        self.watchers: list[int] = []
        self.thread = threading.Thread(target=self._serve, name=f"rig-export {mountpoint}",
                                       daemon=True)

    def _serve(self) -> None:
        try:
            session = Session(fuse_library(), self.ops, self.mountpoint,
                              "auto_unmount,fsname=blockrig,subtype=blockrig")
            try:
                session.mount()
                self.ops.watch(session.fd())
                session.loop()
            finally:
                self.ops.close_direct()
                session.close()
        except BaseException as e:  # reported by start()/stop()
            self.error = e

    def start(self) -> None:
        self.thread.start()
        file = os.path.join(self.mountpoint, FILE_NAME)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RigError(f"the FUSE server did not mount ({self.error or 'no error'}): "
                               f"{_NEED_FUSE}")
            # The stat is a FUSE request to this very process: only once libfuse has answered
            # INIT (its loop serves), else a server that died after mounting would leave this
            # thread waiting in the kernel for good (and the process unkillable).
            if self.ops.negotiated_max_write and \
                    self.mountpoint in fuse_mounts(self.mountpoint) and os.path.exists(file):
                self.watchers = _watcher_pids(self.mountpoint)
                return
            time.sleep(0.01)
        raise RigError(f"the FUSE mount on {self.mountpoint} did not appear within "
                       f"{MOUNT_TIMEOUT:.0f} s")

    def stop(self) -> None:
        _unmount(self.mountpoint)
        self.thread.join(timeout=5)
        if not fuse_mounts(self.mountpoint):
            _reap(self.watchers)


@contextlib.contextmanager
def export(backend: BlockBackend, *, block_size: int = 512, max_write: int = 0,
           request_timeout: float = 0.0, threads: int = DEFAULT_THREADS) -> Iterator[Export]:
    """Serve ``backend`` as ``/dev/loopN`` until the block ends; always torn down in order
    (loop, then the mount, then the server thread, then the mountpoint dir).

    ``max_write`` (bytes, a multiple of 4 KiB) lowers FUSE's largest WRITE from libfuse3's 1 MiB;
    the loop queue is capped to whatever was negotiated. ``request_timeout`` (seconds, 0 for
    none) answers ETIMEDOUT for a request the graph has not finished by then (``fuse_ops``).
    ``threads`` is how many requests go through the graph at once (1 to 64 graph workers; with
    1, a request parked at a breakpoint holds up every other request that needs the graph, unless
    ``request_timeout`` is set). Reads and writes the graph passes through take the direct path
    and need no worker.
    """
    size = backend.getlength()
    if size <= 0 or size % block_size:
        raise ConfigError(f"cannot export {size} bytes: the size must be a positive multiple "
                          f"of the block size {block_size}")
    if max_write < 0 or max_write % 4096:
        raise ConfigError(f"max_write must be a multiple of 4096 bytes, got {max_write}")
    if not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"threads must be 1 to {MAX_THREADS}, got {threads}")
    if request_timeout < 0:
        raise ConfigError(f"request_timeout must be 0 (none) or a positive number of seconds, "
                          f"got {request_timeout}")
    load_libfuse()
    sweep_stale()
    request_timeout = within_kernel_timeout(request_timeout, kernel_request_timeout())
    mountpoint = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
    ops = ExportOperations(backend, max_write=max_write, request_timeout=request_timeout,
                           workers=threads)
    server = _Server(ops, mountpoint)
    cwd = os.getcwd()
    reaper = _reaper(mountpoint)
    try:
        server.start()
        # libfuse's fuse_daemonize() does chdir("/") even in the foreground, for the whole
        # process; the mount is serving by now, so that has happened: undo it.
        if os.getcwd() != cwd:
            os.chdir(cwd)
        file = os.path.join(mountpoint, FILE_NAME)
        negotiated = server.ops.negotiated_max_write or LIBFUSE3_MAX_WRITE
        loop = LoopDevice.attach(file, block_size=block_size, direct_io=True)
        reaper.tell("LOOP", os.path.basename(loop.path))
        try:
            loop.set_max_sectors_kb(max(block_size, negotiated) // 1024)
            yield Export(path=loop.path, mountpoint=mountpoint, file=file, max_write=negotiated,
                         loop=loop, operations=server.ops)
        finally:
            # A request the stop policy parked would hold up the detach for ever: fail it.
            backend.end_stops()
            _unmount_leftovers(loop.path)
            loop.detach()
    finally:
        server.stop()
        ops.stop_timed_requests()
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
        reaper.release()

