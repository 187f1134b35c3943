"""A property that fails in a user's suite writes a repro bundle; the run's summary names it, and
``rig replay`` (the installed command) reproduces it, or not on a good device."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DROP_WRITES = """
from rig.core.registry import register_driver
from rig.filters.base import Filter


@register_driver("DRIVER")
class DropWrites(Filter):
    \"\"\"A broken device: every write after the first is silently dropped.\"\"\"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.writes = 0

    def _pwritev(self, offset, length, iov, flags):
        self.writes += 1
        if self.writes == 1:
            super()._pwritev(offset, length, iov, flags)
"""

MACHINE = """
from hypothesis import Phase, settings
from rig.testing.machines import LockstepMachine
import dropwrites

SIZE = 64 * 1024


class Broken(LockstepMachine):
    def make_backends(self, data):
        return [self.open_graph({"driver": "memory", "size": SIZE}),
                self.open_graph({"driver": "DRIVER",
                                 "file": {"driver": "memory", "size": SIZE}})]


TestBroken = Broken.TestCase
TestBroken.settings = settings(max_examples=30, stateful_step_count=10, deadline=None,
                               database=None, phases=[Phase.generate],
                               report_multiple_bugs=False)
"""


def rig_replay(*args: str) -> subprocess.CompletedProcess[str]:
    rig = shutil.which("rig", path=str(Path(sys.executable).parent))
    assert rig is not None, "the rig command is installed next to this python"
    return subprocess.run([rig, "replay", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def bundle(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Any]:
    repro = pytester.path / "bundles"
    monkeypatch.setenv("RIG_REPRO_DIR", str(repro))
    # A new driver name per run: the inner run registers it in this process, for good.
    driver = f"test-plugin-drop-writes-{uuid.uuid4().hex[:8]}"
    pytester.makepyfile(dropwrites=DROP_WRITES.replace("DRIVER", driver),
                        test_machine=MACHINE.replace("DRIVER", driver))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    (path,) = repro.glob("*.json")
    result.stdout.fnmatch_lines([
        "*repro bundle: */bundles/Broken-*.json (re-run it with: rig replay *)",
        "*= blockrig =*",
        "repro bundles written (re-run one with: rig replay BUNDLE):",
        "  bundles/Broken-*.json",
    ])
    return path, json.loads(path.read_text())


def test_the_bundle_holds_the_example(bundle: tuple[Path, Any]) -> None:
    _, data = bundle
    assert data["machine"] == "test_machine.Broken"
    assert data["test"] == "test_machine.py::TestBroken::runTest"
    assert data["backends"][1]["graph"]["driver"].startswith("test-plugin-drop-writes-")
    assert data["failure"]["kind"] in ("disagreement", "mismatch")
    assert sum(op["op"] == "write" for op in data["ops"]) >= 2


def test_rig_replay_reproduces_and_names_the_divergence(bundle: tuple[Path, Any],
                                                        pytester: pytest.Pytester) -> None:
    path, data = bundle
    plugin = str(pytester.path / "dropwrites.py")
    missing = rig_replay(str(path))
    assert missing.returncode == 2
    driver = data["backends"][1]["graph"]["driver"]
    assert f"registered '{driver}' in {plugin}: replay with --import {plugin}" in missing.stderr
    res = rig_replay("--import", plugin, str(path))
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"recorded failure: {data['failure']['message']}" in res.stdout
    assert "reproduced at " in res.stdout and ": backend 1 (memory:65536): " in res.stdout
    good = rig_replay("--graph", '{"driver": "memory", "size": 65536}', str(path))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "not reproduced" in good.stdout


@pytest.mark.rig_needs("loop")
def test_rig_replay_on_another_device(bundle: tuple[Path, Any],
                                      rig_loop: Callable[..., Any]) -> None:
    path, _ = bundle
    dev = rig_loop(1 << 20)
    refused = rig_replay("--device", dev.path, str(path))
    assert refused.returncode == 2 and "the rig did not create it" in refused.stderr
    res = rig_replay("--device", dev.path, "--allow", dev.path, "-t", "none", str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"not reproduced: {len(json.loads(path.read_text())['ops'])} operations" in res.stdout
