"""Shared test fixtures: capability checks (a missing one is a skip that says how to get it)
and real loop devices that are always removed.

The ``needs`` marker checks the plugin's capabilities (``rig.fixtures.capabilities``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: tests/plugin/ tests the rig.fixtures plugin with pytester (pytest_plugins is only allowed in
#: the top-level conftest).
pytest_plugins = ["pytester"]


#: The project's own ``needs`` names, as the plugin's capabilities (one table:
#: ``rig.fixtures.capabilities``); ``qemu_io`` is the plugin's ``qemu_utils``.
ALIASES = {"qemu_io": "qemu_utils"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*caps): capabilities the test needs")


def pytest_runtest_setup(item: pytest.Item) -> None:
    from rig.fixtures import capabilities

    names = [ALIASES.get(str(c), str(c)) for m in item.iter_markers("needs") for c in m.args]
    absent = {}
    for name in names:
        what = capabilities.missing(name)  # KeyError: a typo in a marker is an error
        if what is not None:
            absent[name] = what
    if absent:
        pytest.skip(capabilities.skip_reason(absent))


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
