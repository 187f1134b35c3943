"""Every CDB and response layout round-trips (encode then decode gives the values back), and
the builders produce the bytes the standards (and sg3_utils' sg_raw) use."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rig.scsi.cdb as cdb
import rig.scsi.responses
import rig.scsi.sense  # defines the sense layouts
from rig.scsi.fields import LAYOUTS, Field, FieldValue, Layout, flag, u

_ASCII = string.ascii_letters + string.digits + " -_.+"


def _value(f: Field) -> st.SearchStrategy[FieldValue]:
    if f.kind == "int":
        return st.integers(0, f.max)
    if f.kind == "ascii":
        return st.text(_ASCII, max_size=f.width).map(lambda s: s.rstrip(" "))
    return st.binary(min_size=f.width, max_size=f.width)


def _values(layout: Layout) -> st.SearchStrategy[dict[str, FieldValue]]:
    return st.fixed_dictionaries({f.name: _value(f) for f in layout.variable})


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_layout_round_trip(name: str, data: st.DataObject) -> None:
    layout = LAYOUTS[name]
    values = data.draw(_values(layout))
    encoded = layout.encode(values)
    assert len(encoded) == layout.size
    decoded = layout.decode(encoded)
    assert {k: decoded[k] for k in values} == values
    for key, const in layout.const.items():
        assert decoded[key] == const
    assert layout.encode(decoded) == encoded


def test_enough_layouts_are_tested() -> None:
    names = set(LAYOUTS)
    for expected in ("cdb.read_16", "cdb.write_same_16", "cdb.unmap", "inquiry.standard",
                     "vpd.b0", "vpd.b1", "vpd.b2", "read_capacity_16.data", "sense.fixed",
                     "sense.descriptor_header", "gesn.media", "toc.track", "unmap.descriptor",
                     "cdb.get_event_status_notification", "cdb.report_luns"):
        assert expected in names


def test_overlapping_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        Layout("bad.overlap", 2, [u("a", 0, 8), flag("b", 0, 3)])
    with pytest.raises(ValueError, match="past"):
        Layout("bad.past", 2, [u("a", 1, 16)])


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        cdb.READ_10.build(lba=1 << 32)
    with pytest.raises(KeyError):
        cdb.READ_10.build(nope=1)
    with pytest.raises(ValueError, match="fixed"):
        cdb.READ_10.build(opcode=0x2A)


@pytest.mark.parametrize(("command", "expected"), [
    (cdb.test_unit_ready(), "00 00 00 00 00 00"),
    (cdb.request_sense(), "03 00 00 00 fc 00"),
    (cdb.inquiry(), "12 00 00 00 60 00"),
    (cdb.inquiry(0x83), "12 01 83 00 fc 00"),
    (cdb.read_capacity_10(), "25 00 00 00 00 00 00 00 00 00"),
    (cdb.read_capacity_16(), "9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00"),
    (cdb.read(0x1234, 8, 512, fua=True), "28 08 00 00 12 34 00 00 08 00"),
    (cdb.read(1 << 32, 1, 512), "88 00 00 00 00 01 00 00 00 00 00 00 00 01 00 00"),
    (cdb.write(7, bytes(1024), 512), "2a 00 00 00 00 07 00 00 02 00"),
    (cdb.write(7, bytes(512), 512, fua=True, cdb16=True),
     "8a 08 00 00 00 00 00 00 00 07 00 00 00 01 00 00"),
    (cdb.synchronize_cache(), "35 00 00 00 00 00 00 00 00 00"),
    (cdb.synchronize_cache(cdb16=True, immed=True),
     "91 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00"),
    (cdb.write_same_16(16, 32, 512), "93 08 00 00 00 00 00 00 00 10 00 00 00 20 00 00"),
    (cdb.unmap([(16, 32)]), "42 00 00 00 00 00 00 00 18 00"),
    (cdb.start_stop_unit(start=False, loej=True), "1b 00 00 00 02 00"),
    (cdb.start_stop_unit(start=True), "1b 00 00 00 01 00"),
    (cdb.prevent_allow_medium_removal(True), "1e 00 00 00 01 00"),
    (cdb.mode_sense(0x08, ten=False, allocation_length=252), "1a 00 08 00 fc 00"),
    (cdb.mode_sense(0x3F, 0xFF, allocation_length=0x1000), "5a 00 3f ff 00 00 00 10 00 00"),
    (cdb.get_event_status_notification(), "4a 01 00 00 10 00 00 00 08 00"),
    (cdb.read_toc(), "43 00 00 00 00 00 00 03 24 00"),
    (cdb.report_luns(), "a0 00 00 00 00 00 00 00 20 00 00 00"),
])
def test_builders_give_the_standard_bytes(command: cdb.Command, expected: str) -> None:
    assert command.cdb.hex(" ") == expected


def test_write_and_unmap_carry_their_data() -> None:
    w = cdb.write(0, b"\x01" * 1024, 512)
    assert w.direction is cdb.Direction.OUT and w.data_out == b"\x01" * 1024
    m = cdb.unmap([(16, 32), (1 << 40, 1)])
    assert rig.scsi.responses.decode_unmap_parameters(m.data_out) == [(16, 32), (1 << 40, 1)]
    assert m.data_out[:8].hex(" ") == "00 26 00 20 00 00 00 00"
    r = cdb.raw(bytes.fromhex("12 00 00 00 24 00"), data_in=36)
    assert r.direction is cdb.Direction.IN and r.data_in == 36
    with pytest.raises(ValueError):
        cdb.raw(b"\x00")
    with pytest.raises(ValueError):
        cdb.write(0, b"x", 512)
