"""Shared test fixtures: capability checks (a missing one is a skip that says how to get it)
and real loop devices that are always removed.

The user-facing pytest plugin (``rig.fixtures``) is its own issue; these are the project's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: tests/plugin/ tests the rig.fixtures plugin with pytester (pytest_plugins is only allowed in
#: the top-level conftest).
pytest_plugins = ["pytester"]


def _vm_ok() -> bool:
    from rig.drivers.vm.kernel import find_kernel

    return shutil.which("qemu-system-x86_64") is not None and find_kernel() is not None \
        and os.path.isfile("/bin/busybox")


def _fuse_ok() -> bool:
    from rig.drivers.export import fuse_available

    return fuse_available()


CAPABILITIES: dict[str, tuple[Callable[[], bool], str]] = {
    "root": (lambda: os.geteuid() == 0, "needs root (run the tests as root, e.g. with sudo)"),
    "loop": (
        lambda: os.geteuid() == 0 and os.path.exists("/dev/loop-control"),
        "needs loop devices: root and /dev/loop-control (modprobe loop)",
    ),
    "qemu_io": (
        lambda: shutil.which("qemu-io") is not None,
        "needs qemu-io to compare against (apt-get install qemu-utils)",
    ),
    "fuse": (
        lambda: os.geteuid() == 0 and _fuse_ok(),
        "needs root, /dev/fuse, fusermount3 and libfuse3 with mfusepy "
        "(apt-get install fuse3 libfuse3-3; pip install -e '.[dev]' or mfusepy)",
    ),
    "fio": (lambda: shutil.which("fio") is not None, "needs fio (apt-get install fio)"),
    "vm": (
        _vm_ok,
        "needs qemu-system-x86_64, busybox-static and the guest kernel cache (bash ci/vm-setup.sh)",
    ),
    "mkfs": (
        lambda: os.geteuid() == 0 and shutil.which("mkfs.ext4") is not None,
        "needs root and mkfs.ext4 (apt-get install e2fsprogs) to mount a file system",
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*caps): capabilities the test needs")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs"):
        for cap in marker.args:
            check, reason = CAPABILITIES[cap]
            if not check():
                pytest.skip(reason)


@pytest.fixture
def loop_device() -> Iterator[Callable[..., Any]]:
    """A factory for scratch loop devices: ``loop_device(size, block_size=512, direct_io=False)``.

    Every device it made is detached (and its backing file removed) when the test ends.
    """
    from rig.drivers.loop import scratch_loop

    with contextlib.ExitStack() as stack:

        def make(size: int = 16 << 20, **kw: Any) -> Any:
            return stack.enter_context(scratch_loop(size, **kw))

        yield make


@pytest.fixture
def raw_image(tmp_path: Path) -> Callable[..., Path]:
    """A factory for sparse raw image files."""

    def make(size: int = 4 << 20, name: str = "disk.img") -> Path:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(size)
        return path

    return make


@pytest.fixture(autouse=True, scope="session")
def _repro_bundles_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Repro bundles of the machines these tests break on purpose go to a temp dir, not into
    the checkout (``rig.testing.bundle`` writes to ``$RIG_REPRO_DIR``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RIG_REPRO_DIR", str(tmp_path_factory.mktemp("repro")))
    yield
    patch.undo()
