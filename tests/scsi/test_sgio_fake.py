"""SG_IO's result object, without a device: a fake ioctl fills ``sg_io_hdr`` and the buffers
as the kernel would, and everything comes back (status, host and driver status, residual,
duration, info, sense bytes), nothing collapsed."""

from __future__ import annotations

import ctypes
import errno
from typing import Any

import pytest

from rig.drivers.sg import sgio
from rig.scsi import cdb
from rig.scsi.sense import fixed_sense


class FakeKernel:
    def __init__(self, *, data: bytes = b"", sense: bytes = b"", status: int = 0,
                 host: int = 0, driver: int = 0, resid: int = 0) -> None:
        self.data, self.sense, self.status = data, sense, status
        self.host, self.driver, self.resid = host, driver, resid
        self.seen: dict[str, Any] = {}

    def __call__(self, fd: int, name: str, hdr: sgio.SgIoHdr) -> int:
        assert name == "SG_IO" and hdr.interface_id == ord("S")
        self.seen = {"cdb": ctypes.string_at(hdr.cmdp, hdr.cmd_len),
                     "direction": hdr.dxfer_direction, "len": hdr.dxfer_len,
                     "timeout": hdr.timeout}
        if hdr.dxfer_direction == sgio.SG_DXFER_TO_DEV:
            self.seen["out"] = ctypes.string_at(hdr.dxferp, hdr.dxfer_len)
        if self.data:
            ctypes.memmove(hdr.dxferp, self.data, len(self.data))
        if self.sense:
            ctypes.memmove(hdr.sbp, self.sense, len(self.sense))
        hdr.sb_len_wr = len(self.sense)
        hdr.status, hdr.masked_status = self.status, self.status >> 1
        hdr.host_status, hdr.driver_status = self.host, self.driver
        hdr.resid, hdr.duration = self.resid, 7
        hdr.info = 1 if self.status or self.host or self.driver else 0
        return 0


def test_data_in_and_residual(monkeypatch: pytest.MonkeyPatch) -> None:
    k = FakeKernel(data=b"\x00\x00\x05\x02" + bytes(32), resid=96 - 36)
    monkeypatch.setattr(sgio, "ioctl", k)
    r = sgio.sg_io(3, cdb.inquiry(), timeout_ms=1234)
    assert k.seen == {"cdb": bytes.fromhex("120000006000"),
                      "direction": sgio.SG_DXFER_FROM_DEV, "len": 96, "timeout": 1234}
    assert r.ok and len(r.data) == 36 and r.outcome.resid == 60
    assert r.outcome.duration_ms == 7 and r.outcome.sense is None


def test_data_out(monkeypatch: pytest.MonkeyPatch) -> None:
    k = FakeKernel()
    monkeypatch.setattr(sgio, "ioctl", k)
    sgio.sg_io(3, cdb.write(9, b"\x42" * 1024, 512, fua=True))
    assert k.seen["direction"] == sgio.SG_DXFER_TO_DEV and k.seen["out"] == b"\x42" * 1024
    assert k.seen["cdb"][1] & 0x08  # FUA


def test_check_condition_keeps_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    sense = fixed_sense(3, 0x11, 0, information=0x1234)
    monkeypatch.setattr(sgio, "ioctl", FakeKernel(sense=sense, status=2, driver=8,
                                                   resid=512))
    r = sgio.sg_io(3, cdb.read(0x1234, 1, 512))
    o = r.outcome
    assert not r.ok and r.sense_bytes == sense and o.status == 2 and o.driver_status == 8
    assert o.resid == 512 and o.info == 1 and r.masked_status == 1
    assert o.sense is not None and o.sense.information == 0x1234
    with pytest.raises(OSError) as e:
        r.check()
    assert e.value.errno == errno.ENODATA and "READ 10" in str(e.value)


def test_transport_failure_without_sense(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-scsi #76: a host status with no sense must not be lost."""
    monkeypatch.setattr(sgio, "ioctl", FakeKernel(host=0x03))
    r = sgio.sg_io(3, cdb.test_unit_ready())
    assert not r.ok and r.outcome.host_status == 3 and r.outcome.sense is None
    assert "DID_TIME_OUT" in r.outcome.describe()
    assert r.outcome.errno == errno.EIO


def test_header_layout() -> None:
    assert ctypes.sizeof(sgio.SgIoHdr) == 88
    assert sgio.SgIoHdr.status.offset == 64 and sgio.SgIoHdr.resid.offset == 72 \
        and sgio.SgIoHdr.info.offset == 80
