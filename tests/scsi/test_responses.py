"""The variable-length responses (lists of descriptors, pages, LUNs, tracks) round-trip, and
known device answers decode to the fields sg3_utils prints for them."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rig.scsi import responses as r

_settings = settings(max_examples=40, deadline=None)


@_settings
@given(st.lists(st.integers(0, 255), max_size=40), st.integers(0, 31))
def test_vpd_00(pages: list[int], pdt: int) -> None:
    assert r.decode_vpd_00(r.encode_vpd_00(pages, pdt)) == pages


@_settings
@given(st.text("ABCDEFXYZ0123456789-", max_size=40))
def test_vpd_80(serial: str) -> None:
    assert r.decode_vpd_80(r.encode_vpd_80(serial)) == serial.strip()


designators = st.fixed_dictionaries({
    "protocol_identifier": st.integers(0, 15), "code_set": st.integers(0, 15),
    "piv": st.integers(0, 1), "association": st.integers(0, 3),
    "designator_type": st.integers(0, 15), "designator": st.binary(max_size=40)})


@_settings
@given(st.lists(designators, max_size=5))
def test_vpd_83(descs: list[dict[str, Any]]) -> None:
    out = r.decode_vpd_83(r.encode_vpd_83(descs))
    assert len(out) == len(descs)
    for got, want in zip(out, descs, strict=True):
        assert {k: got[k] for k in want} == want
        assert got["designator_length"] == len(want["designator"])


@_settings
@given(st.lists(st.integers(0, 2**64 - 1), max_size=10))
def test_report_luns(luns: list[int]) -> None:
    assert r.decode_report_luns(r.encode_report_luns(luns)) == luns


@_settings
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)), max_size=8))
def test_unmap_parameters(ranges: list[tuple[int, int]]) -> None:
    assert r.decode_unmap_parameters(r.encode_unmap_parameters(ranges)) == ranges


tracks = st.fixed_dictionaries({"adr": st.integers(0, 15), "control": st.integers(0, 15),
                                "track": st.integers(0, 255),
                                "start_address": st.integers(0, 2**32 - 1)})


@_settings
@given(st.integers(0, 99), st.integers(0, 99), st.lists(tracks, max_size=6))
def test_toc(first: int, last: int, ts: list[dict[str, Any]]) -> None:
    out = r.decode_toc(r.encode_toc(first, last, ts))
    assert out["header"]["first_track"] == first and out["header"]["last_track"] == last
    assert out["tracks"] == ts


media = st.fixed_dictionaries({"media_event_code": st.integers(0, 15),
                               "media_present": st.integers(0, 1),
                               "door_open": st.integers(0, 1), "start_slot": st.integers(0, 255),
                               "end_slot": st.integers(0, 255)})


@_settings
@given(media, st.integers(0, 255))
def test_gesn(event: dict[str, Any], supported: int) -> None:
    data = r.encode_gesn({"nea": 0, "notification_class": 4,
                          "supported_event_classes": supported}, event)
    out = r.decode_gesn(data)
    assert out["media"] == event
    assert out["header"]["event_data_length"] == 6


@_settings
@given(st.booleans(), st.integers(0, 1), st.lists(st.fixed_dictionaries({
    "density_code": st.integers(0, 255), "blocks": st.integers(0, 2**24 - 1),
    "block_length": st.integers(0, 2**24 - 1)}), max_size=2), st.integers(0, 1))
def test_mode_sense(ten: bool, wp: int, descs: list[dict[str, Any]], wce: int) -> None:
    caching = r.CACHING_PAGE.encode(page_length=18, wce=wce)
    other = bytes([0x0A, 0x0A]) + bytes(10)
    data = r.encode_mode_sense({"wp": wp, "medium_type": 0}, descs, [caching, other], ten=ten)
    out = r.decode_mode_sense(data, ten=ten)
    assert out["header"]["wp"] == wp
    assert out["block_descriptors"] == descs
    assert [p["code"] for p in out["pages"]] == [0x08, 0x0A]
    assert out["pages"][0]["caching"]["wce"] == wce


def test_qemu_harddisk_inquiry() -> None:
    data = bytes.fromhex("00000512" "5b000002") + b"QEMU    QEMU HARDDISK   2.5+"
    inq = r.decode_standard_inquiry(data)
    assert inq["vendor"] == "QEMU" and inq["product"] == "QEMU HARDDISK"
    assert inq["revision"] == "2.5+" and inq["version"] == 5
    assert inq["response_data_format"] == 2 and inq["hisup"] == 1
    assert inq["cmdque"] == 1 and inq["additional_length"] == 0x5B


def test_block_limits_and_capacity() -> None:
    b0 = bytearray(64)
    b0[1], b0[3] = 0xB0, 0x3C
    b0[8:12] = (0x400).to_bytes(4, "big")
    b0[20:24] = (0xFFFFFFFF).to_bytes(4, "big")
    b0[28:32] = (8).to_bytes(4, "big")
    b0[32] = 0x80
    rec = r.decode_vpd(0xB0, bytes(b0))
    assert rec["max_transfer_length"] == 0x400 and rec["ugavalid"] == 1
    assert rec["optimal_unmap_granularity"] == 8
    cap = r.READ_CAPACITY_16_DATA.decode(bytes.fromhex(
        "000000000001ffff" "00000200" "00" "03" "c000") + bytes(16))
    assert cap["returned_lba"] == 0x1FFFF and cap["block_length"] == 512
    assert cap["lbppbe"] == 3 and cap["lbpme"] == 1 and cap["lbprz"] == 1


def test_a_garbage_block_descriptor_length_gives_only_the_descriptors_there() -> None:
    """MODE SENSE(10) saying 65535 bytes of block descriptors in an 8-byte answer decoded
    8191 made-up descriptors (and took 25 ms per call)."""
    data = r.MODE_HEADER_10.encode(mode_data_length=6, block_descriptor_length=0xFFFF)
    assert r.decode_mode_sense(data, ten=True)["block_descriptors"] == []


def test_a_short_or_wrong_vpd_page_is_a_rig_error() -> None:
    import pytest

    from rig.errors import RigError

    for data in (b"", b"\x00", b"\x00\x80\x00", r.encode_vpd_80("X")):
        with pytest.raises(RigError, match="VPD page 0x00"):
            r.decode_vpd_00(data)
