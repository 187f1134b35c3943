"""Loop devices from Python, through ioctls only (no ``losetup``).

Why this shape:

* ``LOOP_CTL_GET_FREE`` does not reserve the device it names, so parallel attachers (pytest-xdist
  workers) collide. Like util-linux, :meth:`LoopDevice.attach` retries EBUSY/EAGAIN with a fresh
  index, then checks (status ioctl and sysfs) that the device is bound to *our* file.
* Every device is configured with ``LO_FLAGS_AUTOCLEAR`` and the configuring fd stays open for the
  object's lifetime. The kernel detaches an autoclear device on its last close, so a process that
  dies, even by SIGKILL, leaves nothing bound.
* The process keeps a registry of what it created; :mod:`rig.drivers.safety` only lets the rig write
  to block devices in that registry unless the user allowed others.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import random
import re
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from rig.drivers.ffi.ioctls import (
    LO_FLAGS_AUTOCLEAR,
    LO_FLAGS_DIRECT_IO,
    LO_FLAGS_READ_ONLY,
    LO_NAME_SIZE,
    LoopConfig,
    LoopInfo64,
    ioctl,
)
from rig.errors import ConfigError, DeviceNotFoundError, RigError, StateError

LOOP_CONTROL = "/dev/loop-control"
#: udevd's control socket (rig.drivers.udev.UDEV_CONTROL): no udevd, nothing to wait for.
UDEV_CONTROL = "/run/udev/control"
#: Attempts before giving up on a free device (util-linux uses the same bound).
MAX_ATTEMPTS = 64

_BUSY = frozenset({errno.EBUSY, errno.EAGAIN})
# LOOP_CONFIGURE missing (before Linux 5.8) or refusing the request: util-linux falls back too.
_NO_CONFIGURE = frozenset({errno.EINVAL, errno.ENOTTY, errno.ENOSYS})
# The node named by GET_FREE went away (LOOP_CTL_REMOVE elsewhere) before we opened it.
_VANISHED = frozenset({errno.ENOENT, errno.ENXIO, errno.ENODEV})
_NEED_ROOT = "loop devices need root: run as root or use sudo"
_FD_LINK = re.compile(r"/proc/self/fd/\d+")


# --------------------------------------------------------------------------------------------
# Registry of devices this process created
# --------------------------------------------------------------------------------------------

_registry_lock = threading.Lock()
_owned: weakref.WeakValueDictionary[str, LoopDevice] = weakref.WeakValueDictionary()


def owned_devices() -> set[str]:
    """Paths (``/dev/loopN``) of the loop devices this process attached and still holds."""
    with _registry_lock:
        return set(_owned.keys())


def owned_device_numbers() -> set[tuple[int, int]]:
    """``(major, minor)`` of the loop devices this process attached and still holds."""
    with _registry_lock:
        return {dev.device_number for dev in _owned.values()}


def _register(dev: LoopDevice) -> None:
    with _registry_lock:
        _owned[dev.path] = dev


def _unregister(dev: LoopDevice) -> None:
    with _registry_lock:
        if _owned.get(dev.path) is dev:
            del _owned[dev.path]


@atexit.register
def _detach_all() -> None:
    """Detach whatever the process still holds at interpreter exit (closing alone would do it,
    since every device is autoclear; LOOP_CLR_FD first makes the detach immediate)."""
    with _registry_lock:
        devices = list(_owned.values())
    for dev in devices:
        with contextlib.suppress(Exception):
            dev.detach()


def _forget_after_fork() -> None:
    """In a forked child, drop the parent's devices: the inherited fds would otherwise keep them
    bound after the parent detaches, and the child must never LOOP_CLR_FD them."""
    global _registry_lock
    _registry_lock = threading.Lock()
    for dev in list(_owned.values()):
        dev._abandon()
    _owned.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


# --------------------------------------------------------------------------------------------
# sysfs
# --------------------------------------------------------------------------------------------


def _read_sysfs(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def loops_for_backing_file(backing_file: str) -> list[str]:
    """Paths of all loop devices currently bound to ``backing_file`` (like ``losetup -j``)."""
    want = os.path.realpath(backing_file)
    found = []
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return []
    for name in sorted(names):
        if not name.startswith("loop"):
            continue
        bound = _read_sysfs(f"/sys/block/{name}/loop/backing_file")
        if bound is not None and bound.removesuffix(" (deleted)") == want:
            found.append(f"/dev/{name}")
    return found


# --------------------------------------------------------------------------------------------
# Attaching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """What the caller asked for, in the form the ioctls want."""

    path: str
    block_size: int
    read_only: bool
    direct_io: bool
    offset: int
    size_limit: int
    source: str = ""
    """What to open, when not ``path``: ``/proc/self/fd/N`` of an unlinked file."""

    def flags(self) -> int:
        flags = LO_FLAGS_AUTOCLEAR
        if self.read_only:
            flags |= LO_FLAGS_READ_ONLY
        if self.direct_io:
            flags |= LO_FLAGS_DIRECT_IO
        return flags

    def fill_info(self, info: LoopInfo64, flags: int) -> None:
        info.lo_offset = self.offset
        info.lo_sizelimit = self.size_limit
        info.lo_flags = flags
        info.lo_file_name = os.fsencode(self.path)[: LO_NAME_SIZE - 1]


def _backing_names(backing_file: str) -> tuple[str, str]:
    """The name the kernel will give ``backing_file`` (sysfs ``loop/backing_file``), and what to
    open instead of it if not that name (else ``""``). For ``/proc/self/fd/N`` (an open file,
    perhaps unlinked: a scratch file) the name is that fd's, as the kernel prints it less
    `` (deleted)``, and the link is what opens it."""
    if _FD_LINK.fullmatch(backing_file):
        with contextlib.suppress(OSError):
            return os.readlink(backing_file).removesuffix(" (deleted)"), backing_file
    return os.path.realpath(backing_file), ""


class _Raced(Exception):
    """The device we configured is not bound to our file any more: try another one."""


def _validate(spec: _Spec) -> None:
    bs = spec.block_size
    if bs < 512 or bs & (bs - 1):
        raise ConfigError(f"block_size must be a power of two >= 512, got {bs}")
    if spec.offset < 0 or spec.size_limit < 0:
        raise ConfigError("offset and size_limit must be >= 0")


def _open_control() -> int:
    try:
        return os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DeviceNotFoundError(
            f"{LOOP_CONTROL} is missing: the loop driver is not available "
            "(run 'modprobe loop', or give the container /dev/loop-control)"
        ) from None
    except PermissionError:
        raise RigError(f"{_NEED_ROOT} (cannot open {LOOP_CONTROL})") from None


def _open_backing(spec: _Spec) -> int:
    mode = os.O_RDONLY if spec.read_only else os.O_RDWR
    try:
        return os.open(spec.source or spec.path, mode | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DeviceNotFoundError(f"backing file {spec.path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"backing file {spec.path} is a directory") from None
    except PermissionError:
        raise RigError(f"no permission to open backing file {spec.path}") from None
    except OSError as e:
        if e.errno == errno.EROFS:
            raise ConfigError(
                f"backing file {spec.path} is on a read-only filesystem "
                "(attach with read_only=True)"
            ) from None
        raise


def _dio_refused(spec: _Spec) -> RigError:
    return RigError(
        f"the kernel refused direct I/O for a loop device on {spec.path}: its filesystem lacks "
        f"O_DIRECT (e.g. ramfs) or needs a logical block size above {spec.block_size} or an "
        "aligned offset (use another directory, a larger block_size, or direct_io=False)"
    )


def _configure(fd: int, backing_fd: int, spec: _Spec) -> None:
    """LOOP_CONFIGURE: bind, set flags, block size and offset in one atomic step (Linux >= 5.8)."""
    cfg = LoopConfig()
    cfg.fd = backing_fd
    cfg.block_size = spec.block_size
    spec.fill_info(cfg.info, spec.flags())
    ioctl(fd, "LOOP_CONFIGURE", cfg)


def _legacy_setup(fd: int, backing_fd: int, spec: _Spec) -> None:
    """LOOP_SET_FD and friends, for kernels without LOOP_CONFIGURE.

    SET_STATUS64 ignores READ_ONLY and DIRECT_IO: read-only follows the fd modes, and direct I/O
    has its own ioctl. Unlike LOOP_CONFIGURE this is not atomic, so a failure after SET_FD
    unbinds the device again.
    """
    ioctl(fd, "LOOP_SET_FD", backing_fd)
    try:
        info = LoopInfo64()
        spec.fill_info(info, LO_FLAGS_AUTOCLEAR)
        ioctl(fd, "LOOP_SET_STATUS64", info)
        try:
            ioctl(fd, "LOOP_SET_BLOCK_SIZE", spec.block_size)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            raise ConfigError(f"the kernel rejected loop block_size {spec.block_size}") from None
        if spec.direct_io:
            try:
                ioctl(fd, "LOOP_SET_DIRECT_IO", 1)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                raise _dio_refused(spec) from None
    except BaseException:
        with contextlib.suppress(OSError):
            ioctl(fd, "LOOP_CLR_FD")
        raise


def _verify(fd: int, index: int, backing_fd: int, spec: _Spec) -> None:
    """Check that loop ``index`` is bound to our file with what we asked for.

    Raises :class:`_Raced` if another process owns the binding, RigError if the kernel quietly
    did something else than asked (block size, direct I/O, read-only).
    """
    info = LoopInfo64()
    try:
        ioctl(fd, "LOOP_GET_STATUS64", info)
    except OSError as e:
        if e.errno == errno.ENXIO:  # unbound again
            raise _Raced from None
        raise
    st = os.fstat(backing_fd)
    if info.lo_inode != st.st_ino or info.lo_device != st.st_dev:
        raise _Raced
    sysdir = f"/sys/block/loop{index}"
    bound = _read_sysfs(f"{sysdir}/loop/backing_file")
    if bound is None:
        raise _Raced
    bound = bound.removesuffix(" (deleted)")
    if bound != spec.path:
        # d_path may spell the file differently (bind mounts): accept the same inode.
        try:
            other = os.stat(bound)
        except OSError:
            raise _Raced from None
        if (other.st_dev, other.st_ino) != (st.st_dev, st.st_ino):
            raise _Raced
    lbs = _read_sysfs(f"{sysdir}/queue/logical_block_size")
    if lbs is not None and int(lbs) != spec.block_size:
        raise RigError(f"loop{index} came up with logical block size {lbs}, not {spec.block_size}")
    if spec.direct_io and _read_sysfs(f"{sysdir}/loop/dio") != "1":
        raise _dio_refused(spec)
    if spec.read_only and _read_sysfs(f"{sysdir}/ro") != "1":
        raise RigError(f"loop{index} is not read-only although read_only=True was asked")


def _backoff(attempt: int) -> None:
    """Randomized sleep between retries so colliding workers spread out (util-linux: 200 ms)."""
    time.sleep(random.uniform(0.001, 0.004) * min(attempt, 10))


def _bind(ctl: int, backing_fd: int, spec: _Spec) -> tuple[int, int, int]:
    """Find a free loop device and bind it. Returns ``(device fd, index, attempts)``."""
    use_configure = True
    missing_nodes = 0
    open_mode = (os.O_RDONLY if spec.read_only else os.O_RDWR) | os.O_CLOEXEC
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            index = ioctl(ctl, "LOOP_CTL_GET_FREE")
        except OSError as e:
            raise RigError(f"no free loop device and cannot create one ({e.strerror})") from None
        try:
            fd = os.open(f"/dev/loop{index}", open_mode)
        except PermissionError:
            raise RigError(f"{_NEED_ROOT} (cannot open /dev/loop{index})") from None
        except OSError as e:
            if e.errno not in _VANISHED:
                raise
            missing_nodes += e.errno == errno.ENOENT
            if missing_nodes >= 3 and os.path.exists(f"/sys/block/loop{index}"):
                raise DeviceNotFoundError(
                    f"/dev/loop{index} is missing although the kernel created it (no devtmpfs "
                    f"on /dev?): create it with 'mknod /dev/loop{index} b 7 {index}'"
                ) from None
            _backoff(attempt)
            continue
        try:
            if use_configure:
                try:
                    _configure(fd, backing_fd, spec)
                except OSError as e:
                    if e.errno not in _NO_CONFIGURE:
                        raise
                    use_configure = False
                    _legacy_setup(fd, backing_fd, spec)
            else:
                _legacy_setup(fd, backing_fd, spec)
        except OSError as e:
            os.close(fd)
            if e.errno in _BUSY:
                _backoff(attempt)
                continue
            if e.errno == errno.EPERM:
                raise RigError(f"{_NEED_ROOT} (binding /dev/loop{index} was refused)") from None
            raise
        except BaseException:
            os.close(fd)
            raise
        try:
            _verify(fd, index, backing_fd, spec)
        except _Raced:
            os.close(fd)  # the binding is someone else's now: never LOOP_CLR_FD it
            _backoff(attempt)
            continue
        except BaseException:
            with contextlib.suppress(OSError):
                ioctl(fd, "LOOP_CLR_FD")
            os.close(fd)
            raise
        return fd, index, attempt
    raise RigError(
        f"no loop device could be bound after {MAX_ATTEMPTS} attempts: other processes kept "
        "taking the free ones (too many parallel attachers?)"
    )


# --------------------------------------------------------------------------------------------
# The device object
# --------------------------------------------------------------------------------------------


class LoopDevice:
    """A loop device bound by this process, detached on :meth:`detach`, context exit, garbage
    collection, interpreter exit, or (because it is autoclear) when the process dies."""

    path: str
    index: int
    backing_file: str
    block_size: int
    read_only: bool
    direct_io: bool
    offset: int
    size_limit: int
    attempts: int
    """How many free devices were tried before one bound (> 1 means another process raced)."""
    device_number: tuple[int, int]

    def __init__(self, fd: int, index: int, spec: _Spec, attempts: int) -> None:
        """Internal: use :meth:`attach` or :func:`scratch_loop`."""
        self._fd = fd
        self._fd_lock = threading.Lock()
        self._owner_pid = os.getpid()
        self.index = index
        self.path = f"/dev/loop{index}"
        self.backing_file = spec.path
        self.block_size = spec.block_size
        self.read_only = spec.read_only
        self.direct_io = spec.direct_io
        self.offset = spec.offset
        self.size_limit = spec.size_limit
        self.attempts = attempts
        rdev = os.fstat(fd).st_rdev
        self.device_number = (os.major(rdev), os.minor(rdev))
        _register(self)

    @classmethod
    def attach(
        cls,
        backing_file: str,
        *,
        block_size: int = 512,
        read_only: bool = False,
        direct_io: bool = False,
        offset: int = 0,
        size_limit: int = 0,
    ) -> LoopDevice:
        """Bind a free loop device to ``backing_file`` (autoclear, retrying races).

        ``offset``/``size_limit`` select a byte window of the file (0: to the end).
        Raises DeviceNotFoundError/RigError (with the fix) when loop devices are unavailable,
        ConfigError for bad arguments, RigError if direct I/O was asked and the kernel refused.
        """
        path, source = _backing_names(backing_file)
        spec = _Spec(
            path=path,
            block_size=block_size,
            read_only=read_only,
            direct_io=direct_io,
            offset=offset,
            size_limit=size_limit,
            source=source,
        )
        _validate(spec)
        backing_fd = _open_backing(spec)
        try:
            ctl = _open_control()
            try:
                fd, index, attempts = _bind(ctl, backing_fd, spec)
            finally:
                os.close(ctl)
        finally:
            os.close(backing_fd)
        device = cls(fd, index, spec, attempts)
        settle_after_change(device.path)
        return device

    # -- lifetime ------------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """True until :meth:`detach` (or a fork, in the child)."""
        return self._fd >= 0

    def fileno(self) -> int:
        """The fd that holds the device (opened read-write unless read_only, without O_DIRECT)."""
        self._require_attached()
        return self._fd

    def detach(self) -> None:
        """Unbind the device. Idempotent. If another process still has it open, the kernel
        finishes the detach when that process closes it (autoclear)."""
        with self._fd_lock:
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        _unregister(self)
        self._release(fd)

    def _release(self, fd: int) -> None:
        try:
            if self._owner_pid == os.getpid():
                try:
                    ioctl(fd, "LOOP_CLR_FD")
                except OSError as e:
                    if e.errno != errno.ENXIO:
                        raise
        finally:
            os.close(fd)

    def _abandon(self) -> None:
        """Forked child: close the inherited fd without touching the binding."""
        self._fd_lock = threading.Lock()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> LoopDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def __del__(self) -> None:
        # No locks here: a finalizer can run inside any locked region of this thread. The
        # registry entry is a weak reference and disappears with the object.
        with contextlib.suppress(Exception):
            fd, self._fd = self._fd, -1
            if fd >= 0:
                self._release(fd)

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return (
            f"<LoopDevice {self.path} {state} backing={self.backing_file!r} "
            f"bs={self.block_size} ro={self.read_only} dio={self.direct_io}>"
        )

    # -- sysfs ---------------------------------------------------------------------------------

    @property
    def sysfs_dir(self) -> str:
        return f"/sys/block/loop{self.index}"

    def _require_attached(self) -> None:
        if self._fd < 0:
            raise StateError(f"{self.path} is detached")

    def _sysfs(self, rel: str) -> str:
        self._require_attached()
        value = _read_sysfs(f"{self.sysfs_dir}/{rel}")
        if value is None:
            raise RigError(f"cannot read {self.sysfs_dir}/{rel}")
        return value

    @property
    def dio(self) -> bool:
        """Whether the kernel is doing direct I/O to the backing file right now (sysfs loop/dio)."""
        return self._sysfs("loop/dio") == "1"

    @property
    def size(self) -> int:
        """Device size in bytes (sysfs size, in 512-byte sectors)."""
        return int(self._sysfs("size")) * 512

    @property
    def max_sectors_kb(self) -> int:
        return int(self._sysfs("queue/max_sectors_kb"))

    def set_max_sectors_kb(self, n: int) -> int:
        """Cap the largest request the block layer sends this device (sysfs max_sectors_kb).

        A FUSE backing file needs this <= FUSE max_write, or a partly failed write can be
        reported as success (see the host kernel facts, trap 1). Returns the value in effect:
        recent kernels clamp values above max_hw_sectors_kb instead of refusing them.
        """
        if n <= 0:
            raise ConfigError(f"max_sectors_kb must be positive, got {n}")
        self._require_attached()
        attr = f"{self.sysfs_dir}/queue/max_sectors_kb"
        try:
            with open(attr, "w") as f:
                f.write(f"{n}\n")
        except OSError as e:
            hw = _read_sysfs(f"{self.sysfs_dir}/queue/max_hw_sectors_kb")
            raise ConfigError(
                f"the kernel rejected max_sectors_kb={n} for {self.path} ({e.strerror}; "
                f"allowed: page size / 1024 up to max_hw_sectors_kb={hw})"
            ) from None
        return self.max_sectors_kb


# --------------------------------------------------------------------------------------------
# Scratch devices
# --------------------------------------------------------------------------------------------


def supports_odirect(directory: str) -> bool:
    """Whether files in ``directory`` can be opened with O_DIRECT (tmpfs, for one, cannot)."""
    fd, probe = tempfile.mkstemp(prefix=".rig-odirect-", dir=directory)
    os.close(fd)
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_DIRECT))
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


def _scratch_dir(directory: str | None, direct_io: bool) -> str:
    """Where scratch backing files go: ``directory`` if given, else /var/tmp (usually a disk, so
    O_DIRECT works), else the temp dir. With ``direct_io`` the filesystem must take O_DIRECT.
    ``RIG_SCRATCH_DIR`` in the environment stands in for ``directory``."""
    directory = directory or os.environ.get("RIG_SCRATCH_DIR") or None
    if directory is not None:
        if not os.path.isdir(directory):
            raise ConfigError(f"scratch directory {directory} does not exist")
        if direct_io and not supports_odirect(directory):
            raise ConfigError(
                f"scratch directory {directory} is on a filesystem without O_DIRECT: "
                "pick another dir or direct_io=False"
            )
        return directory
    for candidate in ("/var/tmp", tempfile.gettempdir()):
        if not (os.path.isdir(candidate) and os.access(candidate, os.W_OK)):
            continue
        if direct_io and not supports_odirect(candidate):
            continue
        return candidate
    raise ConfigError("no writable scratch directory supporting O_DIRECT (pass dir=...)")


def settle_after_change(path: str | os.PathLike[str]) -> None:
    """The kernel has just sent events for ``path`` (bound, medium swapped): wait until udev
    (where one runs) has handled them, so what is read next (by-id links, the udev database) is
    the device as it is now and no udev probe still holds it. Returns at once without a udevd.
    """
    if not os.path.exists(UDEV_CONTROL):
        return
    from rig.drivers.udev import settle

    settle(str(path), sent=True)


@contextlib.contextmanager
def scratch_loop(
    size: int,
    *,
    block_size: int = 512,
    direct_io: bool = False,
    read_only: bool = False,
    dir: str | None = None,
    unlinked: bool = False,
) -> Iterator[LoopDevice]:
    """A loop device over a new sparse zero-filled file of ``size`` bytes.

    The device is detached and the file removed on exit, also on exceptions. With
    ``unlinked`` the file never has a name (``O_TMPFILE``, or unlinked at once): the loop
    device holds it open, and the kernel frees it when the device is detached, even when this
    process is SIGKILLed (``rig io --loop``); ``backing_file`` is then the name the kernel
    prints for it (``/var/tmp/#12345``), which does not exist.
    """
    if size <= 0 or size % block_size:
        raise ConfigError(f"scratch size {size} must be a positive multiple of {block_size}")
    directory = _scratch_dir(dir, direct_io)
    if unlinked:
        from rig.core.tmpfile import unlinked_file

        fd, path = unlinked_file(directory, "rig-scratch-"), ""
    else:
        fd, path = tempfile.mkstemp(prefix="rig-scratch-", suffix=".img", dir=directory)
    try:
        try:
            os.ftruncate(fd, size)
        except OSError as e:
            os.close(fd)
            raise RigError(
                f"cannot size scratch file {path or 'in ' + directory} to {size} bytes: "
                f"{e.strerror}"
            ) from None
        try:
            dev = LoopDevice.attach(path or f"/proc/self/fd/{fd}", block_size=block_size,
                                    read_only=read_only, direct_io=direct_io)
        finally:
            os.close(fd)  # the device holds the file now
        with dev:
            yield dev
    finally:
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

