"""The guest's initramfs: a static busybox, the modules needed to reach the host over 9p, and a
generic ``/init``.

``/init`` only loads those modules and mounts the per-boot control share (9p tag ``rigctl``); the
rest of the boot (host root under a tmpfs overlay, device modules, the command loop) is a script
the host writes onto that share for each boot (:mod:`rig.drivers.vm.guestscript`). So the archive
depends only on the kernel and busybox, and is cached beside the kernel.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path

from rig.drivers.vm.cpio import CpioWriter
from rig.drivers.vm.kernel import BOOT_MODULES, Kernel
from rig.errors import RigError

#: The 9p mount tag of the per-boot control share.
CONTROL_TAG = "rigctl"

INIT = """#!/bin/busybox sh
# blockrig VM lab, first stage: PID 1 in the initramfs. Loads the virtio and 9p modules, mounts
# the control share and hands over to the boot script the host wrote there.
/bin/busybox --install -s /bin
export PATH=/bin
die() {
    echo "blockrig-vm: $*" >/dev/console
    poweroff -f
    sleep 10
}
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
for ko in /boot-modules/*.ko; do
    insmod "$ko" || die "insmod $ko failed"
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 @TAG@ /ctl \\
    || die "cannot mount the control share (9p tag @TAG@)"
. /ctl/boot.sh
die "/ctl/boot.sh returned"
""".replace("@TAG@", CONTROL_TAG)

_BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
_FORMAT = 1  # bump when the archive's layout changes


def static_busybox() -> Path:
    """A statically linked busybox (Debian's busybox-static), or a RigError naming the fix."""
    for candidate in _BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    raise RigError("no static busybox (/bin/busybox): apt-get install busybox-static")


def initramfs(kernel: Kernel) -> Path:
    """The cached initramfs for ``kernel`` (built when missing or when busybox changed)."""
    busybox = static_busybox()
    modules = kernel.load_order(BOOT_MODULES)
    st = busybox.stat()
    key = hashlib.sha256(
        f"{_FORMAT}:{INIT}:{busybox}:{st.st_size}:{st.st_mtime_ns}:{modules}".encode()
    ).hexdigest()[:16]
    path = kernel.root / f"initramfs-{key}.cpio"
    if path.is_file():
        return path
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("bin", "dev", "proc", "sys", "ctl", "lower", "rw", "newroot", "lib",
              "lib/modules", "boot-modules"):
        w.directory(d)
    w.symlink("sbin", "bin")
    w.chardev("dev/console", 5, 1)
    w.file("init", INIT.encode(), mode=0o755)
    w.file("bin/busybox", busybox.read_bytes(), mode=0o755)
    for i, name in enumerate(modules):
        w.file(f"boot-modules/{i:02d}-{name}.ko", kernel.module_path(name).read_bytes())
    w.close()
    for old in kernel.root.glob("initramfs-*.cpio"):
        if old != path:
            old.unlink(missing_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def _is_static_elf(path: Path) -> bool:
    """True for an ELF64 executable with no PT_INTERP (no dynamic loader)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:5] != b"\x7fELF\x02":
            return False
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp
               for i in range(phnum))
