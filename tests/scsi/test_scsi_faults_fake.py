"""SCSI-layer fault rules, on the host, over a FAKE SCSI target (tests/scsi/fake_scsi.py): the
rules answer at the SG_IO call site, and the answer goes through the same decode and errno path
as the fake's own (device-shaped) answer, so the node under test cannot tell them apart. The same
comparison against scsi_debug's own injection runs in the VM lab (test_scsi_faults_vm.py)."""

from __future__ import annotations

import errno
import time

import pytest

import rig
from rig.drivers.sg import node as sg_node_module
from rig.drivers.sg.faults import FaultTransport
from rig.drivers.sg.node import SgNode
from rig.drivers.sg.sgio import sg_io
from rig.errors import ConfigError
from rig.faults.engine import FaultEngine
from rig.faults.rules import Rule, SetState
from rig.scsi import cdb
from rig.scsi.fault_engine import ScsiFaultEngine, command_blocks
from rig.scsi.fault_rules import CheckCondition, scsi_rule_from_dict, scsi_rules_from_data
from tests.scsi.fake_scsi import FakeScsiTarget, fake_device, open_fake_node

BS = 512


def _engine(*tables: dict[str, object], seed: int = 0) -> ScsiFaultEngine:
    return ScsiFaultEngine(scsi_rules_from_data(tables), seed=seed)


def _node_with_rules(monkeypatch: pytest.MonkeyPatch, target: FakeScsiTarget,
                     engine: ScsiFaultEngine) -> SgNode:
    node = open_fake_node(monkeypatch, target)
    assert node.dev is not None
    node.dev.transport = FaultTransport(engine, below=target)
    node.scsi_faults = engine
    return node


def _read_error(node: SgNode, lba: int, blocks: int = 1) -> OSError:
    buf = memoryview(bytearray(blocks * BS))
    with pytest.raises(OSError) as e:
        node.preadv(lba * BS, blocks * BS, [buf])
    return e.value


# ------------------------------------------------------------------------- rules as data
def test_rule_tables_parse_and_name_the_key() -> None:
    rule = scsi_rule_from_dict({"action": "check-condition", "sense": "03/11/00",
                                "opcode": ["read", "0x2a"], "lba-start": "0x1234",
                                "lba-end": 0x123E, "probability": "50%"})
    assert isinstance(rule.action, CheckCondition)
    assert (rule.action.key, rule.action.asc, rule.action.ascq) == (3, 0x11, 0)
    assert rule.opcodes == {0x08, 0x28, 0xA8, 0x88, 0x2A}
    assert rule.span == (0x1234, 0x123E) and rule.probability == 0.5
    with pytest.raises(ConfigError, match=r"SCSI rule 0.*'sense'"):
        scsi_rule_from_dict({"action": "check-condition", "sense": "3-11-0"})
    with pytest.raises(ConfigError, match="'host': unknown host status"):
        scsi_rule_from_dict({"action": "transport", "host": "DID_NOPE"})
    with pytest.raises(ConfigError, match="'opcode'"):
        scsi_rule_from_dict({"action": "delay", "seconds": 1, "opcode": "frobnicate"})
    with pytest.raises(ConfigError, match="'lba-end'"):
        scsi_rule_from_dict({"action": "short", "lba-start": 5, "lba-end": 5})
    with pytest.raises(ConfigError, match="unknown key"):
        scsi_rule_from_dict({"action": "short", "sense": "03/11/00"})


def test_lba_of_each_cdb_form() -> None:
    assert command_blocks(cdb.read(0x1234, 8, BS).cdb) == (0x1234, 8)
    assert command_blocks(cdb.read(1 << 33, 8, BS).cdb) == (1 << 33, 8)
    assert command_blocks(cdb.write(7, bytes(2 * BS), BS).cdb) == (7, 2)
    assert command_blocks(cdb.synchronize_cache().cdb) == (0, 0)  # 0 blocks: to the end
    assert command_blocks(bytes([0x08, 0x01, 0x02, 0x03, 0x00, 0x00])) == (0x10203, 256)
    assert command_blocks(cdb.test_unit_ready().cdb) is None


# ------------------------------------------------------------------------- answers
def test_medium_error_rule_is_indistinguishable_from_the_device(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FAKE target: the target itself fails LBA 0x1234 with 03/11/00 on one node; a rule does the
    same on another. Errno, message and the decoded outcome are the same."""
    device_says = FakeScsiTarget(blocks=0x2000)
    device_says.errors = {0x1234 + i: (0x03, 0x11, 0x00) for i in range(10)}
    real_shaped = open_fake_node(monkeypatch, device_says)
    rule_says = _node_with_rules(monkeypatch, FakeScsiTarget(blocks=0x2000), _engine(
        {"action": "check-condition", "sense": "03/11/00", "opcode": "read",
         "lba-start": 0x1234, "lba-end": 0x1234 + 10}))
    for lba, blocks in ((0x1234, 1), (0x1230, 8), (0x123D, 1)):
        a, b = _read_error(real_shaped, lba, blocks), _read_error(rule_says, lba, blocks)
        assert a.errno == b.errno == errno.ENODATA
        assert str(a) == str(b)
        assert "Unrecovered read error [3/11/00]" in str(b)
    assert real_shaped.dev is not None and rule_says.dev is not None
    r1 = real_shaped.dev.execute(cdb.read(0x1230, 8, BS))
    r2 = rule_says.dev.execute(cdb.read(0x1230, 8, BS))
    assert r1.outcome == r2.outcome and r1.sense_bytes == r2.sense_bytes
    assert r2.outcome.sense is not None and r2.outcome.sense.information == 0x1234
    buf = memoryview(bytearray(BS))
    rule_says.preadv(0x1233 * BS, BS, [buf])  # next to the range: fine


@pytest.mark.parametrize(("sense", "want"), [
    ("02/3A/00", errno.EIO), ("06/28/00", errno.EIO), ("06/29/00", errno.EIO),
    ("03/11/00", errno.ENODATA), ("07/27/07", errno.ENOSPC), ("05/21/00", errno.EREMOTEIO)])
def test_sense_answers_end_with_the_kernels_errno(monkeypatch: pytest.MonkeyPatch, sense: str,
                                                  want: int) -> None:
    node = _node_with_rules(monkeypatch, FakeScsiTarget(), _engine(
        {"action": "check-condition", "sense": sense, "opcode": ["read", "write"]}))
    err = _read_error(node, 3)
    assert err.errno == want
    assert f"[{sense[1]}/{sense[3:5].upper()}/{sense[6:].upper()}]" in str(err).upper()


@pytest.mark.parametrize(("host", "name"), [("DID_TIME_OUT", "DID_TIME_OUT"),
                                            ("DID_NO_CONNECT", "DID_NO_CONNECT")])
def test_transport_failures(monkeypatch: pytest.MonkeyPatch, host: str, name: str) -> None:
    node = _node_with_rules(monkeypatch, FakeScsiTarget(), _engine(
        {"action": "transport", "host": host, "opcode": "read"}))
    err = _read_error(node, 0)
    assert err.errno == errno.EIO and name in str(err)  # Linux 6.1: both end as EIO


def test_short_transfer_reports_the_residual(monkeypatch: pytest.MonkeyPatch) -> None:
    target = FakeScsiTarget()
    engine = _engine({"action": "short", "resid": BS, "opcode": "read", "nth": 2})
    r_ok = sg_io(-1, cdb.read(0, 4, BS), transport=FaultTransport(engine, below=target))
    r_short = sg_io(-1, cdb.read(0, 4, BS), transport=FaultTransport(engine, below=target))
    assert r_ok.outcome.resid == 0 and len(r_ok.data) == 4 * BS
    assert r_short.ok and r_short.outcome.resid == BS and len(r_short.data) == 3 * BS
    node = _node_with_rules(monkeypatch, FakeScsiTarget(), _engine(
        {"action": "short", "resid": BS, "opcode": "read"}))
    err = _read_error(node, 0, 4)
    assert err.errno == errno.EIO and "short transfer" in str(err)


def test_check_condition_after_the_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """``transfer``: the data moves, then CHECK CONDITION (RECOVERED ERROR 01/17/01 here)."""
    target = FakeScsiTarget()
    assert target.data is not None
    target.data[:BS] = b"\x5a" * BS
    engine = _engine({"action": "check-condition", "sense": "01/17/01", "transfer": True})
    r = sg_io(-1, cdb.read(0, 1, BS), transport=FaultTransport(engine, below=target))
    assert not r.ok and r.outcome.resid == 0 and r.data == b"\x5a" * BS
    assert r.outcome.sense is not None and r.outcome.sense.matches(1, 0x17, 1)
    assert r.outcome.sense.information == 0


def test_latency(monkeypatch: pytest.MonkeyPatch) -> None:
    node = _node_with_rules(monkeypatch, FakeScsiTarget(), _engine(
        {"action": "delay", "seconds": "80ms", "opcode": "read", "lba-start": 10}))
    buf = memoryview(bytearray(BS))
    t0 = time.monotonic()
    node.preadv(0, BS, [buf])
    fast = time.monotonic() - t0
    t0 = time.monotonic()
    node.preadv(10 * BS, BS, [buf])
    assert time.monotonic() - t0 >= 0.08 > fast


# ------------------------------------------------------------------------- predicates
def test_nth_every_once_and_state(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(
        {"name": "arm", "action": "set-state", "new-state": 2, "opcode": "read", "nth": 3},
        {"name": "ua", "action": "check-condition", "sense": "06/29/00", "state": 2,
         "once": True},
        {"name": "every", "action": "check-condition", "sense": "03/11/00", "opcode": "read",
         "every": 4})
    node = _node_with_rules(monkeypatch, FakeScsiTarget(), engine)
    outcomes = []
    buf = memoryview(bytearray(BS))
    for _ in range(8):
        try:
            node.preadv(0, BS, [buf])
            outcomes.append("ok")
        except OSError as e:
            outcomes.append("ua" if "29/00" in str(e) else "medium")
    # read 3 arms state 2 (rules see the state from before the command, as in the block
    # layer); read 4: the once-rule comes first in rule order and answers with the UA, so the
    # every-4th rule (which passed too) does not fire; read 8: every 4th
    assert outcomes == ["ok", "ok", "ok", "ua", "ok", "ok", "ok", "medium"]
    assert engine.counters() == {"arm": 1, "ua": 1, "every": 1}
    assert engine.hits()["every"] == 8
    assert [e.action for e in engine.log] == ["set-state", "check-condition", "check-condition"]


def test_probability_is_seeded_and_reproducible() -> None:
    def pattern(seed: int) -> list[bool]:
        engine = _engine({"action": "check-condition", "sense": "03/11/00",
                          "probability": 0.3}, seed=seed)
        target = FakeScsiTarget()
        return [sg_io(-1, cdb.read(0, 1, BS), transport=FaultTransport(engine, below=target)
                      ).ok for _ in range(60)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 5 < pattern(7).count(False) < 35


def test_block_layer_rules_and_scsi_rules_share_state_and_log(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A block-layer (faults engine) rule switches the state; a SCSI rule waits for it; one log."""
    block = FaultEngine([Rule(SetState(), name="to-2", op="write", new_state=2)], seed=5)
    scsi = _engine({"name": "nr", "action": "check-condition", "sense": "02/3A/00",
                    "state": 2})
    scsi.join(block)
    node = _node_with_rules(monkeypatch, FakeScsiTarget(), scsi)
    buf = memoryview(bytearray(BS))
    node.preadv(0, BS, [buf])
    block.decide(1, "write", 0, BS)  # what the faults filter asks for a write
    assert block.state == 2
    assert _read_error(node, 0).errno == errno.EIO
    assert [e.rule for e in block.log] == ["to-2", "nr"]
    assert block.log[1].op == "scsi-28"


def test_blkdebug_and_scsi_rules_in_one_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """One configuration: blkdebug (block-layer events) over the sg node with SCSI rules. The
    sg node sits on the FAKE target (SgDevice replaced; /dev/null only passes the node check)."""
    target = FakeScsiTarget()
    monkeypatch.setattr(sg_node_module, "SgDevice",
                        lambda path, write, timeout_ms: fake_device(target))
    monkeypatch.setattr(sg_node_module, "block_device_of", lambda path: None)
    spec = {
        "driver": "raw", "file": {
            "driver": "blkdebug",
            "inject-error.0.event": "read_aio", "inject-error.0.errno": "28",
            "inject-error.0.sector": "0", "inject-error.0.once": "on",
            "image": {"driver": "sg", "filename": "/dev/null",
                      "scsi-faults.0.action": "check-condition",
                      "scsi-faults.0.sense": "03/11/00",
                      "scsi-faults.0.lba-start": "100", "scsi-faults.0.lba-end": "101"}}}
    with rig.open(spec, read_only=True) as blk:
        with pytest.raises(OSError) as e:
            blk.pread(0, BS)
        assert e.value.errno == errno.ENOSPC  # blkdebug's, once
        assert blk.pread(0, BS) == bytes(BS)
        with pytest.raises(OSError) as e:
            blk.pread(100 * BS, BS)
        assert e.value.errno == errno.ENODATA  # the SCSI rule's, through the decode path
        sg = next(n for n in blk.root.walk() if isinstance(n, SgNode))
        assert sg.scsi_faults is not None and sg.scsi_faults.counters() == {"scsi-0": 1}


def test_scsi_rules_from_a_file(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "scsi.toml"
    path.write_text('[[scsi]]\nname = "nr"\naction = "check-condition"\nsense = "02/3a/00"\n'
                    'opcode = "test-unit-ready"\n')
    from rig.core.options import Options
    from rig.drivers.sg.faults import engine_from_options

    engine = engine_from_options(Options({"scsi-faults": str(path), "scsi-faults-seed": 3}))
    assert engine is not None and engine.seed == 3
    r = sg_io(-1, cdb.test_unit_ready(), transport=FaultTransport(engine,
                                                                  below=FakeScsiTarget()))
    assert r.outcome.sense is not None and r.outcome.sense.matches(2, 0x3A, 0)
    bad = Path(str(tmp_path)) / "bad.toml"
    bad.write_text('[[scsi]]\naction = "check-condition"\n')
    with pytest.raises(ConfigError, match="'sense'"):
        engine_from_options(Options({"scsi-faults": str(bad)}))


# ------------------------------------------------------- issue 18: tracebacks found by fuzzing
def test_off_means_off_for_descriptor_and_transfer() -> None:
    """They were read with bool(), so the string 'off' meant true."""
    rule = scsi_rule_from_dict({"action": "check-condition", "sense": "03/11/00",
                                "descriptor": "off", "transfer": "off"})
    assert isinstance(rule.action, CheckCondition)
    assert rule.action.descriptor is False and rule.action.transfer is False
    with pytest.raises(ConfigError, match="'descriptor': expected true or false"):
        scsi_rule_from_dict({"action": "check-condition", "sense": "03/11/00",
                             "descriptor": "sometimes"})


@pytest.mark.parametrize(("table", "key"), [
    ({"action": {"a": 1}}, "action"),                             # TypeError: unhashable
    ({"action": "check-condition", "sense": [[], 1, 2]}, "sense"),  # int([])
    ({"action": "delay", "seconds": 1e300}, "seconds"),            # OverflowError at a command
    ({"action": "short", "resid": "1" * 5000}, "resid"),
    ({"action": "short", "lba-start": "²"}, "lba-start"),
    ({"action": "short", "name": ["x"]}, "name"),
])
def test_scsi_values_that_crashed_are_config_errors(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^SCSI rule 0.*'{key}'"):
        scsi_rule_from_dict(table)


def test_scsi_rule_files_nested_deep_or_flattened_badly(tmp_path: object) -> None:
    from pathlib import Path

    from rig.core.options import Options
    from rig.drivers.sg.faults import engine_from_options

    deep = Path(str(tmp_path)) / "deep.json"
    deep.write_text('{"scsi": ' + "[" * 1000 + "]" * 1000 + "}")
    with pytest.raises(ConfigError, match="nested more than"):
        engine_from_options(Options({"scsi-faults": str(deep)}))
    with pytest.raises(ConfigError, match="both as a value and a list"):
        engine_from_options(Options({"scsi-faults.0.action": "short",
                                     "scsi-faults.0.opcode": "read",
                                     "scsi-faults.0.opcode.0": "write"}))
    with pytest.raises(ConfigError, match=r"expected scsi-faults\.N\.KEY"):
        engine_from_options(Options({"scsi-faults.².action": "short"}))
