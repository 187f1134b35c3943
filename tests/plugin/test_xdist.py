"""Under pytest-xdist, workers never share a loop device or a lab disk, and the controller's
summary still lists what the workers used."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rig.drivers.loop import loops_for_backing_file

INNER = """
import json, os, time
from pathlib import Path

SHARED = Path(os.environ["RIG_TEST_SHARED"])


def wait_for(pattern, n):
    deadline = time.monotonic() + 30
    while len(list(SHARED.glob(pattern))) < n:
        assert time.monotonic() < deadline, f"the other worker never arrived ({pattern})"
        time.sleep(0.01)


def test_loop(rig_loop, worker_id):
    dev = rig_loop("8M")
    (SHARED / f"loop-{worker_id}.json").write_text(json.dumps([dev.path, dev.backing_file]))
    wait_for("loop-*.json", 2)  # both workers hold their device now


def test_lab(rig_lab_disk, worker_id):
    disk = rig_lab_disk("scratch")
    start = time.monotonic()
    with disk.open(cache="none") as blk:
        blk.pwrite(0, worker_id.encode().ljust(512, b"."))
        time.sleep(0.3)
        assert blk.pread(0, 512) == worker_id.encode().ljust(512, b".")
    (SHARED / f"lab-{worker_id}.json").write_text(json.dumps([start, time.monotonic()]))
"""


@pytest.mark.rig_needs("loop")
def test_workers_never_share_devices(pytester: pytest.Pytester, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     rig_loop: Callable[..., Any]) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("RIG_TEST_SHARED", str(shared))
    disk = rig_loop(4 << 20)
    lab = pytester.makefile(".toml", lab=f'lease_dir = "{tmp_path}/leases"\n[[disk]]\n'
                            f'name = "one"\npath = "{disk.path}"\ndestructive = true\n')
    pytester.makepyfile(test_parallel=INNER)
    # --dist each: every test runs on both workers at the same time.
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each", "-p", "no:randomly",
                                           "--rig-lab", str(lab), "--rig-allow-destructive")
    result.assert_outcomes(passed=4)

    loops = [json.loads(p.read_text()) for p in sorted(shared.glob("loop-*.json"))]
    assert len(loops) == 2 and loops[0][0] != loops[1][0], loops
    for _, backing in loops:
        assert loops_for_backing_file(backing) == []

    spans = sorted(json.loads(p.read_text()) for p in shared.glob("lab-*.json"))
    assert len(spans) == 2
    assert spans[0][1] <= spans[1][0], f"both workers held the lab disk at once: {spans}"

    result.stdout.fnmatch_lines([
        "*= blockrig =*", "real hardware: 2 test(s)", "  lab disk: 1 test(s)",
        f"    test_parallel.py::test_lab: one {disk.path} (read-write), one {disk.path} "
        "(read-write)",
        "  loop device: 1 test(s)", "    test_parallel.py::test_loop: /dev/loop*, /dev/loop*",
    ])
