"""Sense data in both formats: known byte strings decode to the fields and texts sg3_utils
gives (compared with ``sg_decode_sense`` when sg3-utils is installed), builders round-trip."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.scsi.asc import ASC_ASCQ, asc_text, sense_key_name
from rig.scsi.sense import decode_sense, descriptor_sense, fixed_sense

MEDIUM_FIXED = bytes.fromhex("f0 00 03 00 00 12 34 0a 00 00 00 00 11 00 00 00 00 00")
UA_DESCRIPTOR = bytes.fromhex("72 06 29 00 00 00 00 0c 00 0a 80 00 00 00 00 00 00 00 12 34")
NOT_READY_DEFERRED = bytes.fromhex("71 00 02 00 00 00 00 0a 00 00 00 00 3a 00 00 00 00 00")
ILLEGAL_SKS = bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 24 00 00 c0 00 03")
SAMPLES = [MEDIUM_FIXED, UA_DESCRIPTOR, NOT_READY_DEFERRED, ILLEGAL_SKS,
           bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 99 05 00 00 00 00"),
           bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 24 85 00 00 00 00"),
           bytes.fromhex("72 03 11 00 00 00 00 00")]


def test_fixed_medium_error() -> None:
    s = decode_sense(MEDIUM_FIXED)
    assert s is not None and not s.descriptor_format and not s.deferred
    assert (s.sense_key, s.asc, s.ascq) == (3, 0x11, 0)
    assert s.key_name == "Medium Error" and s.asc_text == "Unrecovered read error"
    assert s.information == 0x1234 and s.information_valid


def test_descriptor_unit_attention() -> None:
    s = decode_sense(UA_DESCRIPTOR)
    assert s is not None and s.descriptor_format
    assert (s.sense_key, s.asc, s.ascq) == (6, 0x29, 0)
    assert s.asc_text == "Power on, reset, or bus device reset occurred"
    assert s.information == 0x1234 and s.information_valid
    assert s.descriptors[0]["type"] == 0


def test_deferred_and_sense_key_specific() -> None:
    s = decode_sense(NOT_READY_DEFERRED)
    assert s is not None and s.deferred and s.asc_text == "Medium not present"
    assert s.information is None
    s = decode_sense(ILLEGAL_SKS)
    assert s is not None and s.sksv and "Error in Command: byte 3" in s.text()


def test_no_sense_is_none() -> None:
    assert decode_sense(b"") is None
    assert decode_sense(bytes(18)) is None


def test_unknown_codes_name_their_range() -> None:
    assert asc_text(0x99, 5) == "vendor specific ASC=99, ASCQ=05 (hex)"
    assert asc_text(0x24, 0x85) == "ASC=24, vendor specific qualification ASCQ=85 (hex)"
    assert sense_key_name(0xB) == "Aborted Command"
    assert len(ASC_ASCQ) > 100


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 15), st.integers(0, 255), st.integers(0, 255),
       st.one_of(st.none(), st.integers(0, 2**32 - 1)), st.booleans(),
       st.one_of(st.none(), st.integers(0, 2**23 - 1)), st.booleans())
def test_built_sense_decodes(key: int, asc: int, ascq: int, info: int | None,
                             deferred: bool, sks: int | None, descriptor: bool) -> None:
    build = descriptor_sense if descriptor else fixed_sense
    s = decode_sense(build(key, asc, ascq, information=info, deferred=deferred, sks=sks))
    assert s is not None
    assert (s.sense_key, s.asc, s.ascq, s.deferred) == (key, asc, ascq, deferred)
    assert s.descriptor_format == descriptor
    assert s.information == info
    assert s.sksv == (sks is not None)
    if sks is not None:
        assert s.sense_key_specific == sks


@pytest.mark.skipif(shutil.which("sg_decode_sense") is None,
                    reason="sg3-utils is not installed (apt-get install sg3-utils)")
@pytest.mark.parametrize("raw", SAMPLES, ids=lambda b: b[:3].hex())
def test_same_words_as_sg_decode_sense(raw: bytes) -> None:
    """The first two lines (format, sense key, additional sense) are sg_decode_sense's."""
    out = subprocess.run(["sg_decode_sense", *raw.hex(" ").split()], capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()
    s = decode_sense(raw)
    assert s is not None
    ours = s.text().splitlines()
    assert ours[:2] == [line.rstrip() for line in out[:2]]
    if s.information is not None and not s.descriptor_format:
        assert f"Info fld={s.information:#x}" in "\n".join(out)


def test_short_descriptor_sense_prints_without_a_key_error() -> None:
    """An information descriptor shorter than its 10 bytes (cut short by the device, or its
    length byte garbage) was a KeyError in ``text()``."""
    full = descriptor_sense(3, 0x11, 0, information=0x1234)
    for data in (full[:12], full[:8] + bytes([0x00, 0x02, 0x80, 0x00]),
                 bytes([0x72, 0x03, 0x11, 0x00, 0, 0, 0, 4, 0x00, 0x02, 0, 0])):
        s = decode_sense(data)
        assert s is not None
        text = s.text()
        assert text.splitlines()[0] == "Descriptor format, current; Sense key: Medium Error"
        assert "Descriptor type: Information" in text
