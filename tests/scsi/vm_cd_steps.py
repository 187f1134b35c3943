"""Runs IN the VM lab guest for test_removable_vm.py: opens the CD drive through ``host_cdrom``
(/dev/srN) and ``sg`` (its /dev/sgN), and reports what each sees at three steps, as JSON lines
(``STEP name {...}``). Between steps it waits for the host (which ejects and changes the disc
over QMP) to create ``go-1`` / ``go-2`` in the shared directory. The sg node looks first, so the
UNIT ATTENTIONs are its to see (sr's own commands would take them otherwise)."""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from typing import Any

import rig
from rig.core.backend import BlockBackend
from rig.scsi import cdb


def _sense_of_turs(blk: BlockBackend) -> list[str]:
    """TEST UNIT READY through the sg node until GOOD (at most 4): each answer's sense."""
    out = []
    for _ in range(4):
        r = blk.root._run(cdb.test_unit_ready())  # type: ignore[attr-defined]
        s = r.outcome.sense
        if r.ok:
            out.append("good")
            break
        out.append("none" if s is None else f"{s.sense_key:x}/{s.asc:02x}/{s.ascq:02x}")
    return out


def _view(blk: BlockBackend, *, turs: bool = False) -> dict[str, Any]:
    node: Any = blk.root
    out: dict[str, Any] = {}
    if turs:
        out["turs"] = _sense_of_turs(blk)
    out["status"] = node.drive_status().name
    out["changed"] = blk.media_changed()
    out["inserted"] = blk.is_inserted()
    out["length"] = blk.refresh_length()
    if out["inserted"] and out["length"]:
        out["head"] = blk.pread(0, 2048)[:16].rstrip(b"\0").decode(errors="replace")
    return out


def _wait(path: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"no {path} from the host")
        time.sleep(0.05)


def main(share: str) -> None:
    cd = sorted(glob.glob("/dev/sr[0-9]*"))[0]
    sg = "/dev/" + os.path.basename(
        glob.glob(f"/sys/block/{os.path.basename(cd)}/device/scsi_generic/sg*")[0])
    sgb = rig.open({"driver": "sg", "filename": sg}, read_only=True)
    hcb = rig.open({"driver": "host_cdrom", "filename": cd}, read_only=True)
    for step, go in (("open", "go-1"), ("ejected", "go-2"), ("changed", None)):
        report = {"sg": _view(sgb, turs=step != "open"), "host_cdrom": _view(hcb)}
        print(f"STEP {step} {json.dumps(report)}", flush=True)
        if go is not None:
            _wait(os.path.join(share, go))
    print(f"STEP verbs {json.dumps(_verbs(sgb, hcb))}", flush=True)
    sgb.close()
    hcb.close()
    _events(cd, share)


def _events(cd: str, share: str) -> None:
    """uevents of the drive: with the kernel polling it for media events (it polls only while
    the drive is open), the host's change arrives as DISK_MEDIA_CHANGE, and wait_until_ready
    returns the new medium's size."""
    from rig.drivers.udev import BlockEvents, wait_until_ready

    with open(f"/sys/block/{os.path.basename(cd)}/events_poll_msecs", "w") as f:
        f.write("200\n")
    held = os.open(cd, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with BlockEvents([cd], source="kernel") as events:
            print("STEP armed {}", flush=True)
            event = events.wait_for(lambda e: e.media_change, timeout=120)
            size = wait_until_ready(cd, timeout=60)
            print(f"STEP back {json.dumps({'action': event.action, 'size': size})}",
                  flush=True)
    finally:
        os.close(held)


def _verbs(sgb: BlockBackend, hcb: BlockBackend) -> dict[str, Any]:
    """The drive's own verbs, from the guest: lock, eject (refused, then forced), close."""
    out: dict[str, Any] = {}
    sg: Any = sgb.root
    hc: Any = hcb.root
    out["disc_status"] = hc.disc_status()
    sg.lock_medium(True)  # PREVENT ALLOW MEDIUM REMOVAL
    out["sg_eject_locked"] = _errno_of(sg.eject)
    r = sg._run(cdb.start_stop_unit(start=False, loej=True))  # the device refuses too
    s = r.outcome.sense
    out["sg_raw_eject_locked"] = None if s is None else f"{s.sense_key:x}/{s.asc:02x}/{s.ascq:02x}"
    sg.eject(force=True)  # allow, then START STOP UNIT
    out["sg_after_eject"] = sg.drive_status().name
    sg.eject(False)
    out["sg_after_close"] = sg.drive_status().name
    hc.lock_medium(True)  # CDROM_LOCKDOOR
    out["hc_eject_locked"] = _errno_of(hc.eject)
    hc.eject(force=True)  # CDROM_LOCKDOOR 0, CDROMEJECT
    out["hc_after_eject"] = hc.drive_status().name
    hc.eject(False)  # CDROMCLOSETRAY
    out["hc_after_close"] = hc.drive_status().name
    return out


def _errno_of(fn: Any) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


if __name__ == "__main__":
    main(sys.argv[1])
