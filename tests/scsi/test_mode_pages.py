"""The Caching mode page: found in MODE SENSE data (strictly: bad or short data is one error),
sent back with MODE SELECT as sdparm does, and the sg node's ``write_cache`` /
``set_write_cache`` over a FAKE SCSI disk (tests/scsi/fake_scsi.py, answering as QEMU's
scsi-hd does). The real disk is in the VM lab: tests/scsi/test_sg_write_cache_vm.py."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.drivers.safety import AllowList
from rig.errors import UnsafeDeviceError
from rig.scsi import cdb
from rig.scsi.fields import ScsiDataError
from rig.scsi.mode_pages import PageControl, caching_select, find_caching_page
from rig.scsi.responses import CACHING_PAGE, encode_mode_sense
from tests.fuzzing import fuzz, one_line
from tests.scsi.fake_scsi import FakeScsiTarget, open_fake_node

#: What QEMU 7.2's scsi-hd answered in the VM lab to MODE SENSE(10), DBD=1, page 08h (WCE=1).
QEMU_CURRENT = bytes.fromhex("001a0000 00000000 0812 0400" + "00" * 16)


def test_the_caching_page_of_a_qemu_disk() -> None:
    page = find_caching_page(QEMU_CURRENT)
    assert page.wce and not page.rcd and not page.savable
    assert page.page == QEMU_CURRENT[8:] and page.fields["page_length"] == 0x12


@pytest.mark.parametrize("ten", [True, False])
def test_the_page_is_found_after_block_descriptors_and_other_pages(ten: bool) -> None:
    other = bytes([0x0A, 0x0A]) + bytes(10)
    caching = CACHING_PAGE.encode(page_length=0x12, wce=1, rcd=1, ps=1,
                                  number_of_cache_segments=7)
    data = encode_mode_sense({"medium_type": 3}, [{"density_code": 0, "blocks": 8,
                                                   "block_length": 512}], [other, caching],
                             ten=ten)
    page = find_caching_page(data, ten=ten)
    assert page.wce and page.rcd and page.savable and page.medium_type == 3
    assert page.fields["number_of_cache_segments"] == 7


@pytest.mark.parametrize(("data", "message"), [
    (b"\x00\x1a\x00", "3 bytes, shorter than its 8-byte header"),
    (bytes(18), "the header's mode data length says 2 bytes in all, less"),
    (QEMU_CURRENT[:20], "the header says 28 bytes, the device sent 20 (cut short)"),
    (bytes.fromhex("000a0000 0000 0010") + bytes(4), "block descriptors of 16 bytes run past"),
    (bytes.fromhex("00120000 00000000 0a0a") + bytes(10), "no Caching page (08h) (pages found: "
     "0ah)"),
    (bytes.fromhex("00060000 00000000"), "no Caching page (08h) (no page at all)"),
    (bytes.fromhex("00090000 00000000 0812 04"), "the Caching page (08h) is cut short: 3 of "
     "20"),
    (bytes.fromhex("00090000 00000000 0800 04"), "cut short: 2 of 3 bytes"),
    (bytes.fromhex("001c0000 00000000 4800 0012") + bytes(18), "subpage format"),
])
def test_bad_or_short_mode_data_is_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ScsiDataError) as e:
        find_caching_page(data)
    assert message in str(e.value) and str(e.value).startswith("MODE SENSE(10) data: ")
    one_line(e.value)


@fuzz
@given(st.one_of(st.binary(max_size=300),
                 st.builds(lambda cut, at, b: bytearray(QEMU_CURRENT)[:cut] + bytes([b]) * at,
                           st.integers(0, 40), st.integers(0, 40), st.integers(0, 255)),
                 st.builds(lambda i, b: QEMU_CURRENT[:i] + bytes([b]) + QEMU_CURRENT[i + 1:],
                           st.integers(0, 27), st.integers(0, 255))),
       st.booleans())
def test_garbage_mode_data(data: bytes, ten: bool) -> None:
    try:
        page = find_caching_page(bytes(data), ten=ten)
    except ScsiDataError as e:
        one_line(e)
        return
    assert page.page[0] & 0x3F == 0x08 and len(page.page) == 2 + page.page[1]
    select = caching_select(page, wce=not page.wce, ten=ten)
    header = 8 if ten else 4
    assert select[:header] == bytes(2 if ten else 1) + bytes([page.medium_type]) + bytes(
        header - (3 if ten else 2))
    sent = select[header:]
    assert len(sent) == len(page.page) and sent[0] == page.page[0] & 0x7F
    assert bool(sent[2] & 0x04) != page.wce and sent[2] & ~0x04 == page.page[2] & ~0x04
    assert sent[3:] == page.page[3:]


def test_mode_select_parameters_and_cdb_as_sdparm_sends_them() -> None:
    page = find_caching_page(bytes.fromhex("001a0012 00000000 8812 0501") + bytes(16))
    params = caching_select(page, wce=False)
    # header: mode data length 0 (reserved), medium type kept, device-specific 0, no block
    # descriptors; the page: PS cleared, WCE cleared, RCD and IC... kept
    assert params == bytes.fromhex("00000000 00000000 0812 0101") + bytes(16)
    assert caching_select(page, wce=True)[10] == 0x05
    command = cdb.mode_select(params)
    assert command.cdb == bytes.fromhex("55 10 00 00 00 00 00 00 1c 00")
    assert command.data_out == params
    assert cdb.mode_select(params, save=True).cdb[1] == 0x11
    assert cdb.mode_select(params[4:], ten=False).cdb == bytes.fromhex("15 10 00 00 18 00")
    assert cdb.mode_sense(0x08, pc=PageControl.CHANGEABLE, dbd=True).cdb[1:3] == b"\x08\x48"


# ------------------------------------------------------------------ the sg node, over a FAKE disk

def test_write_cache_read_set_and_read_back_on_a_fake_disk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = FakeScsiTarget()
    node = open_fake_node(monkeypatch, target, read_only=False)
    node.allow = AllowList(paths=frozenset({os.path.abspath("FAKE")}))
    assert node.write_cache is True
    node.set_write_cache(False)
    assert target.wce is False and node.write_cache is False
    assert 0x55 in target.commands
    sent = len(target.commands)
    node.set_write_cache(False)  # already off: read, nothing selected
    assert 0x55 not in target.commands[sent:]
    node.set_write_cache(True)
    assert target.wce is True and node.caching().wce


def test_a_unit_attention_after_the_change_is_read_past(monkeypatch: pytest.MonkeyPatch) -> None:
    target = FakeScsiTarget()
    target.ua_after_select = True  # scsi_debug's "mode parameters changed"
    node = open_fake_node(monkeypatch, target, read_only=False)
    node.allow = AllowList(paths=frozenset({os.path.abspath("FAKE")}))
    node.set_write_cache(False)
    assert target.wce is False and not target.pending_ua
    assert target.commands[-2:] == [0x5A, 0x5A]  # the read-back, refused once, then again


def test_write_cache_changes_are_refused_before_anything_is_sent(
        monkeypatch: pytest.MonkeyPatch) -> None:
    target = FakeScsiTarget()
    node = open_fake_node(monkeypatch, target, read_only=False)
    with pytest.raises(UnsafeDeviceError, match="refusing to write to FAKE"):
        node.set_write_cache(False)  # the safety gate: FAKE is nobody's to change
    node.allow = AllowList(paths=frozenset({os.path.abspath("FAKE")}))
    with pytest.raises(OSError) as e:
        node.set_write_cache(False, save=True)  # QEMU's page: PS=0
    assert e.value.errno == errno.ENOTSUP
    assert "cannot save its Caching page (PS=0)" in str(e.value)
    target.wce_changeable = False
    with pytest.raises(OSError) as e:
        node.set_write_cache(False)
    assert e.value.errno == errno.ENOTSUP and "changeable-values mask has WCE=0" in str(e.value)
    assert 0x55 not in target.commands and target.wce is True
    ro = open_fake_node(monkeypatch, FakeScsiTarget(), read_only=True)
    with pytest.raises(OSError) as e:
        ro.set_write_cache(False)
    assert e.value.errno == errno.EPERM and "opened read-only" in str(e.value)
    assert ro.write_cache is True  # reading needs no write access


def test_saved_values_and_broken_answers_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    target = FakeScsiTarget()
    node = open_fake_node(monkeypatch, target)
    with pytest.raises(OSError) as e:  # QEMU: saving parameters not supported
        node.caching(PageControl.SAVED)
    assert "[5/39/00]" in str(e.value).upper()
    target.mode_sense_reply = QEMU_CURRENT[:12]
    with pytest.raises(ScsiDataError, match="cut short") as bad:
        assert node.write_cache
    one_line(bad.value)


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["--save", "/dev/null"], 1, "rig sg wce: --save goes with --on or --off"),
    (["/nonexistent/sg9"], 15, "rig sg wce: cannot open /nonexistent/sg9: No such file"),
    (["--on", "--off", "/dev/null"], 2, "not allowed with argument"),
])
def test_rig_sg_wce_bad_input_is_one_line(argv: list[str], status: int, message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from rig.cli.main import main

    try:
        got = main(["sg", "wce", *argv])
    except SystemExit as e:  # argparse's own errors
        got = int(e.code or 0)
    err = capsys.readouterr().err.strip()
    assert got == status and message in err and len(err.splitlines()) == 1, err
