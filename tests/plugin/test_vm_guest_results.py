"""``--rig-vm`` end to end: routed tests run in one real VM lab guest, and their pass, failure
(with the guest's message) and skip come back as the host's own results."""

from __future__ import annotations

import pytest

from rig.drivers.vm.kernel import cache_dir

pytestmark = pytest.mark.rig_needs("vm")
#: Read before pytester points HOME at its own directory.
KERNEL_CACHE = cache_dir()


def test_guest_outcomes_become_host_results(pytester: pytest.Pytester,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIG_VM_RUN_ID", raising=False)
    monkeypatch.setenv("RIG_VM_CACHE", str(KERNEL_CACHE))
    pytester.makepyfile("""
        import os
        import pytest

        @pytest.mark.rig_needs("scsi_debug")
        def test_passes_in_the_guest(rig_scsi_debug):
            path = rig_scsi_debug(sector_size=4096, dev_size_mb=4)
            name = os.path.basename(path)
            with open(f"/sys/class/block/{name}/queue/logical_block_size") as f:
                assert f.read().strip() == "4096"

        @pytest.mark.rig_needs("null_blk")
        def test_fails_in_the_guest():
            assert os.uname().release == "no such kernel", "guest kernel " + os.uname().release

        @pytest.mark.rig_needs("sg")
        def test_skips_in_the_guest():
            pytest.skip("skipped by the guest on purpose")

        @pytest.mark.rig_needs("cdrom")
        def test_sees_the_lab_cd():
            with open("/dev/sr0", "rb") as f:
                assert f.read(18) == b"BLOCKRIG-VM-LAB-CD"
    """)
    result = pytester.runpytest_subprocess("--rig-vm", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "*in the VM lab (call):*",
        "*guest kernel 6.1.*",
    ])
    result.stdout.fnmatch_lines(["SKIPPED * in the VM lab: skipped by the guest on purpose"])
    result.stdout.fnmatch_lines([
        "  scsi_debug: 1 test(s)",
        "    *::test_passes_in_the_guest: /dev/sd* (4 MiB, 4096-byte sectors) (in the VM lab)",
    ])
