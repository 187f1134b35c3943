"""The ``qemu-system-x86_64`` command line for one guest.

One virtio-scsi controller (``vscsi0``) carries the disks (``scsi-hd``, target = index) and the
CD-ROM (``scsi-cd``, target :data:`CDROM_TARGET`). Device ids are stable so QMP can address them:
disk N is ``disk{N}`` (its drive ``disk{N}-drive``), the CD-ROM is ``cd0``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rig.drivers.vm.guestscript import ROOT_TAG
from rig.drivers.vm.initramfs import CONTROL_TAG
from rig.errors import RigError

QEMU = "qemu-system-x86_64"
CDROM_ID = "cd0"
CDROM_TARGET = 63


def disk_id(index: int) -> str:
    return f"disk{index}"


#: Disk N's WWN is this plus N (an NAA 5 name; udev reads it as ID_WWN, sysfs as wwid).
WWN_BASE = 0x5000C50015EA71A0


def disk_serial(index: int) -> str:
    """The SCSI serial (VPD page 0x80) QEMU gives disk ``index``: udev's ID_SCSI_SERIAL (with
    a WWN set, ID_SERIAL and ID_SERIAL_SHORT are made from the WWN)."""
    return f"rig-{disk_id(index)}"


def disk_wwn(index: int) -> str:
    """The WWN QEMU gives disk ``index`` (``0x5000c50015ea71a0`` for disk 0)."""
    return f"0x{WWN_BASE + index:016x}"


@dataclass(frozen=True)
class QemuConfig:
    kernel: Path
    initrd: Path
    control_dir: Path
    console_log: Path
    qmp_socket: Path
    accel: str  # "tcg" or "kvm"
    disks: Sequence[Path] = ()
    cdrom: Path | None = None
    shares: Sequence[tuple[str, Path]] = ()  # (9p tag, writable host dir)
    memory: str = "1G"
    smp: int = 2
    quiet: bool = True


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise RigError(f"{QEMU} not found: apt-get install qemu-system-x86 "
                       "(or bash ci/vm-setup.sh)")
    return path


def command_line(cfg: QemuConfig) -> list[str]:
    append = "console=ttyS0 panic=-1 rdinit=/init"
    if cfg.quiet:
        append += " quiet loglevel=3"
    if cfg.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    argv = [
        qemu_binary(), "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
        "-M", "q35", *accel, "-smp", str(cfg.smp), "-m", cfg.memory,
        "-kernel", str(cfg.kernel), "-initrd", str(cfg.initrd), "-append", append,
        "-chardev", f"file,id=con,path={cfg.console_log}", "-serial", "chardev:con",
        "-qmp", f"unix:{cfg.qmp_socket},server=on,wait=off",
        *_share("root", Path("/"), ROOT_TAG, readonly=True),
        *_share("ctl", cfg.control_dir, CONTROL_TAG, readonly=False),
    ]
    for i, (tag, path) in enumerate(cfg.shares):
        argv += _share(f"share{i}", path, tag, readonly=False)
    if cfg.disks or cfg.cdrom is not None:
        argv += ["-device", "virtio-scsi-pci,id=vscsi0"]
    for i, image in enumerate(cfg.disks):
        did = disk_id(i)
        argv += [
            "-drive", f"if=none,id={did}-drive,file={_opt(image)},format=raw",
            "-device", f"scsi-hd,bus=vscsi0.0,scsi-id={i},lun=0,drive={did}-drive,id={did},"
            f"serial={disk_serial(i)},wwn={disk_wwn(i)}",
        ]
    if cfg.cdrom is not None:
        argv += [
            "-drive", f"if=none,id={CDROM_ID}-drive,file={_opt(cfg.cdrom)},format=raw,"
            "media=cdrom,readonly=on",
            "-device", f"scsi-cd,bus=vscsi0.0,scsi-id={CDROM_TARGET},lun=0,"
            f"drive={CDROM_ID}-drive,id={CDROM_ID}",
        ]
    return argv


def _share(fsid: str, path: Path, tag: str, *, readonly: bool) -> list[str]:
    ro = ",readonly=on" if readonly else ""
    return [
        "-fsdev", f"local,id={fsid},path={_opt(path)},security_model=none,multidevs=remap{ro}",
        "-device", f"virtio-9p-pci,fsdev={fsid},mount_tag={tag}",
    ]


def _opt(path: Path) -> str:
    """A path as a QEMU option value (commas are doubled)."""
    return str(path).replace(",", ",,")
