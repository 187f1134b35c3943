"""Block uevents of a real SCSI disk in the VM lab (routed with ``--rig-vm``): loading
scsi_debug adds a disk (``add``), wait_until_ready sees its size, unloading removes it."""

from __future__ import annotations

import pytest

from rig.drivers.kernel import kmod
from rig.drivers.udev import BlockEvents, wait_until_ready


@pytest.mark.rig_needs("scsi_debug")
def test_scsi_debug_disk_add_ready_and_remove_events() -> None:
    with BlockEvents(source="kernel") as events:
        with kmod.scsi_debug(dev_size_mb=8) as disk:
            added = events.wait_for(lambda e: e.devname == disk and e.action == "add",
                                    timeout=60)
            assert added.diskseq is not None
            assert wait_until_ready(disk, timeout=30) == 8 << 20
        removed = events.wait_for(lambda e: e.devname == disk and e.action == "remove",
                                  timeout=60)
        assert removed.diskseq == added.diskseq
