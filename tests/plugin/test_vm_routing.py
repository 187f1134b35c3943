"""``--rig-vm`` routing: which tests go to the VM lab's guest, what happens when the lab cannot
run here (a skip saying why, or a failure with RIG_REQUIRE_VM), and that a routed test's
fixtures are not set up on the host. The real guest run is in ``test_vm_guest_results.py``."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rig.drivers.procs import locked

TESTS = """
    import pytest

    @pytest.fixture
    def host_only():
        raise AssertionError("a routed test's fixtures must not be set up on the host")

    @pytest.mark.rig_needs("scsi_debug")
    def test_routed(host_only):
        pass

    @pytest.mark.rig_needs("null_blk")
    def test_routed_but_deselected():
        pass

    @pytest.mark.rig_needs("root")
    def test_stays_here():
        pass
"""


@pytest.fixture
def no_kernel(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = pytester.mkdir("empty-vm-cache")
    monkeypatch.setenv("RIG_VM_CACHE", str(empty))
    monkeypatch.delenv("RIG_VM_RUN_ID", raising=False)
    monkeypatch.delenv("RIG_REQUIRE_VM", raising=False)
    pytester.makepyfile(TESTS)


@pytest.mark.rig_needs("root")
def test_without_a_lab_routed_tests_skip_saying_why(pytester: pytest.Pytester,
                                                    no_kernel: None) -> None:
    result = pytester.runpytest_subprocess("--rig-vm", "-rs", "-k", "not deselected")
    result.assert_outcomes(passed=1, skipped=1, deselected=1)
    result.stdout.fnmatch_lines(["SKIPPED * the VM lab cannot run here: *"])
    result.stdout.no_fnmatch_line("*routed test's fixtures*")


@pytest.mark.rig_needs("root")
def test_rig_require_vm_turns_that_skip_into_a_failure(pytester: pytest.Pytester,
                                                       no_kernel: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIG_REQUIRE_VM", "1")
    result = pytester.runpytest_subprocess("--rig-vm", "-k", "not deselected")
    result.assert_outcomes(passed=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*the VM lab did not report this test*",
                                 "*the VM lab could not run: *"])


def test_without_the_option_nothing_is_routed(pytester: pytest.Pytester, no_kernel: None) -> None:
    result = pytester.runpytest_subprocess("-rs")
    result.stdout.fnmatch_lines(["SKIPPED * rig_needs: missing scsi_debug: *pytest --rig-vm*"])
    result.stdout.no_fnmatch_line("*VM lab cannot run*")


ORDER = """
    import pytest

    @pytest.mark.rig_needs("scsi_debug")
    def test_a_routed():
        pass

    def test_b_host():
        pass

    @pytest.mark.rig_needs("vm")
    def test_c_boots_its_own_guest():
        pass

    @pytest.mark.rig_needs("cdrom")
    def test_d_routed():
        pass

    def test_e_host():
        pass
"""


def test_guest_booting_tests_run_first_and_routed_tests_last(pytester: pytest.Pytester,
                                                             no_kernel: None) -> None:
    """The order that lets one xdist worker run the routed guest while the other runs the
    host's tests, and the routed tests find their results ready (docs/vm-lab.md)."""
    pytester.makepyfile(test_order=ORDER)
    result = pytester.runpytest_subprocess("--rig-vm", "--collect-only", "-q",
                                           "test_order.py")
    names = [line.split("::")[-1] for line in result.stdout.lines if "::test_" in line]
    assert names == ["test_c_boots_its_own_guest", "test_b_host", "test_e_host",
                     "test_a_routed", "test_d_routed"]
    # Without --rig-vm nothing is routed: only the booting test moves up.
    result = pytester.runpytest_subprocess("--collect-only", "-q", "test_order.py")
    names = [line.split("::")[-1] for line in result.stdout.lines if "::test_" in line]
    assert names == ["test_c_boots_its_own_guest", "test_a_routed", "test_b_host",
                     "test_d_routed", "test_e_host"]


def test_a_lock_held_elsewhere_is_not_waited_for(tmp_path: Path) -> None:
    """The worker that does not get the guest's lock goes on with its own tests."""
    lock = tmp_path / "lock"
    with locked(lock) as mine:
        assert mine is True
        got: list[bool] = []

        def other_worker() -> None:  # its own open file, so its own flock, as another process
            with locked(lock, wait=False) as held:
                got.append(held)

        t = threading.Thread(target=other_worker)
        t.start()
        t.join(5)
        assert got == [False]
    with locked(lock, wait=False) as held:
        assert held is True
