"""The kernel's errno for a command outcome (Linux 6.1: scsi_check_sense, scsi_result_to_
blk_status, scsi_io_completion_action, blk_errors)."""

from __future__ import annotations

import errno

import pytest

from rig.scsi.sense import decode_sense, descriptor_sense, fixed_sense
from rig.scsi.status import (
    BLK_ERRORS,
    CHECK_CONDITION,
    GOOD,
    HOST_BY_NAME,
    RESERVATION_CONFLICT,
    Outcome,
    blk_status,
    kernel_errno,
)


def _sense(key: int, asc: int, ascq: int = 0, *, descriptor: bool = False,
           deferred: bool = False):  # type: ignore[no-untyped-def]
    build = descriptor_sense if descriptor else fixed_sense
    return decode_sense(build(key, asc, ascq, deferred=deferred))


@pytest.mark.parametrize(("key", "asc", "ascq", "sts", "code"), [
    (0x3, 0x11, 0x00, "BLK_STS_MEDIUM", errno.ENODATA),      # unrecovered read error
    (0x3, 0x13, 0x00, "BLK_STS_MEDIUM", errno.ENODATA),
    (0x3, 0x14, 0x01, "BLK_STS_MEDIUM", errno.ENODATA),
    (0x3, 0x0C, 0x00, "BLK_STS_IOERR", errno.EIO),           # write error: retried, then EIO
    (0x2, 0x3A, 0x00, "BLK_STS_IOERR", errno.EIO),           # medium not present
    (0x2, 0x04, 0x01, "BLK_STS_IOERR", errno.EIO),
    (0x4, 0x44, 0x00, "BLK_STS_IOERR", errno.EIO),           # hardware error
    (0x5, 0x21, 0x00, "BLK_STS_TARGET", errno.EREMOTEIO),    # LBA out of range
    (0x5, 0x24, 0x00, "BLK_STS_TARGET", errno.EREMOTEIO),    # invalid field in CDB
    (0x5, 0x20, 0x00, "BLK_STS_TARGET", errno.EREMOTEIO),
    (0x5, 0x10, 0x01, "BLK_STS_PROTECTION", errno.EILSEQ),   # DIX
    (0x5, 0x1A, 0x00, "BLK_STS_IOERR", errno.EIO),
    (0xB, 0x10, 0x03, "BLK_STS_PROTECTION", errno.EILSEQ),   # DIF
    (0xB, 0x47, 0x00, "BLK_STS_IOERR", errno.EIO),
    (0x6, 0x28, 0x00, "BLK_STS_IOERR", errno.EIO),           # unit attention (after retries)
    (0x7, 0x27, 0x00, "BLK_STS_TARGET", errno.EREMOTEIO),    # write protected
    (0x7, 0x27, 0x07, "BLK_STS_NOSPC", errno.ENOSPC),        # space allocation failed
    (0x7, 0x0C, 0x12, "BLK_STS_ZONE_OPEN_RESOURCE", errno.ETOOMANYREFS),
    (0xE, 0x1D, 0x00, "BLK_STS_TARGET", errno.EREMOTEIO),    # miscompare
    (0x8, 0x00, 0x00, "BLK_STS_TARGET", errno.EREMOTEIO),    # blank check
])
@pytest.mark.parametrize("descriptor", [False, True])
def test_check_condition(key: int, asc: int, ascq: int, sts: str, code: int,
                         descriptor: bool) -> None:
    s = _sense(key, asc, ascq, descriptor=descriptor)
    assert blk_status(CHECK_CONDITION, 0, s) == sts
    assert kernel_errno(CHECK_CONDITION, 0, s) == code


@pytest.mark.parametrize(("host", "code"), [
    ("DID_OK", 0), ("DID_NO_CONNECT", errno.EIO), ("DID_TIME_OUT", errno.EIO),
    ("DID_BAD_TARGET", errno.EIO), ("DID_ERROR", errno.EIO), ("DID_ABORT", errno.EIO),
    ("DID_TRANSPORT_FAILFAST", errno.ENOLINK), ("DID_TRANSPORT_MARGINAL", errno.ENOLINK),
])
def test_host_byte(host: str, code: int) -> None:
    assert kernel_errno(GOOD, HOST_BY_NAME[host]) == code


def test_other_statuses() -> None:
    assert kernel_errno(RESERVATION_CONFLICT) == errno.EBADE
    assert kernel_errno(0x08) == errno.EIO  # BUSY, after the retries
    assert kernel_errno(GOOD) == 0
    # a deferred error says nothing about this command's data: no scsi-ml byte
    assert kernel_errno(CHECK_CONDITION, 0, _sense(3, 0x11, deferred=True)) == errno.EIO
    # a transport failure wins over sense left behind
    assert kernel_errno(CHECK_CONDITION, HOST_BY_NAME["DID_TIME_OUT"], _sense(3, 0x11)) == \
        errno.EIO


def test_blk_errors_table() -> None:
    assert BLK_ERRORS["BLK_STS_MEDIUM"][0] == errno.ENODATA
    assert BLK_ERRORS["BLK_STS_TRANSPORT"][0] == errno.ENOLINK
    assert BLK_ERRORS["BLK_STS_TIMEOUT"][0] == errno.ETIMEDOUT
    assert BLK_ERRORS["BLK_STS_TARGET"][0] == errno.EREMOTEIO


def test_outcome_error() -> None:
    o = Outcome(status=CHECK_CONDITION, driver_status=8, sense=_sense(3, 0x11))
    assert not o.ok and o.errno == errno.ENODATA
    e = o.error("read")
    assert e.errno == errno.ENODATA
    assert "Medium Error: Unrecovered read error [3/11/00]" in str(e)
    assert Outcome().ok and Outcome().errno == 0
