"""The outcome of a SCSI command, and the errno Linux's block layer gives it.

Names are those of the kernel headers (include/scsi/scsi_status.h, scsi/sg.h). The errno
mapping follows Linux 6.1 (the VM lab's kernel), in three steps, each checked against the
source:

1. ``scsi_check_sense`` / ``scsi_decide_disposition`` (drivers/scsi/scsi_error.c) set the
   "scsi-ml" byte of the result from the sense: MEDIUM ERROR with ASC 0x11, 0x13 or 0x14 ->
   MED_ERROR; ILLEGAL REQUEST with ASC 0x20, 0x21, 0x22, 0x24, 0x26 or 0x27 -> TGT_FAILURE;
   DATA PROTECT 27/07 -> NOSPC, the rest of DATA PROTECT, COPY ABORTED, VOLUME OVERFLOW,
   MISCOMPARE and BLANK CHECK -> TGT_FAILURE; status RESERVATION CONFLICT -> RESV_CONFLICT.
2. ``scsi_result_to_blk_status`` (drivers/scsi/scsi_lib.c): that byte first (RESV_CONFLICT ->
   BLK_STS_NEXUS, NOSPC -> BLK_STS_NOSPC, MED_ERROR -> BLK_STS_MEDIUM, TGT_FAILURE ->
   BLK_STS_TARGET); then the host byte: DID_OK with a good status -> OK, DID_OK otherwise ->
   IOERR, DID_TRANSPORT_FAILFAST / DID_TRANSPORT_MARGINAL -> BLK_STS_TRANSPORT, every other
   host byte (DID_NO_CONNECT, DID_TIME_OUT, DID_BAD_TARGET, DID_ERROR, ...) -> BLK_STS_IOERR.
3. ``scsi_io_completion_action`` overrides for a failing command with current sense: ILLEGAL
   REQUEST with ASC 0x10 (DIX) -> BLK_STS_PROTECTION, with ASC 0x20 or 0x24 -> BLK_STS_TARGET;
   ABORTED COMMAND with ASC 0x10 (DIF) -> BLK_STS_PROTECTION; DATA PROTECT 0C/12 or 55/0E
   -> BLK_STS_ZONE_OPEN_RESOURCE.

``blk_status_to_errno`` (block/blk-core.c ``blk_errors``) then gives the errno. So a timed-out
command (DID_TIME_OUT) and a lost device (DID_NO_CONNECT) are EIO in 6.1, not ETIMEDOUT or
ENOLINK (ENOLINK is what DID_TRANSPORT_FAILFAST gives), and NOT READY / MEDIUM NOT PRESENT on
a read is EIO too: ENOMEDIUM comes from sd's open, not from a failed request. Retries (UNIT
ATTENTION on a fixed disk, NOT READY "becoming ready", BUSY) are what the kernel would do
before failing; the mapping gives the errno the request ends with if the outcome persists.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from rig.scsi.asc import (
    ABORTED_COMMAND,
    BLANK_CHECK,
    COPY_ABORTED,
    DATA_PROTECT,
    ILLEGAL_REQUEST,
    MEDIUM_ERROR,
    MISCOMPARE,
    VOLUME_OVERFLOW,
)
from rig.scsi.sense import Sense

# SAM status codes
GOOD, CHECK_CONDITION, CONDITION_MET, BUSY = 0x00, 0x02, 0x04, 0x08
RESERVATION_CONFLICT, TASK_SET_FULL, ACA_ACTIVE, TASK_ABORTED = 0x18, 0x28, 0x30, 0x40
STATUS_NAMES: dict[int, str] = {
    GOOD: "Good", CHECK_CONDITION: "Check Condition", CONDITION_MET: "Condition Met",
    BUSY: "Busy", 0x10: "Intermediate (obsolete)", 0x14: "Intermediate-Condition Met "
    "(obsolete)", RESERVATION_CONFLICT: "Reservation Conflict",
    0x22: "Command Terminated (obsolete)", TASK_SET_FULL: "Task Set Full",
    ACA_ACTIVE: "ACA Active", TASK_ABORTED: "Task Aborted",
}

# Host bytes (include/scsi/scsi_status.h)
HOST_BYTES: dict[int, str] = {
    0x00: "DID_OK", 0x01: "DID_NO_CONNECT", 0x02: "DID_BUS_BUSY", 0x03: "DID_TIME_OUT",
    0x04: "DID_BAD_TARGET", 0x05: "DID_ABORT", 0x06: "DID_PARITY", 0x07: "DID_ERROR",
    0x08: "DID_RESET", 0x09: "DID_BAD_INTR", 0x0A: "DID_PASSTHROUGH", 0x0B: "DID_SOFT_ERROR",
    0x0C: "DID_IMM_RETRY", 0x0D: "DID_REQUEUE", 0x0E: "DID_TRANSPORT_DISRUPTED",
    0x0F: "DID_TRANSPORT_FAILFAST", 0x10: "DID_TARGET_FAILURE", 0x11: "DID_NEXUS_FAILURE",
    0x12: "DID_ALLOC_FAILURE", 0x13: "DID_MEDIUM_ERROR", 0x14: "DID_TRANSPORT_MARGINAL",
}
HOST_BY_NAME = {v: k for k, v in HOST_BYTES.items()}
DID_OK, DID_NO_CONNECT, DID_TIME_OUT = 0x00, 0x01, 0x03
DID_TRANSPORT_FAILFAST, DID_TRANSPORT_MARGINAL = 0x0F, 0x14

# Driver status as sg reports it (scsi/sg.h, the SG_ERR_DRIVER_* values)
DRIVER_BYTES: dict[int, str] = {
    0x00: "DRIVER_OK", 0x01: "DRIVER_BUSY", 0x02: "DRIVER_SOFT", 0x03: "DRIVER_MEDIA",
    0x04: "DRIVER_ERROR", 0x05: "DRIVER_INVALID", 0x06: "DRIVER_TIMEOUT",
    0x07: "DRIVER_HARD", 0x08: "DRIVER_SENSE",
}

# block/blk-core.c blk_errors: blk_status_t -> (errno, description)
BLK_ERRORS: dict[str, tuple[int, str]] = {
    "BLK_STS_OK": (0, ""),
    "BLK_STS_NOTSUPP": (errno.EOPNOTSUPP, "operation not supported"),
    "BLK_STS_TIMEOUT": (errno.ETIMEDOUT, "timeout"),
    "BLK_STS_NOSPC": (errno.ENOSPC, "critical space allocation"),
    "BLK_STS_TRANSPORT": (errno.ENOLINK, "recoverable transport"),
    "BLK_STS_TARGET": (errno.EREMOTEIO, "critical target"),
    "BLK_STS_NEXUS": (errno.EBADE, "critical nexus"),
    "BLK_STS_MEDIUM": (errno.ENODATA, "critical medium"),
    "BLK_STS_PROTECTION": (errno.EILSEQ, "protection"),
    "BLK_STS_RESOURCE": (errno.ENOMEM, "kernel resource"),
    "BLK_STS_DEV_RESOURCE": (errno.EBUSY, "device resource"),
    "BLK_STS_AGAIN": (errno.EAGAIN, "nonblocking retry"),
    "BLK_STS_OFFLINE": (errno.ENODEV, "device offline"),
    "BLK_STS_DM_REQUEUE": (errno.EREMCHG, "dm internal retry"),
    "BLK_STS_ZONE_OPEN_RESOURCE": (errno.ETOOMANYREFS, "open zones exceeded"),
    "BLK_STS_ZONE_ACTIVE_RESOURCE": (errno.EOVERFLOW, "active zones exceeded"),
    "BLK_STS_IOERR": (errno.EIO, "I/O"),
}

# scsi-ml byte values (drivers/scsi/scsi_priv.h)
ML_OK, ML_RESV_CONFLICT, ML_NOSPC, ML_MED_ERROR, ML_TGT_FAILURE = 0, 1, 2, 3, 4
_ML_TO_BLK = {ML_RESV_CONFLICT: "BLK_STS_NEXUS", ML_NOSPC: "BLK_STS_NOSPC",
              ML_MED_ERROR: "BLK_STS_MEDIUM", ML_TGT_FAILURE: "BLK_STS_TARGET"}


def ml_byte(status: int, sense: Sense | None) -> int:
    """What scsi_decide_disposition / scsi_check_sense put in the scsi-ml byte."""
    if status == RESERVATION_CONFLICT:
        return ML_RESV_CONFLICT
    if status != CHECK_CONDITION or sense is None or sense.deferred:
        return ML_OK
    key, asc, ascq = sense.sense_key, sense.asc, sense.ascq
    if key == MEDIUM_ERROR and asc in (0x11, 0x13, 0x14):
        return ML_MED_ERROR
    if key == ILLEGAL_REQUEST and asc in (0x20, 0x21, 0x22, 0x24, 0x26, 0x27):
        return ML_TGT_FAILURE
    if key == DATA_PROTECT and (asc, ascq) == (0x27, 0x07):
        return ML_NOSPC
    if key in (DATA_PROTECT, COPY_ABORTED, VOLUME_OVERFLOW, MISCOMPARE, BLANK_CHECK):
        return ML_TGT_FAILURE
    return ML_OK


def good(status: int, host: int = DID_OK) -> bool:
    return host == DID_OK and status in (GOOD, CONDITION_MET)


def blk_status(status: int, host: int = DID_OK, sense: Sense | None = None) -> str:
    """The kernel's blk_status_t name for a command's outcome (see the module doc)."""
    if good(status, host) and ml_byte(status, sense) == ML_OK:
        return "BLK_STS_OK"
    ml = ml_byte(status, sense) if host == DID_OK else ML_OK
    result = _ML_TO_BLK.get(ml)
    if result is None:
        if host in (DID_TRANSPORT_FAILFAST, DID_TRANSPORT_MARGINAL):
            result = "BLK_STS_TRANSPORT"
        else:
            result = "BLK_STS_IOERR"
    if host == DID_OK and sense is not None and not sense.deferred:
        key, asc, ascq = sense.sense_key, sense.asc, sense.ascq
        if key == ILLEGAL_REQUEST and asc == 0x10:
            result = "BLK_STS_PROTECTION"
        elif key == ILLEGAL_REQUEST and asc in (0x20, 0x24):
            result = "BLK_STS_TARGET"
        elif key == ABORTED_COMMAND and asc == 0x10:
            result = "BLK_STS_PROTECTION"
        elif key == DATA_PROTECT and (asc, ascq) in ((0x0C, 0x12), (0x55, 0x0E), (0x55, 0x0F)):
            result = "BLK_STS_ZONE_OPEN_RESOURCE"
    return result


def kernel_errno(status: int, host: int = DID_OK, sense: Sense | None = None) -> int:
    """The errno a block request ends with for this outcome (0 when it succeeded)."""
    return BLK_ERRORS[blk_status(status, host, sense)][0]


@dataclass(frozen=True)
class Outcome:
    """Everything a command returned, with nothing collapsed."""

    status: int = GOOD
    host_status: int = DID_OK
    driver_status: int = 0
    resid: int = 0
    duration_ms: int = 0
    sense: Sense | None = None
    info: int = 0
    """sg_io_hdr.info (SG_INFO_OK_MASK / CHECK, direct I/O...)"""

    @property
    def ok(self) -> bool:
        return good(self.status, self.host_status) and self.driver_status & 0x0F in (0, 8)

    @property
    def blk_status(self) -> str:
        return blk_status(self.status, self.host_status, self.sense)

    @property
    def errno(self) -> int:
        return kernel_errno(self.status, self.host_status, self.sense)

    def describe(self) -> str:
        """One line: status, host and driver status, sense key and ASC text."""
        parts = [f"status={STATUS_NAMES.get(self.status, hex(self.status))}"]
        if self.host_status:
            parts.append(HOST_BYTES.get(self.host_status, f"host={self.host_status:#x}"))
        if self.driver_status:
            parts.append(DRIVER_BYTES.get(self.driver_status & 0x0F,
                                          f"driver={self.driver_status:#x}"))
        if self.sense is not None:
            parts.append(f"{self.sense.key_name}: {self.sense.asc_text} "
                         f"[{self.sense.sense_key:x}/{self.sense.asc:02x}/"
                         f"{self.sense.ascq:02x}]")
        return ", ".join(parts)

    def error(self, what: str) -> OSError:
        """An OSError with the kernel's errno for this outcome."""
        code = self.errno or errno.EIO
        return OSError(code, f"{what}: {self.describe()}")
