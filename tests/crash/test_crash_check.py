"""``rig crash check``: every crash state of a log on a real exported device, with a checker.

These run real loop devices over the FUSE export: the checker is a real program reading the
real ``/dev/loopN``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rig.cli.main import main
from rig.crash.crashstate import CrashState
from rig.crash.logfile import LogWriter, read_log
from rig.crash.states import CrashStates
from tests.crash.test_marks import check_marked_rows, marking_writer

SIZE = 256 * 1024
pytestmark = pytest.mark.rig_needs("loop", "fuse")

#: Prints "STATE sha256-of-the-device" into $OUT, then overwrites the whole device with 0xff
#: (through the page cache): the next state must not see any of it.
_HASH_AND_TRASH = """
import hashlib, os, sys
dev = os.environ["RIG_DEV"]
with open(dev, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
with open(os.environ["OUT"], "a") as out:
    out.write(os.environ["RIG_STATE"] + "|" + digest + "|" + os.environ["RIG_MARK"] + "\\n")
with open(dev, "r+b") as f:
    f.write(b"\\xff" * int(sys.argv[1]))
"""


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """A durable write, a mark, then three writes in flight (one overwrites the first)."""
    path = tmp_path / "run.rwlog"
    with LogWriter(path, device_size=SIZE, logical_block_size=512) as w:
        w.write(0, b"\x01" * 4096)
        w.flush()
        w.mark("first durable")
        w.write(4096, b"\x02" * 8192)
        w.write(0, b"\x03" * 512)
        w.write(65536, b"\x04" * 4096)
    return path


def _check(*argv: str) -> int:
    return main(["crash", "check", *argv])


def test_every_state_is_on_the_device_and_a_checker_cannot_leak_into_the_next(
        log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "seen.txt"
    monkeypatch.setenv("OUT", str(out))
    checker = shlex.join([sys.executable, "-c", _HASH_AND_TRASH, str(SIZE)])
    assert _check(str(log), "--check", checker, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    states = CrashStates(read_log(log))
    assert report["checked"] == report["states"] == states.count() == 2 + 8
    assert report["failed"] == 0 and report["bundle"] is None
    seen = [line.split("|") for line in out.read_text().splitlines()]
    assert [name for name, _, _ in seen] == [str(s) for s in states]
    for name, digest, mark in seen:
        want = hashlib.sha256(states.image(CrashState.parse(name))).hexdigest()
        assert digest == want, f"{name}: the device did not hold the state"
        assert mark == ("first durable" if CrashState.parse(name).cut >= 3 else "")


def test_failures_are_reported_shrunk_and_bundled(log: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # After the mark, fails whenever the 0x02 write (record 4) is missing from block 1.
    checker = "echo checking $RIG_STATE; [ -z \"$RIG_MARK\" ] || dd if=$RIG_DEV bs=4096 " \
              "skip=1 count=1 2>/dev/null | od -An -tx1 | head -1 | grep -q 02"
    monkeypatch.chdir(tmp_path)
    assert _check(str(log), "--check", checker) == 1
    text = capsys.readouterr().out
    states = CrashStates(read_log(log))
    failing = [s for s in states if s.cut == 6 and 4 not in s.keep]
    assert f"{len(failing)} failed" in text
    # The first failure drops all three in-flight writes; shrunk, it drops only record 4.
    assert "shrunk to cut 6 keep 5,6 (drops #4; " in text and "1-minimal" in text
    bundle = tmp_path / f"rig-crash-bundle-{log.name}"
    doc = json.loads((bundle / "failures.json").read_text())
    assert [f["state"] for f in doc["failures"]] == [str(s) for s in failing]
    assert doc["failures"][0]["shrunk"]["dropped"] == ["#4"]
    assert (bundle / "write.log").read_bytes() == log.read_bytes()
    assert "checking cut 6 keep 5,6" in (bundle / "outputs" / "1.txt").read_text()
    rig = os.path.join(os.path.dirname(sys.executable), "rig")
    repro = subprocess.run(["sh", str(bundle / "repro.sh")], capture_output=True, text=True,
                           env={**os.environ, "RIG": rig}, timeout=120)
    assert repro.returncode == 1, repro.stderr
    assert "FAIL cut 6 keep 5,6" in repro.stderr


def test_after_mark_and_max_failures_limit_the_run(log: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(str(log), "--check", "true", "--after-mark", "first durable", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == 8  # cut 1 (before the flush) is left out
    assert _check(str(log), "--check", "false", "--max-failures", "2", "--shrink", "0",
                  "--no-bundle", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == report["failed"] == 2


def test_a_hung_checker_is_killed_with_its_children(log: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    marker = tmp_path / "child-alive"
    checker = f"(sleep 30; touch {marker}) & sleep 30"
    assert _check(str(log), "--check", checker, "--timeout", "0.3", "--state", "cut 6",
                  "--no-bundle") == 1
    assert "timed out after" in capsys.readouterr().out
    left = subprocess.run(["pgrep", "-f", f"touch {marker}"], capture_output=True)
    assert left.returncode == 1, "the checker's background child survived"


@pytest.mark.rig_needs("mkfs")
def test_a_checker_that_leaves_the_device_mounted_fails_and_is_unmounted(
        log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    checker = f"mkfs.ext4 -q -F $RIG_DEV && mount $RIG_DEV {mnt}"
    assert _check(str(log), "--check", checker, "--state", "cut 6", "--no-bundle") == 1
    assert f"left the device mounted at {mnt}" in capsys.readouterr().out
    mounts = Path("/proc/self/mounts").read_text()
    assert str(mnt) not in mounts


def test_record_then_check_a_program_that_marks_its_commits(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "rows.rwlog"
    assert main(["crash", "record", "--log", str(log), "--size", "1M", "--",
                 *marking_writer(4)]) == 0
    check_marked_rows(read_log(log), 4)
    # Each committed row (1..n at mark "row n-1") must be there in every state after the mark.
    checker = ('[ -z "$RIG_MARK" ] || { n=${RIG_MARK#row }; '
               'dd if=$RIG_DEV bs=4096 skip=$n count=1 2>/dev/null | od -An -tx1 | head -1 '
               '| grep -q "$(printf %02x $((n + 1)))"; }')
    assert main(["crash", "check", str(log), "--check", checker, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0 and report["checked"] == report["states"] > 4


@pytest.mark.parametrize("argv, message", [
    (["missing.rwlog", "--check", "true"], "LOG missing.rwlog: no such file"),
    (["LOG", "--check", " "], "--check: empty command"),
    (["LOG", "--check", "true", "--timeout", "0"], "--timeout must be a positive"),
    (["LOG", "--check", "true", "--state", "cut x"], "not a crash state"),
    (["LOG", "--check", "true", "--state", "cut 4"], "the log has no cut 4"),
    (["LOG", "--check", "true", "--after-mark", "nope"], "no user mark 'nope'"),
    (["LOG", "--check", "true", "--shrink", "-1"], "--shrink must be >= 0"),
])
def test_bad_input_is_one_line_and_exit_2(log: Path, argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(log) if a == "LOG" else a for a in argv]
    assert _check(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
