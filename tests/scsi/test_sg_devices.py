"""``rig sg`` and the ``sg`` node on real SCSI devices (run inside the VM lab with ``--rig-vm``):
scsi_debug, the guest's virtio-scsi disk (a lab disk) and its CD-ROM. Each field is compared
with Debian's sg3-utils on the same device, and scsi_debug's own error injection gives the
sense and errno the rig decodes."""

from __future__ import annotations

import contextlib
import errno
import glob
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from rig.scsi.responses import decode_vpd

SG3 = ("sg_inq", "sg_readcap", "sg_turs", "sg_vpd", "sg_raw")


def _need_sg3() -> None:
    missing = [t for t in SG3 if shutil.which(t) is None]
    if missing:
        pytest.skip(f"sg3-utils missing ({', '.join(missing)}): apt-get install sg3-utils")


def rig_sg(*args: str, check: bool = True) -> tuple[int, Any, str]:
    """``rig sg ARGS --json`` (in this process: a new interpreter costs seconds under TCG):
    (status, parsed JSON or None, stderr)."""
    from rig.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["sg", *args, "--json"])
    if check and status != 0:
        raise AssertionError(f"rig sg {' '.join(args)}: {status}\n{out.getvalue()}"
                             f"{err.getvalue()}")
    return status, json.loads(out.getvalue()) if out.getvalue().strip() else None, \
        err.getvalue()


def sg3(*argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    if ok and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def sg3_raw_bytes(*argv: str) -> bytes:
    r = subprocess.run(list(argv), capture_output=True, timeout=120, check=True)
    return r.stdout


def _field(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, f"{pattern!r} not in:\n{text}"
    return m.group(1).strip()


def generic_of(disk: str) -> str:
    names = glob.glob(f"/sys/block/{os.path.basename(disk)}/device/scsi_generic/sg*")
    assert names, f"no sg node for {disk} (modprobe sg)"
    return "/dev/" + os.path.basename(names[0])


def compare_with_sg3(dev: str) -> None:
    """INQUIRY, serial, READ CAPACITY (10 and 16), TEST UNIT READY and VPD pages, against
    sg_inq, sg_readcap, sg_turs and sg_vpd on ``dev``."""
    _, ours, _ = rig_sg("inq", dev)
    text = sg3("sg_inq", dev).stdout
    inq = ours["inquiry"]
    assert inq["vendor"] == _field(text, r"Vendor identification:(.*)")
    assert inq["product"] == _field(text, r"Product identification:(.*)")
    assert inq["revision"] == _field(text, r"Product revision level:(.*)")
    assert inq["peripheral_device_type"] == int(_field(text, r"PDT=(\d+)"))
    assert inq["version"] == int(_field(text, r"version=(0x[0-9a-f]+)"), 16)
    assert inq["hisup"] == int(_field(text, r"HiSUP=(\d)"))
    assert inq["cmdque"] == int(_field(text, r"CmdQue=(\d)"))
    if "Unit serial number:" in text:
        assert ours["serial"] == _field(text, r"Unit serial number:(.*)")

    _, cap10, _ = rig_sg("readcap", dev)
    text = sg3("sg_readcap", dev).stdout
    assert cap10["read_capacity"]["returned_lba"] == int(_field(text, r"Last LBA=(\d+)"))
    assert cap10["read_capacity"]["block_length"] == int(
        _field(text, r"Logical block length=(\d+)"))
    status, cap16, _ = rig_sg("readcap", "--long", dev, check=False)
    long = sg3("sg_readcap", "--long", dev, ok=False)
    assert (status == 0) == (long.returncode == 0)
    if status == 0:
        rc = cap16["read_capacity"]
        assert rc["returned_lba"] == int(_field(long.stdout, r"Last LBA=(\d+)"))
        assert rc["lbpme"] == int(_field(long.stdout, r"lbpme=(\d)"))
        assert rc["lbprz"] == int(_field(long.stdout, r"lbprz=(\d)"))
        assert rc["lbppbe"] == int(_field(long.stdout, r"physical block exponent=(\d+)"))
        assert rc["prot_en"] == int(_field(long.stdout, r"prot_en=(\d)"))

    status, turs, _ = rig_sg("turs", dev, check=False)
    assert status == sg3("sg_turs", dev, ok=False).returncode
    if status == 0:
        assert turs["ready"] is True

    _, pages, _ = rig_sg("inq", "--page", "sv", dev)
    assert pages["raw"] == sg3_raw_bytes("sg_vpd", "--page=sv", "--raw", dev).hex(" ")
    for page in pages["vpd"]:
        if page not in (0x80, 0x83, 0xB0, 0xB1, 0xB2):
            continue
        _, got, _ = rig_sg("inq", "--page", f"0x{page:x}", dev)
        theirs = sg3_raw_bytes("sg_vpd", f"--page=0x{page:x}", "--raw", dev)
        assert bytes.fromhex(got["raw"]) == theirs, f"VPD page {page:#x}"
        decoded = decode_vpd(page, theirs)
        text = sg3("sg_vpd", f"--page=0x{page:x}", dev).stdout
        if page == 0x80:
            assert got["vpd"] == decoded == _field(text, r"Unit serial number:(.*)")
        if page == 0xB0:
            assert got["vpd"]["max_unmap_lba_count"] == decoded["max_unmap_lba_count"]
            m = re.search(r"[Mm]aximum unmap LBA count:\s*(\d+)", text)
            if m and decoded["max_unmap_lba_count"] not in (0, 0xFFFFFFFF):
                assert int(m.group(1)) == decoded["max_unmap_lba_count"]
            m = re.search(r"[Mm]aximum transfer length:\s*(\d+)", text)
            if m and decoded["max_transfer_length"]:
                assert int(m.group(1)) == decoded["max_transfer_length"]
        if page == 0xB2:
            for key, label in (("lbpu", "LBPU"), ("lbpws", "LBPWS")):
                m = re.search(rf"{label}=(\d)", text)
                if m:
                    assert got["vpd"][key] == int(m.group(1))
        if page == 0x83:
            assert len(got["vpd"]) == len(decoded)


def node_round_trip(dev: str, allow: str) -> None:
    """The ``sg`` node: write (with and without FUA), read back, flush, discard."""
    import rig

    spec = {"driver": "sg", "filename": dev, "x-allow": allow}
    with rig.open(spec, cache="none") as blk:
        bs = blk.root.limits.request_alignment
        pattern = bytes(range(256)) * (3 * bs // 256)
        blk.pwrite(bs, pattern)
        blk.pwrite(8 * bs, b"\xab" * bs, fua=True)
        blk.flush()
        assert blk.pread(bs, len(pattern)) == pattern
        assert blk.pread(8 * bs, bs) == b"\xab" * bs
        big = os.urandom(blk.root.limits.max_transfer + 2 * bs)  # split by the backend
        blk.pwrite(16 * bs, big)
        assert blk.pread(16 * bs, len(big)) == big
    # the same bytes through the kernel's block device (O_DIRECT, no page cache)
    disk = os.path.realpath(allow)
    fd = os.open(disk, os.O_RDONLY | os.O_DIRECT)
    try:
        import mmap

        buf = mmap.mmap(-1, 4 * bs)
        os.preadv(fd, [buf], bs)
        assert bytes(buf[:len(pattern)]) == pattern
    finally:
        os.close(fd)


@pytest.mark.rig_needs("scsi_debug")
def test_scsi_debug_fields_agree_with_sg3_utils(rig_scsi_debug: Callable[..., str]) -> None:
    _need_sg3()
    disk = rig_scsi_debug(dev_size_mb=16, lbpu=1)
    compare_with_sg3(generic_of(disk))
    compare_with_sg3(disk)


@pytest.mark.rig_needs("scsi_debug")
@pytest.mark.parametrize("params", [{"lbpu": 1}, {"lbpws": 1}], ids=["unmap", "write_same"])
def test_sg_node_on_scsi_debug(rig_scsi_debug: Callable[..., str],
                               params: dict[str, int]) -> None:
    import rig

    disk = rig_scsi_debug(dev_size_mb=16, **params)
    sg = generic_of(disk)
    node_round_trip(sg, disk)
    with rig.open({"driver": "sg", "filename": sg, "x-allow": disk}, cache="none") as blk:
        node = blk.root
        assert node.discard_mode == ("unmap" if "lbpu" in params else "write_same_16")
        bs = node.limits.request_alignment
        blk.pwrite(0, b"\x5a" * 64 * bs)
        blk.discard(0, 64 * bs)
        assert blk.pread(0, 64 * bs) == bytes(64 * bs)  # scsi_debug: lbprz=1


@pytest.mark.rig_needs("scsi_debug")
def test_sg_node_refuses_unsafe_devices(rig_scsi_debug: Callable[..., str]) -> None:
    import rig
    from rig.errors import UnsafeDeviceError

    disk = rig_scsi_debug(dev_size_mb=8)
    with pytest.raises(UnsafeDeviceError, match="did not create it"):
        rig.open({"driver": "sg", "filename": generic_of(disk)}, cache="none")
    held = os.open(disk, os.O_RDONLY | os.O_EXCL)
    try:
        with pytest.raises(UnsafeDeviceError, match="exclusively"):
            rig.open({"driver": "sg", "filename": generic_of(disk), "x-allow": disk},
                     cache="none")
    finally:
        os.close(held)
    with rig.open({"driver": "sg", "filename": generic_of(disk)}, read_only=True) as blk:
        assert blk.getlength() == 8 * 1024 * 1024


@pytest.mark.rig_needs("scsi_debug")
def test_scsi_debug_medium_error(rig_scsi_debug: Callable[..., str]) -> None:
    """scsi_debug opts=2 fails reads of its medium error range (LBA 0x1234, 10 blocks) with
    MEDIUM ERROR / Unrecovered read error: rig sg raw, the node and the kernel agree."""
    import rig

    _need_sg3()
    disk = rig_scsi_debug(dev_size_mb=16, opts=2)
    sg = generic_of(disk)
    read10 = ["28", "00", "00", "00", "12", "34", "00", "00", "01", "00"]
    status, out, _ = rig_sg("raw", sg, *read10, "--request", "512", check=False)
    assert status == 3  # sg3_utils' SG_LIB_CAT_MEDIUM_HARD
    sense = out["outcome"]["sense"]
    assert (sense["sense_key"], sense["asc"], sense["ascq"]) == (3, 0x11, 0)
    assert sense["sense_key_name"] == "Medium Error"
    assert sense["asc_text"] == "Unrecovered read error"
    assert sense["information"] == 0x1234
    assert out["outcome"]["errno"] == errno.ENODATA
    theirs = sg3("sg_raw", "-r", "512", sg, *read10, ok=False)
    assert theirs.returncode == 3
    assert "Unrecovered read error" in theirs.stdout + theirs.stderr
    with rig.open({"driver": "sg", "filename": sg}, read_only=True) as blk:
        with pytest.raises(OSError) as e:
            blk.pread(0x1234 * 512, 512)
        assert e.value.errno == errno.ENODATA
        assert "Unrecovered read error [3/11/00]" in str(e.value)
        assert blk.pread(0, 512) is not None  # outside the range: fine
    # the kernel's own block layer turns the same sense into the same errno
    fd = os.open(disk, os.O_RDONLY | os.O_DIRECT)
    try:
        import mmap

        buf = mmap.mmap(-1, 4096)
        with pytest.raises(OSError) as e:
            os.preadv(fd, [buf], 0x1234 * 512)
        assert e.value.errno == errno.ENODATA
    finally:
        os.close(fd)


@pytest.mark.rig_needs("sg", "lab_disk")  # the VM lab's virtio-scsi disk (QEMU scsi-hd)
def test_lab_disk_agrees_with_sg3_utils_and_round_trips(
        rig_lab_disk: Callable[..., Any]) -> None:
    _need_sg3()
    disk = rig_lab_disk()
    compare_with_sg3(disk.path)
    compare_with_sg3(generic_of(disk.path))
    node_round_trip(generic_of(disk.path), disk.path)
    node_round_trip(disk.path, disk.path)


@pytest.mark.rig_needs("cdrom", "sg")
def test_cdrom_inquiry_agrees_with_sg3_utils() -> None:
    _need_sg3()
    cd = sorted(glob.glob("/dev/sr[0-9]*"))[0]
    _, ours, _ = rig_sg("inq", cd)
    text = sg3("sg_inq", cd).stdout
    assert ours["inquiry"]["peripheral_device_type"] == 5 == int(_field(text, r"PDT=(\d+)"))
    assert ours["inquiry"]["rmb"] == int(_field(text, r"RMB=(\d)")) == 1
    assert ours["inquiry"]["product"] == _field(text, r"Product identification:(.*)")
    status, _, _ = rig_sg("turs", cd, check=False)
    assert status == sg3("sg_turs", cd, ok=False).returncode


@pytest.mark.rig_needs("scsi_debug")
@pytest.mark.parametrize("sector_size", [512, 4096])
def test_lockstep_sg_node_on_scsi_debug(rig_scsi_debug: Callable[..., str],
                                        sector_size: int) -> None:
    """The foundation's lockstep state machine (tests/kernel/conftest.py's): the ``sg`` node
    (every cache mode) against the RAM node, on the first bytes of a scsi_debug disk with
    UNMAP."""
    from tests.kernel.conftest import run_lockstep

    disk = rig_scsi_debug(dev_size_mb=8, sector_size=sector_size, lbpu=1)
    run_lockstep(disk, sector_size, {"driver": "sg", "filename": generic_of(disk),
                                     "x-allow": disk})


@pytest.mark.rig_needs("sg", "lab_disk")  # the VM lab's virtio-scsi disk (QEMU scsi-hd)
def test_lockstep_sg_node_on_the_virtio_scsi_disk(rig_lab_disk: Callable[..., Any]) -> None:
    """The same lockstep state machine over the ``sg`` node of QEMU's virtio-scsi disk."""
    from tests.kernel.conftest import run_lockstep

    disk = rig_lab_disk()
    with open(f"/sys/class/block/{os.path.basename(disk.path)}/queue/logical_block_size") as f:
        block = int(f.read())
    run_lockstep(disk.path, block,
                 {"driver": "sg", "filename": generic_of(disk.path), "x-allow": disk.path})
