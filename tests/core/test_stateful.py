"""Three backends in lockstep with the DiskModel: a sparse file (``file``), a real loop device
(``host_device``) and the RAM node (``memory``).

Parametrized over the loop device's logical block size (512, 4096) and its direct I/O; each
example draws the rig cache mode, so ``none``/``directsync`` (O_DIRECT) make the chokepoint do
read-modify-write for unaligned requests on 4096-byte devices while the file and memory nodes
take the same requests at their own alignment. Reads must agree across all three and with the
model; teardown compares whole devices.

One loop device per parametrization (module scope); examples reopen the backends and zero them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import rig
from rig.core.backend import BlockBackend
from rig.core.cache import CACHE_MODES
from rig.drivers.loop import scratch_loop, supports_odirect
from rig.testing import profiles
from rig.testing.machines import LockstepMachine
from rig.testing.strategies import cache_modes

SIZE = 256 * 1024

#: Root and /dev/loop-control, else a skip that says so (tests/conftest.py).
pytestmark = pytest.mark.rig_needs("loop")


@pytest.fixture(scope="module", params=[(512, False), (512, True), (4096, False), (4096, True)],
                ids=lambda p: f"lbs{p[0]}-loopdio{'on' if p[1] else 'off'}")
def loop(request: pytest.FixtureRequest) -> Iterator[Any]:
    lbs, dio = request.param
    with scratch_loop(SIZE, block_size=lbs, direct_io=dio) as dev:
        yield dev


def test_file_loop_and_memory_agree(loop: Any, tmp_path: Path) -> None:
    lbs: int = loop.block_size
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    modes = cache_modes(direct=None if supports_odirect(str(tmp_path)) else False)
    used: set[str] = set()

    class FileLoopMemory(LockstepMachine):
        max_len = 3 * 4096 + 100
        io_align = lbs  # the O_DIRECT file probes 512 or 4096 depending on holes

        def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
            cache = data.draw(modes, label="cache")
            used.add(cache)
            out = [rig.open({"driver": "file", "filename": str(image)}, cache=cache)]
            try:
                out.append(rig.open({"driver": "host_device", "filename": loop.path},
                                    cache=cache))
                out.append(rig.open({"driver": "memory", "size": SIZE,
                                     "logical-block-size": lbs}, cache=cache))
            except BaseException:
                for blk in out:
                    blk.close()
                raise
            if CACHE_MODES[cache].direct:
                assert out[1].limits.request_alignment == lbs
            return out

    run_state_machine_as_test(FileLoopMemory, settings=profiles.selected())
    assert used, "no example ran"
