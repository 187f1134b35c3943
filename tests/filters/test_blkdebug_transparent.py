"""A blkdebug node with no rules (or rules that never arm) changes nothing: the same generated
workloads through bare nodes and through blkdebug read back the same bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import rig
from rig.core.backend import BlockBackend
from rig.testing import profiles
from rig.testing.machines import LockstepMachine

SIZE = 128 * 1024


def test_blkdebug_without_firing_rules_is_transparent(tmp_path: Path) -> None:
    image = tmp_path / "d.img"
    image.write_bytes(bytes(SIZE))

    class Transparent(LockstepMachine):
        max_len = 2 * 4096 + 300

        def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
            mem = {"driver": "memory", "size": SIZE}
            return [
                rig.open(mem),
                rig.open({"driver": "raw", "file": {"driver": "blkdebug", "image": mem}}),
                rig.open({"driver": "raw", "file": {
                    "driver": "blkdebug", "align": 4096,
                    "inject-error": [{"event": "cow_read", "errno": 5}],  # never emitted
                    "image": {"driver": "file", "filename": str(image)}}}),
            ]

    run_state_machine_as_test(Transparent, settings=profiles.selected())
