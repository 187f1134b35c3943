"""``rig_crash``: every crash state of a recorded workload reaches the check, on a real exported
device holding exactly that state; a failing check fails the test with the shrunk state and a
command that rebuilds it; a check that raises, returns False or leaves the device mounted
fails; nothing is left behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from rig.crash.crashstate import CrashState
from rig.crash.logfile import read_log
from rig.crash.states import CrashStates
from rig.errors import ConfigError
from rig.fixtures.crash_fixture import CrashPoint, CrashReport, CrashRun

pytestmark = pytest.mark.rig_needs("loop", "fuse")
KiB = 1024
#: Options of an in-process inner run: labgrid's pytest plugin (installed with labgrid) starts
#: its step logger once per process, so a second start in the same process would fail.
INNER = ("-p", "no:cacheprovider", "-p", "no:labgrid")


def _write_twice(run: CrashRun) -> None:
    """A durable write, a mark, then two writes in flight."""
    fd = os.open(run.path, os.O_RDWR)
    try:
        os.pwrite(fd, b"\x01" * 4096, 0)
        os.fsync(fd)
        run.mark("one")
        os.pwrite(fd, b"\x02" * 4096, 8192)
        os.pwrite(fd, b"\x03" * 4096, 16384)
    finally:
        os.close(fd)


def test_every_state_reaches_the_check_on_the_device(
        rig_crash: Callable[..., CrashReport]) -> None:
    seen: list[tuple[str, str, str]] = []

    def check(point: CrashPoint) -> None:
        with open(point.path, "rb") as f:
            seen.append((str(point.state), hashlib.sha256(f.read()).hexdigest(), point.mark))
        with open(point.path, "r+b") as f:  # scribbled over: the next state must not see it
            f.write(b"\xff" * 65536)

    report = rig_crash(_write_twice, check, size=64 * KiB)
    states = CrashStates(read_log(str(report.log)))
    assert report.ok and report.checked == report.states == states.count() == len(seen) >= 4
    assert [name for name, _, _ in seen] == [str(s) for s in states]
    for name, digest, mark in seen:
        state = CrashState.parse(name)
        assert digest == hashlib.sha256(states.image(state)).hexdigest(), name
        assert mark == ("one" if state.cut >= 3 else "")


def test_a_failing_check_fails_the_test_shrunk_with_a_rebuild_command(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fails="""
        import os

        def workload(run):
            fd = os.open(run.path, os.O_RDWR)
            os.pwrite(fd, b"A" * 4096, 0)
            os.pwrite(fd, b"B" * 4096, 4096)
            os.fsync(fd)
            os.close(fd)

        def check(point):
            with open(point.path, "rb") as f:
                assert f.read(1) == b"A", "no A"

        def test_it(rig_crash):
            rig_crash(workload, check, size="64K")
    """)
    result = pytester.runpytest(*INNER)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*rig_crash: * of * crash states failed the check (*records in *",
                                 "*: AssertionError: no A*",
                                 "*(drops #[0-9]*)*",
                                 "*rebuild one: rig crash materialize *.rwlog '*' state.img*"])
    line = next(x for x in result.outlines if "rebuild one:" in x)
    log, state = line.split("materialize ", 1)[1].split(" '")[0], line.split("'")[1]
    image = pytester.path / "state.img"
    image.write_bytes(bytes(64 * KiB))
    from rig.cli.main import main

    assert main(["crash", "materialize", log, state, str(image)]) == 0
    assert image.read_bytes()[:1] != b"A"  # the rebuilt state fails the check too


def test_false_and_mounts_left_behind_fail(rig_crash: Callable[..., CrashReport],
                                           tmp_path: Path) -> None:
    report = rig_crash(_write_twice, lambda point: point.cut < 3, size=64 * KiB, fail=False)
    assert report.failures and all(f.error == "the check returned False"
                                   for f in report.failures)
    assert all(f.state.cut >= 3 for f in report.failures)
    assert report.failures[0].shrunk is not None and report.failures[1].shrunk is None

    if subprocess.run(["which", "mkfs.ext4"], capture_output=True).returncode:
        pytest.skip("mkfs.ext4 missing: apt-get install e2fsprogs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def mkfs(run: CrashRun) -> None:
        subprocess.run(["mkfs.ext4", "-q", "-F", run.path], check=True)  # it fsyncs at the end
        run.mark("made")

    def leave_mounted(point: CrashPoint) -> None:  # passes where the state does not mount
        subprocess.run(["mount", "-o", "ro", point.path, str(mnt)], capture_output=True)

    report = rig_crash(mkfs, leave_mounted, size="4M", after_mark="made", max_failures=1,
                       shrink=0, fail=False)
    assert report.failures[0].error.startswith("left the device mounted at ")
    assert not mnt.is_mount()


def test_an_unknown_mark_is_one_error(rig_crash: Callable[..., CrashReport]) -> None:
    with pytest.raises(ConfigError, match="after_mark 'two': the workload made no such mark"):
        rig_crash(_write_twice, lambda point: None, size=64 * KiB, after_mark="two")
    report = rig_crash(_write_twice, lambda point: None, size=64 * KiB, after_mark="one")
    assert report.ok and 0 < report.checked < report.records + 8
