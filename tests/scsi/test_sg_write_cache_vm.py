"""WCE on a real disk (run in the VM lab with ``--rig-vm``: QEMU 7.2's ``scsi-hd``, Linux 6.1's
sd): ``rig sg wce`` reads the Caching page as sg3_utils' ``sg_modes`` does and sets it both
ways; the saved values QEMU cannot keep are refused before anything is sent; and the kernel's
view (``queue/write_cache``) goes stale after a MODE SELECT unless sd is told to rescan, which
``set_write_cache`` does. scsi_debug's page round-trips too."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from rig.fixtures.scsi_fixtures import SgDisk
from rig.scsi import cdb
from rig.scsi.mode_pages import caching_select


def rig_sg_wce(*args: str) -> tuple[int, Any, str]:
    """``rig sg wce ARGS --json`` in this process (a new interpreter costs seconds under TCG)."""
    from rig.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["sg", "wce", *args, "--json"])
    text = out.getvalue()
    return status, json.loads(text) if text.strip() else None, err.getvalue()


@pytest.mark.rig_needs("sg")
def test_rig_sg_wce_agrees_with_sg_modes_and_round_trips(rig_sg: Callable[..., SgDisk]) -> None:
    sg = rig_sg()
    status, before, _ = rig_sg_wce(sg.generic)
    assert status == 0 and before["changeable"] is True and before["savable"] is False
    assert before["saved"] is None  # QEMU: 05/39/00 saving parameters not supported
    if shutil.which("sg_modes"):
        raw = subprocess.run(["sg_modes", "--page=8", "--raw", sg.generic], capture_output=True,
                             check=True).stdout
        assert bytes.fromhex(before["page"]) == raw[-20:]
    for wce in (not before["wce"], before["wce"]):
        status, after, _ = rig_sg_wce("--on" if wce else "--off", sg.generic, "--allow", sg.disk)
        assert status == 0 and after["wce"] is wce and sg.node.write_cache is wce
        assert after["kernel"] == ("write back" if wce else "write through")
    status, _, err = rig_sg_wce("--on", "--save", sg.generic, "--allow", sg.disk)
    assert status == 1 and "cannot save its Caching page (PS=0)" in err
    status, _, err = rig_sg_wce("--off", sg.generic)  # the safety gate: not allowed
    assert status == 15 and "refusing to write to" in err
    assert sg.node.write_cache is before["wce"]


@pytest.mark.rig_needs("sg")
def test_the_kernel_sees_a_change_only_after_a_rescan(rig_sg: Callable[..., SgDisk]) -> None:
    sg = rig_sg()
    sg.node.set_write_cache(False)
    node = sg.node
    node._run(cdb.mode_select(caching_select(node.caching(), wce=True))).check()  # no rescan
    assert node.write_cache is True and node.kernel_write_cache() == "write through"
    node.set_write_cache(False)
    node.set_write_cache(True)
    assert node.kernel_write_cache() == "write back"


@pytest.mark.rig_needs("scsi_debug")
def test_scsi_debug_write_cache_round_trips(rig_scsi_debug: Callable[..., str]) -> None:
    """A second implementation: scsi_debug's Caching page (WCE=1 by default, changeable), which
    reports "mode parameters changed" (06/2A/01) to the command after a MODE SELECT."""
    import rig
    from rig.fixtures.scsi_fixtures import generic_node

    disk = rig_scsi_debug(dev_size_mb=8)
    generic = generic_node(disk)
    assert generic is not None
    with rig.open({"driver": "sg", "filename": generic, "x-allow": disk}, cache="none") as blk:
        node = blk.root
        assert node.write_cache is True and node.kernel_write_cache() == "write back"
        node.set_write_cache(False)
        assert node.write_cache is False and node.kernel_write_cache() == "write through"
        blk.pwrite(0, b"\x11" * 512)  # the next commands are not upset by the unit attention
        assert blk.pread(0, 512) == b"\x11" * 512
        node.set_write_cache(True)
        assert node.write_cache is True and node.kernel_write_cache() == "write back"
