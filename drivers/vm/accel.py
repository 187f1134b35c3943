"""KVM where it really works, TCG otherwise.

An openable ``/dev/kvm`` is not enough: on a Firecracker host whose ``/dev/kvm`` comes from
``kvm_pvm``, QEMU aborts with ``-cpu host`` and hangs with lesser CPU models. So ``auto`` boots the
guest once under KVM with a short timeout (the probe), and records the verdict in the kernel's cache
entry, keyed by the host kernel, the QEMU binary and the CPU, so the probe runs once per machine.
``$RIG_VM_ACCEL`` (``auto``, ``kvm``, ``tcg``) overrides the choice.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

from rig.drivers.vm.kernel import Kernel
from rig.errors import RigError

ACCELS = ("auto", "kvm", "tcg")
_KVM_GET_API_VERSION = 0xAE00
_KVM_API_VERSION = 12


def kvm_openable() -> bool:
    """``/dev/kvm`` opens read-write and speaks KVM API version 12."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _KVM_GET_API_VERSION) == _KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def choose(kernel: Kernel, requested: str | None, probe: Callable[[], bool]) -> str:
    """``kvm`` or ``tcg``: ``requested`` (or ``$RIG_VM_ACCEL``), with ``auto`` resolved by a
    cached verdict or by calling ``probe`` (which boots under KVM and says whether it worked)."""
    want = requested or os.environ.get("RIG_VM_ACCEL") or "auto"
    if want not in ACCELS:
        raise RigError(f"accelerator {want!r}: use one of {', '.join(ACCELS)}")
    if want != "auto":
        return want
    if not kvm_openable():
        return "tcg"
    path = kernel.root / "accel.json"
    key = _host_key()
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError):
        verdicts = {}
    if not isinstance(verdicts, dict):
        verdicts = {}
    if key not in verdicts:
        verdicts[key] = "kvm" if probe() else "tcg"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(verdicts, indent=1) + "\n")
        os.replace(tmp, path)
    return "kvm" if verdicts[key] == "kvm" else "tcg"


def recorded_verdict(kernel_root: Path) -> str | None:
    """The probe's verdict (``kvm`` or ``tcg``) recorded for this host, or None if none was."""
    try:
        verdicts = json.loads((kernel_root / "accel.json").read_text())
        verdict = verdicts.get(_host_key()) if isinstance(verdicts, dict) else None
    except (OSError, ValueError, RigError):
        return None
    return verdict if verdict in ("kvm", "tcg") else None


def _host_key() -> str:
    from rig.drivers.vm.qemu import qemu_binary

    qemu = Path(qemu_binary())
    st = qemu.stat()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.release()}|{qemu}:{st.st_size}:{st.st_mtime_ns}|{model}"
