"""A FAKE SCSI target, in Python, for host tests of the layers above SG_IO (the SCSI fault
rules and the sg node's media verbs) on machines without SCSI devices. It is labelled fake
everywhere it is used: what real devices do is proved in the VM lab (test_sg_devices.py,
test_removable_vm.py), and this fake only follows what those showed (QEMU's scsi-cd: UNIT
ATTENTION 06/3A/00 then 06/28/00 after a change, GESN "new media" once the tray is closed).

It answers through the same transport signature as the ioctl (``(fd, "SG_IO", hdr) -> int``),
filling ``sg_io_hdr`` as the kernel does, so everything above it runs unchanged.
"""

from __future__ import annotations

import ctypes
import struct
from collections import deque
from typing import Any

import pytest

from rig.drivers.sg import node as sg_node_module
from rig.drivers.sg.node import SgNode
from rig.drivers.sg.sgio import SG_INFO_CHECK, SgDevice, SgIoHdr
from rig.scsi.responses import READ_CAPACITY_10_DATA, READ_CAPACITY_16_DATA, STANDARD_INQUIRY
from rig.scsi.sense import fixed_sense

CHECK = 0x02
DRIVER_SENSE = 0x08
NO_MEDIUM = (0x02, 0x3A, 0x00)
INVALID_OPCODE = (0x05, 0x20, 0x00)
#: Commands that never report a pending UNIT ATTENTION (as QEMU's SCSI bus).
_NO_UA = (0x12, 0x03, 0xA0, 0x4A)


class FakeScsiTarget:
    """FAKE: a disk (pdt 0) or a CD drive (pdt 5, removable) held in memory."""

    def __init__(self, *, blocks: int = 2048, block_size: int = 512, pdt: int = 0,
                 removable: bool = False) -> None:
        self.block_size = block_size
        self.pdt = pdt
        self.removable = removable
        self.data: bytearray | None = bytearray(blocks * block_size)
        self.tray_open = False
        self.locked = False
        self.media_event = False
        self.pending_ua: deque[tuple[int, int, int]] = deque()
        self.commands: list[int] = []
        self.errors: dict[int, tuple[int, int, int]] = {}
        """LBA -> sense this fake answers reads of that block with (like scsi_debug opts=2)."""
        self.wce = True
        """The Caching page's WCE, answered and changed as QEMU's scsi-hd does (below)."""
        self.wce_changeable = True
        self.mode_sense_reply: bytes | None = None
        """When set, MODE SENSE answers exactly these bytes (a broken device)."""
        self.ua_after_select = False
        """Report "mode parameters changed" (06/2A/01) to the next command after a MODE SELECT,
        as scsi_debug does."""

    # ------------------------------------------------------------ host side (like QMP)
    def change_medium(self, data: bytes | None) -> None:
        """QEMU's eject + change: UA "no medium", then "medium changed" once it is reported."""
        self.data = bytearray(data) if data is not None else None
        self.tray_open = data is None
        self.pending_ua.extend([(0x06, 0x3A, 0x00)] + ([(0x06, 0x28, 0x00)] if data else []))
        self.media_event = True

    # ------------------------------------------------------------ the transport
    def __call__(self, fd: int, name: str, hdr: SgIoHdr) -> int:
        assert name == "SG_IO"
        cdb = ctypes.string_at(hdr.cmdp, hdr.cmd_len)
        out = ctypes.string_at(hdr.dxferp, hdr.dxfer_len) if (
            hdr.dxfer_direction == -2 and hdr.dxfer_len) else b""
        self.commands.append(cdb[0])
        if self.pending_ua and cdb[0] not in _NO_UA:
            return self._check(hdr, self.pending_ua.popleft())
        try:
            data = self._execute(cdb, out)
        except _Refused as e:
            return self._check(hdr, e.sense, information=e.information)
        n = min(len(data), hdr.dxfer_len)
        if n:
            ctypes.memmove(hdr.dxferp, data, n)
        hdr.status = hdr.masked_status = hdr.host_status = hdr.driver_status = 0
        hdr.sb_len_wr = 0
        hdr.resid = hdr.dxfer_len - n if hdr.dxfer_direction == -3 else 0
        hdr.info = 0
        return 0

    def _check(self, hdr: SgIoHdr, sense: tuple[int, int, int], *,
               information: int | None = None) -> int:
        raw = fixed_sense(*sense, information=information)
        ctypes.memmove(hdr.sbp, raw, min(len(raw), hdr.mx_sb_len))
        hdr.sb_len_wr = min(len(raw), hdr.mx_sb_len)
        hdr.status, hdr.masked_status = CHECK, CHECK >> 1
        hdr.host_status, hdr.driver_status = 0, DRIVER_SENSE
        hdr.resid = hdr.dxfer_len
        hdr.info = SG_INFO_CHECK
        return 0

    def _medium(self) -> bytearray:
        if self.data is None:
            raise _Refused(NO_MEDIUM)
        return self.data

    def _execute(self, cdb: bytes, out: bytes) -> bytes:
        op = cdb[0]
        bs = self.block_size
        if op == 0x12:  # INQUIRY
            if cdb[1] & 1:
                return bytes([self.pdt, 0x00, 0x00, 0x01, 0x00]) if cdb[2] == 0 else _refuse()
            return STANDARD_INQUIRY.encode({
                "peripheral_device_type": self.pdt, "rmb": int(self.removable), "version": 5,
                "response_data_format": 2, "additional_length": 31, "vendor": "FAKE",
                "product": "not a device", "revision": "0001"})
        if op == 0x00:  # TEST UNIT READY
            self._medium()
            return b""
        if op == 0x25:  # READ CAPACITY (10)
            medium = self._medium()
            return READ_CAPACITY_10_DATA.encode({"returned_lba": len(medium) // bs - 1,
                                                 "block_length": bs})
        if op == 0x9E and cdb[1] & 0x1F == 0x10:  # READ CAPACITY (16)
            if self.pdt == 5:
                return _refuse()
            medium = self._medium()
            return READ_CAPACITY_16_DATA.encode({"returned_lba": len(medium) // bs - 1,
                                                 "block_length": bs})
        if op in (0x28, 0x88, 0x2A, 0x8A):
            lba, blocks = (struct.unpack_from(">IxH", cdb, 2) if op in (0x28, 0x2A)
                           else struct.unpack_from(">QI", cdb, 2))
            medium = self._medium()
            for block in range(lba, lba + blocks):
                if op in (0x28, 0x88) and block in self.errors:
                    raise _Refused(self.errors[block], information=block)
            if op in (0x28, 0x88):
                return bytes(medium[lba * bs:(lba + blocks) * bs])
            medium[lba * bs:lba * bs + len(out)] = out
            return b""
        if op in (0x35, 0x91):
            self._medium()
            return b""
        if op == 0x5A:  # MODE SENSE(10)
            return self._mode_sense(cdb)
        if op == 0x55:  # MODE SELECT(10)
            self._mode_select(cdb, out)
            return b""
        if op == 0x1B and self.removable:  # START STOP UNIT
            loej, start = cdb[4] & 2, cdb[4] & 1
            if loej:
                if self.locked and not start:
                    raise _Refused((0x05, 0x53, 0x02))
                self.tray_open = not start
                if self.tray_open:
                    self.data = None
            return b""
        if op == 0x1E and self.removable:  # PREVENT ALLOW MEDIUM REMOVAL
            self.locked = bool(cdb[4] & 1)
            return b""
        if op == 0x4A and self.removable:  # GET EVENT STATUS NOTIFICATION (media)
            code = 0
            if self.media_event and not self.tray_open:
                code, self.media_event = 2, False
            status = 1 if self.tray_open else (2 if self.data is not None else 0)
            return bytes([0, 6, 4, 0x10, code, status, 0, 0])
        return _refuse()


    # QEMU 7.2's scsi-hd, as read in hw/scsi/scsi-disk.c: only the Caching page here; saved
    # values are 05/39/00; MODE SELECT needs PF=1 and SP=0 (else 05/24/00), a page as long as the
    # device's and unchangeable bits as they are (else 05/26/00).
    def _caching_page(self, pc: int) -> bytes:
        wce = self.wce_changeable if pc == 1 else (self.wce if pc == 0 else True)
        return bytes([0x08, 0x12, 0x04 if wce else 0]) + bytes(17)

    def _mode_sense(self, cdb: bytes) -> bytes:
        if self.mode_sense_reply is not None:
            return self.mode_sense_reply
        pc, page = cdb[2] >> 6, cdb[2] & 0x3F
        if pc == 3:
            raise _Refused((0x05, 0x39, 0x00))
        if page not in (0x08, 0x3F):
            raise _Refused((0x05, 0x24, 0x00))
        body = self._caching_page(pc)
        return (len(body) + 6).to_bytes(2, "big") + bytes(6) + body

    def _mode_select(self, cdb: bytes, out: bytes) -> None:
        if cdb[1] & 0x11 != 0x10:
            raise _Refused((0x05, 0x24, 0x00))
        if len(out) < 8 or int.from_bytes(out[6:8], "big") not in (0, 8):
            raise _Refused((0x05, 0x1A, 0x00))
        pages = out[8 + int.from_bytes(out[6:8], "big"):]
        current, changeable = self._caching_page(0), self._caching_page(1)
        if len(pages) != len(current) or pages[0] & 0x3F != 0x08 or pages[1] != 0x12 or any(
                (a ^ b) & ~m for a, b, m in zip(pages[2:], current[2:], changeable[2:],
                                                 strict=True)):
            raise _Refused((0x05, 0x26, 0x00))
        self.wce = bool(pages[2] & 0x04)
        if self.ua_after_select:
            self.pending_ua.append((0x06, 0x2A, 0x01))


class _Refused(Exception):
    def __init__(self, sense: tuple[int, int, int], information: int | None = None) -> None:
        self.sense = sense
        self.information = information


def _refuse() -> bytes:
    raise _Refused(INVALID_OPCODE)


def fake_device(target: Any) -> SgDevice:
    """An SgDevice whose transport is ``target`` (no file descriptor behind it)."""
    dev = SgDevice.__new__(SgDevice)
    dev.path, dev.timeout_ms, dev.fd = "FAKE", 1000, -1
    dev.is_generic, dev.version, dev.writable = True, 30536, True
    dev.transport = target
    return dev


def open_fake_node(monkeypatch: pytest.MonkeyPatch, target: FakeScsiTarget, *,
                   read_only: bool = True) -> SgNode:
    """The sg node over the FAKE target, probed as on open."""
    monkeypatch.setattr(sg_node_module, "block_device_of", lambda path: None)
    node = SgNode("FAKE", read_only=read_only)
    node.dev = fake_device(target)
    node.probe()
    return node
