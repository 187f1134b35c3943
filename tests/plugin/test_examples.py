"""The example files of the plugin's newer fixtures run as the README says: the crash example
(``rig_crash``) and the CD-ROM example on the loop-device stand-in here, the write-cache
example skipping with its reason where there is no SCSI disk. On real SCSI devices they run in
the VM lab (tests/scsi/test_examples_vm.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.fixtures import capabilities

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
#: labgrid's pytest plugin starts its step logger once per process: not in an inner run.
INNER = ("-p", "no:cacheprovider", "-p", "no:labgrid", "-rs")


def _run(pytester: pytest.Pytester, name: str) -> pytest.RunResult:
    pytester.makepyfile(**{name: (EXAMPLES / f"{name}.py").read_text()})
    return pytester.runpytest(*INNER)


@pytest.mark.rig_needs("loop", "fuse")
def test_the_crash_example_runs(pytester: pytest.Pytester) -> None:
    _run(pytester, "test_crash_consistency").assert_outcomes(passed=2)


@pytest.mark.rig_needs("loop")
def test_the_cdrom_example_runs_on_the_stand_in(pytester: pytest.Pytester) -> None:
    if not capabilities.missing("cdrom"):
        pytest.skip("this machine has a CD drive: the example would use it, not the stand-in")
    result = _run(pytester, "test_cdrom_media")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*: /dev/loop* (removable_loop)"])


def test_the_write_cache_example_skips_without_a_scsi_disk(pytester: pytest.Pytester) -> None:
    if not capabilities.missing("sg"):
        pytest.skip("this machine has SCSI generic devices (tests/scsi/test_examples_vm.py)")
    result = _run(pytester, "test_sg_write_cache")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["SKIPPED * rig_needs: missing sg: *"])


def test_the_readme_lists_the_fixtures_and_their_examples() -> None:
    readme = (ROOT / "README.md").read_text()
    for fixture, example in (("rig_sg", "test_sg_write_cache.py"),
                             ("rig_cdrom", "test_cdrom_media.py"),
                             ("rig_crash", "test_crash_consistency.py")):
        assert f"| `{fixture}(" in readme, fixture
        assert f"examples/{example}" in readme and (EXAMPLES / example).is_file(), example
