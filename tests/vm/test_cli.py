"""``rig vm run`` and ``rig vm fetch`` as a user runs them: exit status, output, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vm.conftest import boot_lock

RIG = [sys.executable, "-m", "rig", "vm"]


def _rig(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RIG, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.rig_needs("vm")
def test_run_returns_the_commands_status_and_output() -> None:
    script = 'cat /sys/block/${RIG_VM_DISKS#/dev/}/size; echo oops >&2; exit 7'
    with boot_lock():
        r = _rig("run", "--smp", "1", "--disk", "32M", "--", "sh", "-c", script)
    assert (r.returncode, r.stdout, r.stderr) == (7, "65536\n", "oops\n")


@pytest.mark.rig_needs("vm")
def test_fetch_reports_the_cached_kernel() -> None:
    r = _rig("fetch", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "kernel 6." in r.stdout and "accelerator: " in r.stdout


@pytest.mark.rig_needs("vm")
def test_missing_qemu_is_named_with_the_fix() -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    r = subprocess.run([*RIG, "run", "--", "true"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert (r.returncode, r.stdout) == (1, "")  # a failure, not bad input
    assert r.stderr == ("rig vm: qemu-system-x86_64 not found: apt-get install qemu-system-x86 "
                        "(or bash ci/vm-setup.sh)\n")


@pytest.mark.parametrize(("args", "message"), [
    (["run"], "rig vm: no command: rig vm run"),
    (["run", "--"], "rig vm: no command: rig vm run"),
    (["run", "--disk", "12x", "--", "true"], "rig vm: disk '12x': neither a size"),
    (["run", "--disk", "1000", "--", "true"], "rig vm: disk '1000': the size must be"),
    (["run", "--cdrom", "/no/such.iso", "--", "true"], "rig vm: --cdrom /no/such.iso: no such"),
    (["run", "--timeout", "0", "--", "true"], "rig vm: --timeout 0: must be positive"),
    (["run", "--share", "/no/such/dir", "--", "true"], "rig vm: share /no/such/dir: not a"),
    (["run", "--accel", "xen", "--", "true"], "rig vm run: error: argument --accel"),
    ([], "rig vm: say what to do"),
])
def test_bad_input_is_one_line_and_status_2(args: list[str], message: str,
                                             tmp_path: Path) -> None:
    r = _rig(*args, timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith(message), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


@pytest.mark.rig_needs("vm")
def test_sigterm_stops_the_run_and_cleans_up() -> None:
    import signal
    import tempfile
    import time

    rig = subprocess.Popen([*RIG, "run", "--smp", "1", "--", "sleep", "600"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    qemu = []
    while not qemu and time.monotonic() < deadline:
        qemu = [int(p) for p in subprocess.run(["pgrep", "-P", str(rig.pid), "qemu-system"],
                                                capture_output=True, text=True).stdout.split()]
        time.sleep(0.1)
    assert qemu, "rig vm run started no QEMU"
    rig.send_signal(signal.SIGTERM)
    _out, err = rig.communicate(timeout=30)
    assert rig.returncode == 128 + signal.SIGTERM, err
    assert not Path(f"/proc/{qemu[0]}").exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"blockrig-vm-{rig.pid}-*"))
