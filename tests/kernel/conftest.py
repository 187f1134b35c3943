"""Tests that need kernel test devices (scsi_debug, null_blk, dm, a SCSI disk). On a bare CI host
they skip; ``pytest --rig-vm`` runs them inside the VM lab's guest (``docs/vm-lab.md``).

``lockstep(path, block_size)`` runs the foundation's lockstep state machine over a real block
device (``host_device``, every cache mode; or the node ``spec`` given) against the RAM node, on
the first WINDOW bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import rig
from rig.core.backend import BlockBackend
from rig.testing import profiles
from rig.testing.machines import LockstepMachine
from rig.testing.strategies import cache_modes

WINDOW = 256 * 1024


def run_lockstep(path: str, block_size: int, spec: dict[str, Any] | None = None) -> set[str]:
    """``spec``: the device's node options (default: ``host_device`` on ``path``, allowed)."""
    used: set[str] = set()
    device = spec if spec is not None else {"driver": "host_device", "filename": path,
                                            "x-allow": path}

    class DeviceAndMemory(LockstepMachine):
        max_len = 3 * 4096 + 100
        io_align = block_size
        window = WINDOW

        def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
            cache = data.draw(cache_modes(), label="cache")
            used.add(cache)
            dev = rig.open(device, cache=cache)
            try:
                mem = rig.open({"driver": "memory", "size": WINDOW,
                                "logical-block-size": block_size}, cache=cache)
            except BaseException:
                dev.close()
                raise
            return [dev, mem]

    run_state_machine_as_test(DeviceAndMemory, settings=profiles.selected())
    return used


@pytest.fixture
def lockstep() -> Callable[[str, int], set[str]]:
    return run_lockstep
