"""The README's example test file runs, with every test passing on a machine with loop devices,
mkfs and a lab disk (a loop device standing in)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "test_with_blockrig.py"


def test_the_readme_shows_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using blockrig in your test suite", 1)[1]
    block = section.split("```python\n", 1)[1].split("```\n", 1)[0]
    assert block == EXAMPLE.read_text()


@pytest.mark.rig_needs("loop", "mkfs")
def test_the_example_runs(pytester: pytest.Pytester, rig_loop: Callable[..., Any]) -> None:
    pytester.makepyfile(test_with_blockrig=EXAMPLE.read_text())
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=5, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * rig_needs: missing lab_disk: *"])

    disk = rig_loop(16 << 20)
    lab = pytester.makefile(".toml", lab=f'lease_dir = "leases"\n[[disk]]\nname = "l"\n'
                            f'path = "{disk.path}"\nuses = ["scratch"]\ndestructive = true\n')
    result = pytester.runpytest("--rig-lab", str(lab), "--rig-allow-destructive")
    result.assert_outcomes(passed=6)
    with open(disk.backing_file, "rb") as f:
        assert f.read(4096) == b"\xa5" * 4096
