"""The one way the rig opens a path it writes that the user named: logs, bundles, repro files,
images it creates.

A graph node that writes a device (``host_device``, a materialize target) is opened through the
host drivers, which refuse a mounted, held or not-allowed device (``rig.drivers.safety``). An
*output file* is different: ``log=/dev/loop0`` must never reach ``open(path, "w")``. So every
output path goes through :func:`open_output`, which

* refuses a block device or a character device (anything but ``/dev/null``): no output option of
  the rig takes a device, so there is nothing to allow; the one-line error says what to name
  instead. The path is checked before it is opened and the opened descriptor is checked again,
  so a symlink swapped in between changes nothing;
* refuses a directory, and replaces an existing regular file only where the option says it
  replaces (``replace=True``: a run's log); otherwise an existing file is an error;
* creates new files with mode 0644 (less the umask), truncating only after the checks.

:func:`make_output_dir` does the same for an output directory (a crash bundle, repro bundles).
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import IO, Literal, overload

from rig.errors import ConfigError, UnsafeDeviceError

#: /dev/null: a sink, not storage; an output may be thrown away there.
_NULL = (1, 3)


def _kind(mode: int) -> str | None:
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return None


def _refusal(option: str, path: str, st: os.stat_result, *, replace: bool,
             existed: bool) -> Exception | None:
    """Why ``path`` (with status ``st``) may not be written as ``option``, or None."""
    if stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == _NULL:
        return None
    kind = _kind(st.st_mode)
    if kind in ("a block device", "a character device"):
        return UnsafeDeviceError(
            f"refusing to write {option} to {path!r}: it is {kind}, and {option} must be a "
            f"regular file (the rig writes a device only as a graph node such as host_device, "
            f"which checks that it is safe)")
    if kind == "a directory":
        return ConfigError(f"{option} {path!r} is a directory; name a file")
    if existed and stat.S_ISREG(st.st_mode) and not replace:
        return ConfigError(f"{option} {path!r} already exists; remove it or name a new file")
    return None


def check_output(path: str | os.PathLike[str], option: str, *, replace: bool) -> None:
    """Raise if ``path`` may not be written as ``option`` (see the module's rules); a path that
    does not exist yet passes."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"{option} {name!r}: {e.strerror}") from None
    problem = _refusal(option, name, st, replace=replace, existed=True)
    if problem is not None:
        raise problem


def open_output_fd(path: str | os.PathLike[str], option: str, *, replace: bool) -> int:
    """A write-only descriptor on ``path``, checked; see :func:`open_output`."""
    name = os.fspath(path)
    check_output(name, option, replace=replace)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY
    if not replace:
        flags |= os.O_EXCL
    try:
        fd = os.open(name, flags, 0o644)
    except FileExistsError:
        raise ConfigError(f"{option} {name!r} already exists; remove it or name a new "
                          "file") from None
    except OSError as e:
        raise ConfigError(f"cannot create {option} {name!r}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        problem = _refusal(option, name, st, replace=replace, existed=False)
        if problem is not None:
            raise problem
        if stat.S_ISREG(st.st_mode):
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


@overload
def open_output(path: str | os.PathLike[str], option: str, *, replace: bool,
                binary: Literal[True], buffering: int = -1) -> IO[bytes]: ...


@overload
def open_output(path: str | os.PathLike[str], option: str, *, replace: bool,
                binary: Literal[False] = False, buffering: int = -1) -> IO[str]: ...


def open_output(path: str | os.PathLike[str], option: str, *, replace: bool,
                binary: bool = False, buffering: int = -1) -> IO[bytes] | IO[str]:
    """Open ``path`` for writing as the output named ``option`` (``"log="``, ``"--bundle"``),
    truncated; text (UTF-8) unless ``binary``.

    Raises :class:`~rig.errors.UnsafeDeviceError` for a device, and
    :class:`~rig.errors.ConfigError` for a directory, an existing file the option does not
    replace, or a path that cannot be created.
    """
    fd = open_output_fd(path, option, replace=replace)
    try:
        if binary:
            return open(fd, "wb", buffering=buffering)
        return open(fd, "w", encoding="utf-8", buffering=buffering)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def make_output_dir(path: str | os.PathLike[str], option: str, *,
                    must_be_empty: bool) -> str:
    """Create the output directory ``path`` (and its parents) or check the existing one: not a
    device, not a file, and empty when ``must_be_empty``. Returns the path."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        try:
            os.makedirs(name, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{option} {name!r}: cannot create the directory: "
                              f"{e.strerror}") from None
        return name
    except OSError as e:
        raise ConfigError(f"{option} {name!r}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        kind = _kind(st.st_mode)
        if kind is not None:
            raise UnsafeDeviceError(f"refusing to write {option} to {name!r}: it is {kind}, "
                                    "not a directory")
        raise ConfigError(f"{option} {name!r} is a file; name a directory")
    if must_be_empty and os.listdir(name):
        raise ConfigError(f"{option} {name!r} exists and is not empty; name a new directory")
    return name
