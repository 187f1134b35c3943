"""The worked example of docs/crash.md and the README: sqlite on ext4 on an exported device.

``examples/crash/sqlite_app.py`` commits rows and marks each commit; ``sqlite_check.py`` mounts
each crash state and fails when the database is damaged or a committed row is gone. Recorded
and checked here for real (mkfs.ext4, mount, sqlite), with three ``PRAGMA synchronous`` values:

* ``OFF``: nothing is fsynced; a crash loses committed rows, or leaves a malformed database;
* sqlite's default (``FULL``, rollback journal): the database is intact in every state, but the
  last committed row is rolled back when the power goes before the next filesystem commit makes
  the journal's deletion durable (the gap sqlite's documentation gives as the reason for
  ``EXTRA``);
* ``EXTRA``: every state passes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from rig.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "crash"
pytestmark = pytest.mark.rig_needs("loop", "fuse", "mkfs")
ROWS = 2
#: Sampling cuts with more than 3 writes in flight (16 states each) keeps the runs short; a
#: sampled cut's extremes (nothing kept, everything kept) are always checked.
SAMPLING = ("--max-exhaustive", "3", "--samples", "16")


def _record(tmp: Path, synchronous: str | None, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp / f"sqlite-{synchronous or 'default'}.rwlog"
    monkeypatch.setenv("ROWS", str(ROWS))
    if synchronous:
        monkeypatch.setenv("SYNCHRONOUS", synchronous)
    # rig crash mark must be found by the application.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    status = main(["crash", "record", "--log", str(log), "--size", "32M", "--",
                   sys.executable, str(EXAMPLES / "sqlite_app.py")])
    assert status == 0
    return log


def _check(log: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    capsys.readouterr()
    status = main(["crash", "check", str(log), "--after-mark", "ready", *SAMPLING,
                   "--check", f"{sys.executable} {EXAMPLES / 'sqlite_check.py'}", "--json",
                   "--no-bundle", *extra])
    return status, json.loads(capsys.readouterr().out)


def test_synchronous_off_loses_committed_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = _record(tmp_path, "OFF", monkeypatch)
    status, report = _check(log, capsys, "--max-failures", "1", "--shrink", "0")
    assert status == 1 and report["failed"] == 1
    out = report["failures"][0]["output"]
    assert "committed rows lost" in out or "malformed" in out, out


def test_default_is_never_damaged_but_can_lose_the_last_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    log = _record(tmp_path, None, monkeypatch)
    status, report = _check(log, capsys, "--shrink", "1")
    assert status == 1 and report["failed"] >= 1
    for failure in report["failures"]:
        out = failure["output"]
        assert "integrity ok" in out, out
        mark = re.search(r"mark 'committed (\d+)'", out)
        assert mark is not None, out
        # Only the newest promise is broken: the rows before it are all there.
        assert f"committed rows lost: [{mark.group(1)}]" in out, out
    # No in-flight write needs dropping: the durable state at the cut already lacks the row.
    assert report["failures"][0]["shrunk"]["dropped"] == []


def test_synchronous_extra_passes_every_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = _record(tmp_path, "EXTRA", monkeypatch)
    status, report = _check(log, capsys)
    assert status == 0, report["failures"][:1]
    assert report["checked"] == report["states"] > 40
