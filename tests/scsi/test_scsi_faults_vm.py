"""SCSI-layer fault rules against scsi_debug's own error injection, in the VM lab (routed with
``--rig-vm``): scsi_debug fails a command; then, with scsi_debug's injection off, a rig rule
with the same sense (or host status, or residual) fails the same command; the ``sg`` node gets
the same outcome, errno and message both times."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Callable, Iterator

import pytest

import rig
from rig.drivers.sg.faults import FaultTransport
from rig.drivers.sg.node import SgNode
from rig.drivers.sg.sgio import SgResult
from rig.scsi import cdb
from rig.scsi.fault_engine import ScsiFaultEngine
from rig.scsi.fault_rules import scsi_rules_from_data

SYSFS = "/sys/bus/pseudo/drivers/scsi_debug"


def _generic(disk: str) -> str:
    names = glob.glob(f"/sys/block/{os.path.basename(disk)}/device/scsi_generic/sg*")
    assert names, f"no sg node for {disk} (modprobe sg)"
    return "/dev/" + os.path.basename(names[0])


def _set(param: str, value: int | str) -> None:
    with open(f"{SYSFS}/{param}", "w") as f:
        f.write(f"{value}\n")


@contextlib.contextmanager
def _injecting(opts: int, every_nth: int = 0) -> Iterator[None]:
    _set("every_nth", every_nth)
    _set("opts", opts)
    try:
        yield
    finally:
        _set("opts", 0)
        _set("every_nth", 0)


def _shape(r: SgResult) -> tuple[object, ...]:
    o = r.outcome
    s = o.sense
    return (o.status, o.host_status, o.driver_status, o.resid, o.errno, len(r.data),
            None if s is None else (s.sense_key, s.asc, s.ascq, s.information),
            o.describe())


def _with_rules(node: SgNode, *tables: dict[str, object]) -> None:
    assert node.dev is not None
    node.dev.transport = FaultTransport(ScsiFaultEngine(scsi_rules_from_data(tables)))


def _read_error(node: SgNode, offset: int, length: int) -> str:
    buf = memoryview(bytearray(length))
    with pytest.raises(OSError) as e:
        node.preadv(offset, length, [buf])
    return f"{e.value.errno}: {e.value}"


@pytest.mark.rig_needs("scsi_debug")
def test_medium_error_range_vs_rule(rig_scsi_debug: Callable[..., str]) -> None:
    # scsi_debug's range (medium_error_start/count) is 0x1234 + 10 by default. Its INFORMATION
    # is max(LBA, 0x1234) whatever the start (OPT_MEDIUM_ERR_ADDR), so the default range is the
    # one where "the first LBA of the command inside the range" is what it reports.
    disk = rig_scsi_debug(dev_size_mb=8, opts=2)
    with rig.open({"driver": "sg", "filename": _generic(disk)}, read_only=True) as blk:
        node = blk.root
        assert isinstance(node, SgNode) and node.dev is not None
        reads = [(0x1235, 1), (0x1230, 8), (0x123D, 2)]
        theirs = [_shape(node.dev.execute(cdb.read(lba, n, 512))) for lba, n in reads]
        their_errors = [_read_error(node, lba * 512, n * 512) for lba, n in reads]
        _set("opts", 0)  # scsi_debug's injection off: the same reads now succeed
        assert node.dev.execute(cdb.read(0x1235, 1, 512)).ok
        _with_rules(node, {"action": "check-condition", "sense": "03/11/00", "opcode": "read",
                           "lba-start": 0x1234, "lba-end": 0x1234 + 10})
        ours = [_shape(node.dev.execute(cdb.read(lba, n, 512))) for lba, n in reads]
        our_errors = [_read_error(node, lba * 512, n * 512) for lba, n in reads]
    assert ours == theirs
    assert our_errors == their_errors
    assert their_errors[0].startswith("61: ")  # ENODATA


@pytest.mark.rig_needs("scsi_debug")
@pytest.mark.parametrize(("opts", "what"), [(0x10, "transport error"),
                                            (0x08, "recovered error"),
                                            (0x100, "short transfer")])
def test_every_nth_injection_vs_rule(rig_scsi_debug: Callable[..., str], opts: int,
                                     what: str) -> None:
    """scsi_debug injects on every command (every_nth=1); the rig answers the first such
    outcome with a rule built from it, and the node sees the same outcome."""
    disk = rig_scsi_debug(dev_size_mb=8)
    with rig.open({"driver": "sg", "filename": _generic(disk)}, read_only=True) as blk:
        node = blk.root
        assert isinstance(node, SgNode) and node.dev is not None
        command = cdb.read(16, 8, 512)
        with _injecting(opts, every_nth=1):
            theirs = node.dev.execute(command)
        clean = node.dev.execute(command)
        assert clean.ok and clean.outcome.resid == 0
        o = theirs.outcome
        if o.ok and not o.resid:
            pytest.skip(f"scsi_debug opts={opts:#x} ({what}) injected nothing on READ(10) "
                        "in this kernel")
        if o.sense is not None:
            s = o.sense
            rule: dict[str, object] = {"action": "check-condition",
                                       "sense": f"{s.sense_key:x}/{s.asc:x}/{s.ascq:x}"}
            rule["information"] = "none" if s.information is None else s.information
            rule["transfer"] = len(theirs.data) > 0  # scsi_debug moves the data, then fails
        elif o.host_status:
            rule = {"action": "transport", "host": o.host_status}
        else:
            rule = {"action": "short", "resid": o.resid}
        _with_rules(node, {**rule, "opcode": "read", "every": 1})
        ours = node.dev.execute(command)
    assert _shape(ours) == _shape(theirs), what
