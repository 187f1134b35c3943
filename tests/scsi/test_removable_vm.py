"""A CD is ejected and changed from the host over QMP while the VM lab guest watches through
``host_cdrom`` and ``sg`` (tests/scsi/vm_cd_steps.py): both see the tray open and no medium,
the sg node sees the UNIT ATTENTIONs (06/3A/00, then 06/28/00 after the change), and both read
the new medium with its new size. Then the drive's own verbs from the guest (lock, refused and
forced eject, close), and the uevent of a second change, with wait_until_ready."""

from __future__ import annotations

import errno
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rig.drivers.vm.machine import Guest, Job
from tests.vm.conftest import SMP, booted

ONE, TWO = b"RIG-CD-ONE", b"RIG-CD-TWO"
pytestmark = pytest.mark.rig_needs("vm")


def _wait_step(job: Job, step: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for line in job.output().splitlines():
            if line.startswith(f"STEP {step} "):
                report: dict[str, Any] = json.loads(line.split(" ", 2)[2])
                return report
        if job.done():
            raise AssertionError(f"the guest's script ended before {step}: {job.wait()}")
        assert time.monotonic() < deadline, f"no STEP {step}: {job.output()!r}"
        time.sleep(0.05)


def test_qmp_eject_and_change_through_host_cdrom_and_sg(tmp_path: Path) -> None:
    cd1, cd2 = tmp_path / "cd1.raw", tmp_path / "cd2.raw"
    cd1.write_bytes(ONE.ljust(2048, b"\0") * 64)
    cd2.write_bytes(TWO.ljust(2048, b"\0") * 96)
    share = tmp_path / "share"
    share.mkdir()
    guest = booted(Guest(cdrom=cd1, shares=[share], smp=SMP))
    try:
        job = guest.start([sys.executable, "tests/scsi/vm_cd_steps.py", str(share)],
                          timeout=400)
        opened = _wait_step(job, "open")
        guest.eject()
        assert guest.qmp.wait_event("DEVICE_TRAY_MOVED")["data"]["tray-open"] is True
        (share / "go-1").touch()
        ejected = _wait_step(job, "ejected")
        guest.change_medium(cd2)
        assert guest.qmp.wait_event("DEVICE_TRAY_MOVED")["data"]["tray-open"] is False
        (share / "go-2").touch()
        changed = _wait_step(job, "changed")
        verbs = _wait_step(job, "verbs")
        _wait_step(job, "armed")  # the guest's kernel now polls the drive; uevents follow
        guest.eject()
        guest.change_medium(cd1)
        back = _wait_step(job, "back")
        r = job.wait()
        assert r.status == 0, r.stderr
    finally:
        guest.close()
    for name in ("sg", "host_cdrom"):
        assert opened[name]["status"] == "DISC_OK" and opened[name]["inserted"], opened
        assert opened[name]["length"] == 64 * 2048 and opened[name]["head"] == ONE.decode()
        assert ejected[name]["status"] == "TRAY_OPEN", ejected
        assert not ejected[name]["inserted"] and ejected[name]["length"] == 0, ejected
        assert changed[name]["status"] == "DISC_OK" and changed[name]["inserted"], changed
        assert changed[name]["length"] == 96 * 2048, changed
        assert changed[name]["head"] == TWO.decode(), changed
        # a change since the node opened is reported once per change
        assert not opened[name]["changed"] and ejected[name]["changed"], (opened, ejected)
        assert changed[name]["changed"], changed
    # the sg node saw the UNIT ATTENTIONs itself: no medium at the eject, medium changed after
    assert ejected["sg"]["turs"][0] == "6/3a/00", ejected
    assert "6/28/00" in changed["sg"]["turs"], changed
    assert all(t.startswith("6/") for t in changed["sg"]["turs"][:-1]), changed
    # the drive's verbs from the guest: a locked medium stays in (the rig refuses with EBUSY,
    # and QEMU itself refuses START STOP UNIT with 05/53/02), forced ejects and closes work
    assert verbs["disc_status"] == 101, verbs  # CDS_DATA_1
    assert verbs["sg_eject_locked"] == verbs["hc_eject_locked"] == errno.EBUSY, verbs
    assert verbs["sg_raw_eject_locked"] == "5/53/02", verbs
    assert verbs["sg_after_eject"] == verbs["hc_after_eject"] == "TRAY_OPEN", verbs
    assert verbs["sg_after_close"] == verbs["hc_after_close"] == "DISC_OK", verbs
    # uevents (pyudev, the kernel's own: the guest has no udevd) and waiting for the medium
    assert back == {"action": "change", "size": 64 * 2048}, back
