"""The VM lab's Guest on real boots: commands and their status, the shared tree and Python,
the devices (virtio-scsi disk, scsi_debug 4096, null_blk, dm-flakey, a CD-ROM changed over QMP
while the guest watches), and shares."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from rig.drivers.vm.machine import Guest, Job
from tests.vm.conftest import CD_TWO, DISK_SIZE, SCSI_DEBUG_MB, SMP

pytestmark = pytest.mark.rig_needs("vm")
REPO = Path(__file__).resolve().parents[2]


def test_output_streams_and_status_come_back(lab: Guest) -> None:
    r = lab.run("echo to-stdout; echo to-stderr >&2; exit 3", timeout=120)
    assert (r.status, r.stdout, r.stderr, r.message) == (3, "to-stdout\n", "to-stderr\n", "")


def test_argv_is_passed_verbatim(lab: Guest) -> None:
    r = lab.run(["sh", "-c", 'printf "%s|" "$@"', "sh", "a b", "$HOME", "*"], timeout=120)
    assert (r.status, r.stdout) == (0, "a b|$HOME|*|")


def test_guest_runs_the_hosts_python_on_the_project(lab: Guest) -> None:
    code = "import os, rig, sys; print(rig.__file__); print(os.getcwd()); print(sys.version)"
    r = lab.run([sys.executable, "-c", code], cwd=str(REPO), timeout=180)
    assert r.status == 0, r.stderr
    assert r.stdout.splitlines() == [str(REPO / "rig" / "__init__.py"), str(REPO), sys.version]


def test_disk_is_a_scsi_disk_of_its_size(lab: Guest) -> None:
    disk = lab.guest_env()["RIG_VM_DISKS"]
    assert disk.startswith("/dev/sd"), lab.guest_env()
    name = disk.removeprefix("/dev/")
    r = lab.run(f"cat /sys/block/{name}/size /sys/block/{name}/queue/logical_block_size "
                f"/sys/block/{name}/device/vendor; ls /sys/block/{name}/device/scsi_generic",
                timeout=120)
    assert r.status == 0, r.stderr
    sectors, lbs, vendor, sg = r.stdout.split()
    assert (int(sectors) * 512, int(lbs), vendor) == (DISK_SIZE, 512, "QEMU")
    assert sg.startswith("sg")


def test_scsi_debug_with_4096_byte_sectors(lab: Guest) -> None:
    dev = lab.guest_env()["RIG_VM_SCSI_DEBUG"]
    assert dev.startswith("/dev/sd"), lab.guest_env()
    r = lab.run(["blockdev", "--getss", "--getsize64", dev], timeout=120)
    assert r.status == 0, r.stderr
    assert [int(x) for x in r.stdout.split()] == [4096, SCSI_DEBUG_MB << 20]


def test_null_blk_and_dm_flakey(lab: Guest) -> None:
    disk = lab.guest_env()["RIG_VM_DISKS"]
    r = lab.run(
        f"test -b /dev/nullb0 || exit 10\n"
        f"dmsetup create rigflakey --table \"0 $(blockdev --getsz {disk}) flakey {disk} 0 5 0\""
        " || exit 11\n"
        "test -b /dev/mapper/rigflakey || exit 12\n"
        "dmsetup table rigflakey\n"
        "dmsetup remove rigflakey",
        timeout=120,
    )
    assert r.status == 0, (r.stdout, r.stderr)
    assert " flakey " in r.stdout


_WATCH_TRAY = """
import fcntl, os, sys, time
CDROM_DRIVE_STATUS, CDSL_CURRENT = 0x5326, 0x7FFFFFFF
NAMES = {0: "NO_INFO", 1: "NO_DISC", 2: "TRAY_OPEN", 3: "NOT_READY", 4: "DISC_OK"}
fd = os.open("/dev/sr0", os.O_RDONLY | os.O_NONBLOCK)
seen = []
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    status = NAMES.get(fcntl.ioctl(fd, CDROM_DRIVE_STATUS, CDSL_CURRENT), "?")
    if not seen or seen[-1] != status:
        seen.append(status)
        print(status, flush=True)
    if seen[-2:] == ["TRAY_OPEN", "DISC_OK"]:
        break
    time.sleep(0.05)
os.close(fd)
with open("/dev/sr0", "rb") as cd:
    print(cd.read(9).decode(), flush=True)
"""


def _wait_for_line(job: Job, line: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in job.output().splitlines():
        assert not job.done(), f"the guest's watcher ended early: {job.wait()}"
        assert time.monotonic() < deadline, f"no {line!r} from the guest: {job.output()!r}"
        time.sleep(0.05)


def test_cdrom_eject_and_medium_change_over_qmp(lab: Guest, lab_dir: Path) -> None:
    job = lab.start([sys.executable, "-c", _WATCH_TRAY], timeout=180)
    _wait_for_line(job, "DISC_OK")
    lab.eject()
    _wait_for_line(job, "TRAY_OPEN")
    assert lab.qmp.wait_event("DEVICE_TRAY_MOVED")["data"]["tray-open"] is True
    lab.change_medium(lab_dir / "cd2.raw")
    r = job.wait()
    assert r.status == 0, r.stderr
    assert r.stdout.split() == ["DISC_OK", "TRAY_OPEN", "DISC_OK", CD_TWO.decode()]


def test_guest_writes_reach_the_host_only_through_a_share(lab: Guest, lab_dir: Path) -> None:
    share = lab_dir / "share"
    private = lab_dir / "not-shared.txt"
    r = lab.run(f"echo hi > {share}/from-guest.txt && echo no > {private} && cat {private}",
                timeout=120)
    assert (r.status, r.stdout) == (0, "no\n"), r.stderr
    assert (share / "from-guest.txt").read_text() == "hi\n"
    assert not private.exists()


def test_hot_unplug_then_timeout_gives_125_and_leaves_no_qemu(tmp_path: Path) -> None:
    from tests.vm.conftest import booted

    guest = booted(Guest(disks=["16M", "32M"], smp=SMP))
    try:
        pid = guest._proc.pid
        tmp = guest._tmp
        guest.remove_disk(0)  # returns once QEMU reports DEVICE_DELETED
        # One disk left, the 32 MiB one. Not by name: the kernel scans the two disks
        # asynchronously, so either may have become sda (seen in CI: the 32 MiB one did).
        r = guest.run("ls /sys/block; cat /sys/block/sd*/size", timeout=120)
        words = r.stdout.split()
        assert len(words) == 2 and words[0] in ("sda", "sdb"), (r.stdout, r.stderr)
        assert words[1] == str(32 << 11), (r.stdout, r.stderr)
        r = guest.run("echo started; sleep 600", timeout=3)
        assert r.status == 125
        assert r.message == "timed out after 3 s (command); QEMU killed"
        assert r.stdout == "started\n"
        assert not guest.alive
        assert not Path(f"/proc/{pid}").exists()
    finally:
        guest.close()
    assert tmp is not None and not tmp.exists()


def test_qemu_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    import signal
    import subprocess

    from rig.drivers.vm import machine

    script = ("import sys, time\nfrom rig.drivers.vm.machine import Guest\n"
              "g = Guest(smp=1); g.boot()\nprint(g._proc.pid, g._tmp, flush=True)\n"
              "time.sleep(600)\n")
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert host.stdout is not None
    pid_text, tmp = host.stdout.readline().split()
    qemu = int(pid_text)
    assert Path(f"/proc/{qemu}").exists()
    host.send_signal(signal.SIGKILL)
    host.wait()
    deadline = time.monotonic() + 10
    while _running(qemu) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(qemu), "QEMU outlived the process that started it"
    machine._reap_stale()  # what the next guest does first
    assert not Path(tmp).exists()


def test_a_failed_boot_says_why(tmp_path: Path) -> None:
    from tests.vm.conftest import boot_lock

    with boot_lock(), Guest(modules=["no_such_module"], smp=SMP) as guest:
        r = guest.run("true", timeout=120)
    assert r.status == 125
    assert r.message == "blockrig-vm: modprobe no_such_module failed", r.message


def _running(pid: int) -> bool:
    """Alive and not a zombie (QEMU's parent is gone, so nobody may have reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and os.path.exists(f"/proc/{pid}")
