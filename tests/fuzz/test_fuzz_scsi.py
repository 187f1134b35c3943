"""Garbage at the SCSI decoders (issue 18 part 4): sense data, INQUIRY, VPD pages, READ CAPACITY,
MODE SENSE, GET EVENT STATUS NOTIFICATION, READ TOC, REPORT LUNS, UNMAP parameters, every CDB
layout, and the text and JSON that ``rig sg`` prints from them.

Inputs are random bytes of random lengths (0 to 600), and valid responses (built by the
``encode_*`` side) with bytes overwritten, cut short or extended. The contract: a decoder returns
(and its text and JSON render), or raises the rig's own error with a one-line message; never
another exception, never a hang.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.errors import RigError
from rig.scsi import cdb, report
from rig.scsi import responses as r
from rig.scsi.fields import LAYOUTS
from rig.scsi.sense import decode_sense, descriptor_sense, fixed_sense
from rig.scsi.status import Outcome
from tests.fuzzing import fuzz, one_line

pytestmark = pytest.mark.fuzz

#: Valid responses of every kind the decoders take.
VALID: list[bytes] = [
    fixed_sense(3, 0x11, 0, information=0x1234), fixed_sense(5, 0x24, 0, sks=0x400002),
    fixed_sense(6, 0x29, 0, deferred=True),
    descriptor_sense(3, 0x11, 0, information=0x1234, sks=0x000010),
    descriptor_sense(2, 0x3A, 0, deferred=True),
    r.STANDARD_INQUIRY.encode(peripheral_device_type=5, rmb=1, version=6, vendor="QEMU",
                              product="QEMU CD-ROM", revision="2.5+", additional_length=31),
    r.encode_vpd_00([0x00, 0x80, 0x83, 0xB0, 0xB2]), r.encode_vpd_80("SERIAL 1234"),
    r.encode_vpd_83([{"code_set": 2, "designator_type": 1, "association": 0,
                      "designator": b"QEMU    disk"},
                     {"code_set": 1, "designator_type": 3, "designator": bytes(8)}]),
    r.VPD_B0.encode(page_length=0x3C, max_transfer_length=1024, max_unmap_lba_count=8),
    r.VPD_B1.encode(page_length=0x3C, medium_rotation_rate=1),
    r.VPD_B2.encode(page_length=4, lbpu=1, lbpws=1),
    r.READ_CAPACITY_10_DATA.encode(returned_lba=0xFFFF, block_length=512),
    r.READ_CAPACITY_16_DATA.encode(returned_lba=2**40, block_length=4096, lbpme=1),
    r.encode_mode_sense({"dpofua": 1}, [{"blocks": 100, "block_length": 512}],
                        [r.CACHING_PAGE.encode(page_length=18, wce=1)], ten=True),
    r.encode_mode_sense({}, [], [r.CACHING_PAGE.encode(page_length=18)], ten=False),
    r.encode_gesn({"notification_class": 4, "supported_event_classes": 0x10},
                  {"media_event_code": 2, "media_present": 1}),
    r.encode_toc(1, 2, [{"track": 1, "start_address": 0}, {"track": 0xAA,
                                                           "start_address": 1000}]),
    r.encode_report_luns([0, 1 << 48]), r.encode_unmap_parameters([(0, 8), (100, 16)]),
]


def _sense(data: bytes) -> Any:
    s = decode_sense(data)
    if s is not None:
        o = Outcome(status=0x02, sense=s)
        return (s.text(), json.dumps(s.to_json()), report.outcome_text("READ 10", o),
                report.exit_category(o), report.outcome_json(o), o.describe(), o.errno)
    return None


def _vpd(page: int) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        decoded = r.decode_vpd(page, data)
        return report.vpd_text(page, decoded), json.dumps(report.jsonable(decoded))
    return decode


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "sense": _sense,
    "inquiry": lambda d: report.inquiry_text(r.decode_standard_inquiry(d), len(d)),
    **{f"vpd {page:#04x}": _vpd(page) for page in (0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2, 0x89)},
    "read capacity 10": lambda d: report.readcap_text(r.READ_CAPACITY_10_DATA.decode(d),
                                                      long=False),
    "read capacity 16": lambda d: report.readcap_text(r.READ_CAPACITY_16_DATA.decode(d),
                                                      long=True),
    "mode sense 6": lambda d: json.dumps(report.jsonable(r.decode_mode_sense(d, ten=False))),
    "mode sense 10": lambda d: json.dumps(report.jsonable(r.decode_mode_sense(d, ten=True))),
    "gesn": r.decode_gesn, "toc": r.decode_toc, "report luns": r.decode_report_luns,
    "unmap": r.decode_unmap_parameters,
    "cdb": lambda d: [layout.decode(d).as_dict() for name, layout in LAYOUTS.items()
                      if name.startswith("cdb.")],
    "raw cdb": lambda d: cdb.raw(d, data_in=len(d) * 1000),
}


def _check(name: str, data: bytes) -> None:
    try:
        DECODERS[name](data)
    except RigError as e:
        one_line(e)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid response with bytes overwritten, cut short or extended (a page to any decoder:
    sense to the VPD decoder is garbage too)."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(
                st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x70, 0x72, 0x73]) | st.integers(0, 255))
    how = draw(st.sampled_from(["keep", "cut", "extend"]))
    if how == "cut":
        del data[draw(st.integers(0, len(data))):]
    elif how == "extend":
        data += draw(st.binary(max_size=300))
    return bytes(data)


@given(name=st.sampled_from(sorted(DECODERS)), data=st.binary(max_size=600))
@fuzz
def test_random_bytes_decode_or_are_one_line_errors(name: str, data: bytes) -> None:
    _check(name, data)


@given(name=st.sampled_from(sorted(DECODERS)), data=mutated())
@fuzz
def test_mutated_responses_decode_or_are_one_line_errors(name: str, data: bytes) -> None:
    _check(name, data)


@given(status=st.integers(0, 255), host=st.integers(0, 0xFFFF), driver=st.integers(0, 0xFFFF),
       data=st.binary(max_size=40) | mutated())
@fuzz
def test_any_outcome_describes_itself(status: int, host: int, driver: int, data: bytes) -> None:
    o = Outcome(status, host, driver, sense=decode_sense(data))
    o.describe()
    report.outcome_json(o)
    report.exit_category(o)
    assert o.error("READ 10").errno > 0
