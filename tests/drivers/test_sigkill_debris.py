"""SIGKILL every long-running command at a moment that matters, and find NOTHING left: no
process it started, no FUSE mount, no loop device on a file it made, no file or directory in its
temp dirs (scratch images, mountpoints, mark sockets).

Each run has a private ``TMPDIR`` and ``RIG_SCRATCH_DIR`` (so anything the rig makes lands
there, and no other pytest-xdist worker's sweeper touches it) and an environment marker that
every process it starts inherits (so the processes it left are found, and only those).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rig.crash.logfile import LogWriter
from rig.drivers.export import fuse_mounts

pytestmark = pytest.mark.rig_needs("loop", "fuse")

MARK = "RIG_DEBRIS_TEST"
#: Seconds the rig's reapers get to clean up after the SIGKILL.
SETTLE = 10.0
SLOW_WRITES = """
[[rules]]
action = "delay"
op = "write"
seconds = "100ms"
"""


def _poll(done: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def marked_pids(token: str) -> dict[int, str]:
    """Live processes (not zombies) whose environment holds our marker: pid -> comm."""
    want = f"{MARK}={token}".encode()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if want not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/comm") as f:
                found[int(name)] = f.read().strip()
        except OSError:
            continue
    return found


def _backing_file(loop: str) -> str | None:
    try:
        with open(f"/sys/block/{loop}/loop/backing_file") as f:
            return f.read().strip()
    except OSError:
        return None


def _loops() -> dict[str, str]:
    """Bound loop devices: ``loopN`` -> backing file as the kernel prints it."""
    found = {}
    for name in os.listdir("/sys/block"):
        if name.startswith("loop") and (backing := _backing_file(name)) is not None:
            found[name] = backing
    return found


def _held_loops(pid: int) -> dict[str, str]:
    """The loop devices ``pid`` holds open, with their backing files."""
    held = {}
    with os.scandir(f"/proc/{pid}/fd") as fds:
        for fd in fds:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            name = os.path.basename(target)
            if target.startswith("/dev/loop") and (backing := _backing_file(name)):
                held[name] = backing
    return held


@dataclass
class Rig:
    """One ``rig`` command with a private temp dir and an environment marker."""

    argv: list[str]
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    lines: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Short, under /tmp: a mark socket's path must fit in sockaddr_un.
        self.private = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))
        env = {**os.environ, **self.env, "TMPDIR": str(self.private),
               "RIG_SCRATCH_DIR": str(self.private), MARK: self.token}
        with open(self.logs / "stderr.txt", "wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rig.cli.main", *self.argv], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=stderr, env=env)
        # A reader thread: programs the rig left behind may hold the pipe open for ever.
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def wait_for_line(self, start: str, timeout: float = 30.0) -> None:
        _poll(lambda: any(line.startswith(start) for line in self.lines)
              or self.proc.poll() is not None, timeout)
        assert any(line.startswith(start) for line in self.lines), (
            f"no line {start!r} from rig {' '.join(self.argv)}: {self.lines}, stderr: "
            f"{(self.logs / 'stderr.txt').read_text()}")

    def kill(self) -> None:
        self.held = _held_loops(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def debris(self) -> list[str]:
        found = [f"process {pid} ({comm})" for pid, comm in marked_pids(self.token).items()]
        found += [f"FUSE mount {m}" for m in fuse_mounts(str(self.private))]
        loops = _loops()
        found += [f"{loop} still on {backing}" for loop, backing in self.held.items()
                  if loops.get(loop) == backing]
        found += [f"{loop} on {backing}" for loop, backing in loops.items()
                  if backing.startswith(str(self.private))]
        found += [f"left {entry}" for entry in os.listdir(self.private)]
        return found

    def clean_up(self) -> None:
        """Whatever the rig left, so that this test leaves nothing either way."""
        for pid in marked_pids(self.token):
            os.kill(pid, signal.SIGKILL)
        for mountpoint in fuse_mounts(str(self.private)):
            subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        shutil.rmtree(self.private, ignore_errors=True)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    runs: list[Rig] = []

    def make(*argv: str, **env: str) -> Rig:
        runs.append(Rig(list(argv), tmp_path, env))
        return runs[-1]

    yield make
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        run.clean_up()


def _assert_nothing_left(run: Rig) -> None:
    _poll(lambda: not run.debris(), SETTLE)
    left = run.debris()
    assert not left, f"rig {' '.join(run.argv)} left: {left}"


def test_rig_run_killed_while_the_command_runs(start: Callable[..., Rig]) -> None:
    run = start("run", "--size", "4M", "--", "sh", "-c", "echo ready; sleep 60 & sleep 60")
    run.wait_for_line("ready")
    _poll(lambda: len(marked_pids(run.token)) >= 4, 10)  # rig, sh and its two sleeps
    run.kill()
    _assert_nothing_left(run)


def test_rig_run_killed_mid_write(start: Callable[..., Rig], tmp_path: Path) -> None:
    rules = tmp_path / "slow.toml"
    rules.write_text(SLOW_WRITES)
    run = start("run", "--faults", str(rules), "--size", "4M", "--", "sh", "-c",
                "echo ready; exec dd if=/dev/zero of=$RIG_DEV bs=64k count=64 oflag=direct")
    run.wait_for_line("ready")
    _poll(lambda: "dd" in marked_pids(run.token).values(), 10)
    time.sleep(0.3)  # a few writes in: one of them is waiting in the delay rule
    run.kill()
    _assert_nothing_left(run)


def test_rig_export_killed_while_serving(start: Callable[..., Rig], tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    run = start("export", str(image))
    run.wait_for_line("/dev/loop")
    run.kill()
    _assert_nothing_left(run)


def _wrote_pattern(pid: int) -> bool:
    """Whether a loop device ``pid`` holds starts with rig io's ``write -P 1 0 4k``."""
    for loop in _held_loops(pid):
        try:
            with open(f"/dev/{loop}", "rb") as f:
                if f.read(4096) == b"\x01" * 4096:
                    return True
        except OSError:
            continue
    return False


def test_rig_io_loop_killed_between_commands(start: Callable[..., Rig]) -> None:
    run = start("io", "--loop", "4M", "-c", "write -P 1 0 4k", "-c", "sleep 60000")
    # rig io's stdout is block-buffered on a pipe (as qemu-io's), so its 'wrote' line comes
    # only at exit: wait for the write on the device itself.
    _poll(lambda: _wrote_pattern(run.proc.pid) or run.proc.poll() is not None, 30)
    assert _wrote_pattern(run.proc.pid), f"rig io never wrote its loop device: {run.lines}"
    run.kill()
    assert run.held  # it held its loop device when it died
    _assert_nothing_left(run)


def test_rig_crash_record_killed_after_a_mark(start: Callable[..., Rig],
                                              tmp_path: Path) -> None:
    run = start("crash", "record", "--log", str(tmp_path / "run.rwlog"), "--size", "4M", "--",
                "sh", "-c", "rig crash mark hello && echo ready; sleep 60")
    run.wait_for_line("ready")
    run.kill()
    _assert_nothing_left(run)


def test_rig_crash_check_killed_during_the_checker(start: Callable[..., Rig],
                                                  tmp_path: Path) -> None:
    log = tmp_path / "run.rwlog"
    with LogWriter(log, device_size=256 * 1024, logical_block_size=512) as w:
        w.write(0, b"\x01" * 4096)
    ready = tmp_path / "ready"
    run = start("crash", "check", str(log), "--no-bundle", "--check",
                "touch $READY; sleep 60 & sleep 60", READY=str(ready))
    _poll(ready.exists, 30)
    assert ready.exists(), (tmp_path / "stderr.txt").read_text()
    run.kill()
    _assert_nothing_left(run)


_EXPORTER = """
import os, sys, time
import rig
from rig.drivers.export import export
with rig.open({"driver": "file", "filename": sys.argv[1]}) as blk, export(blk) as ex:
    print(ex.path, ex.mountpoint, flush=True)
    time.sleep(600)
"""


def _children(pid: int, comm: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and stat[stat.index("(") + 1:stat.rindex(")")] == comm:
            found.append(int(name))
    return found


def test_the_reaper_unmounts_a_dead_fuse_mount(tmp_path: Path) -> None:
    """With fusermount3's own watcher killed first, the exporter's SIGKILL leaves a dead FUSE
    mount, which only the rig's reaper can clean up. The loop device stays open here for 2 s
    after the kill (as when a program still holds it), so the mount stays busy until the
    kernel's attribute cache has expired and every stat on it fails with ENOTCONN."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    private = Path(tempfile.mkdtemp(prefix="rk-", dir="/tmp"))
    child = subprocess.Popen([sys.executable, "-c", _EXPORTER, str(image)],
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "TMPDIR": str(private)})
    try:
        assert child.stdout is not None
        device, mountpoint = child.stdout.readline().split()
        watchers = _children(child.pid, "fusermount3")
        assert watchers
        for pid in watchers:
            os.kill(pid, signal.SIGKILL)
        holder = os.open(device, os.O_RDONLY)
        try:
            child.send_signal(signal.SIGKILL)
            child.wait()
            time.sleep(2)
        finally:
            os.close(holder)
        _poll(lambda: not fuse_mounts(mountpoint) and not os.path.lexists(mountpoint), SETTLE)
        assert fuse_mounts(mountpoint) == []
        assert os.listdir(private) == []
    finally:
        child.kill()
        child.wait()
        for mnt in fuse_mounts(str(private)):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.rig_needs("vm")
def test_rig_vm_run_killed_while_qemu_runs(start: Callable[..., Rig]) -> None:
    run = start("vm", "run", "--smp", "1", "--", "sleep", "600")
    _poll(lambda: any(comm.startswith("qemu-system") for comm in marked_pids(run.token).values())
          and os.listdir(run.private), 60)
    assert os.listdir(run.private), "rig vm run made no temporary directory"
    run.kill()
    _assert_nothing_left(run)


_WATCHED = """
import signal, sys, time
from rig.drivers.procs import DeathWatch
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as a CLI that is piped into head does
watch = DeathWatch("rig-test-watch", 'echo "$OWNER" > "$1"', sys.argv[1])
if sys.argv[2] == "release":
    watch.release()
elif sys.argv[2] == "watcher-gone":
    watch._proc.kill()
    watch._proc.wait()
    watch.release()  # must not die of SIGPIPE
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["killed", "release", "watcher-gone"])
def test_a_death_watch_runs_its_script_only_when_its_process_dies(tmp_path: Path,
                                                                 how: str) -> None:
    from rig.drivers.procs import owner_token

    done = tmp_path / "ran"
    child = subprocess.Popen([sys.executable, "-c", _WATCHED, str(done), how],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "ready\n"
    token = owner_token(child.pid)
    child.kill()
    child.wait()
    if how == "killed":
        _poll(done.exists, SETTLE)
        assert done.read_text() == f"{token}\n"  # $OWNER: what KILL_OWNED looks for
    else:
        time.sleep(0.3)
        assert not done.exists()


MOUNT_AND_WAIT = ('mkfs.ext4 -q -F "$RIG_DEV" && mount "$RIG_DEV" "$MNT" && echo ready && '
                  '{ [ -n "$LEAVE" ] || sleep 60; }')


def _mounted(mnt: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(mnt) for line in f)


@pytest.mark.rig_needs("mkfs")
def test_a_filesystem_the_killed_command_left_mounted_is_unmounted(
        start: Callable[..., Rig], tmp_path: Path) -> None:
    """The program mounted the exported device and both died: the reaper unmounts it, or the
    loop device (and so the FUSE file) could never go away."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run = start("run", "--size", "8M", "--", "sh", "-c", MOUNT_AND_WAIT, MNT=str(mnt))
    try:
        run.wait_for_line("ready")
        run.kill()
        _assert_nothing_left(run)
        assert not _mounted(mnt)
    finally:
        if _mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.rig_needs("mkfs")
def test_a_filesystem_the_command_left_mounted_is_unmounted_at_the_end(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        r = subprocess.run([sys.executable, "-m", "rig.cli.main", "run", "--size", "8M", "--",
                            "sh", "-c", MOUNT_AND_WAIT],
                           env={**os.environ, "MNT": str(mnt), "LEAVE": "1"},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "was still mounted at " + str(mnt) + " when the export ended; unmounted it" \
            in r.stderr, r.stderr
        assert not _mounted(mnt)
    finally:
        if _mounted(mnt):
            subprocess.run(["umount", "-l", str(mnt)], check=False)
