"""Sense keys and additional sense codes (ASC/ASCQ) with their T10 standard texts (SPC-5
Annex, "ASC and ASCQ assignments"). The table holds the codes a block-storage rig meets: not
ready, medium errors, hardware errors, illegal requests, unit attentions, data protection,
aborted commands, provisioning and media changes. Codes not listed decode by range, as
sg3_utils does (vendor specific ASC >= 0x80 or ASCQ >= 0x80).
"""

from __future__ import annotations

SENSE_KEYS: dict[int, str] = {
    0x0: "No Sense", 0x1: "Recovered Error", 0x2: "Not Ready", 0x3: "Medium Error",
    0x4: "Hardware Error", 0x5: "Illegal Request", 0x6: "Unit Attention",
    0x7: "Data Protect", 0x8: "Blank Check", 0x9: "Vendor Specific", 0xA: "Copy Aborted",
    0xB: "Aborted Command", 0xC: "Equal", 0xD: "Volume Overflow", 0xE: "Miscompare",
    0xF: "Completed",
}

# Named sense keys, for code that tests them.
NO_SENSE, RECOVERED_ERROR, NOT_READY, MEDIUM_ERROR, HARDWARE_ERROR = 0x0, 0x1, 0x2, 0x3, 0x4
ILLEGAL_REQUEST, UNIT_ATTENTION, DATA_PROTECT, BLANK_CHECK = 0x5, 0x6, 0x7, 0x8
COPY_ABORTED, ABORTED_COMMAND, VOLUME_OVERFLOW, MISCOMPARE, COMPLETED = 0xA, 0xB, 0xD, 0xE, 0xF

ASC_ASCQ: dict[tuple[int, int], str] = {
    (0x00, 0x00): "No additional sense information",
    (0x00, 0x06): "I/O process terminated",
    (0x00, 0x16): "Operation in progress",
    (0x00, 0x17): "Cleaning requested",
    (0x00, 0x1D): "ATA pass through information available",
    (0x01, 0x00): "No index/sector signal",
    (0x02, 0x00): "No seek complete",
    (0x03, 0x00): "Peripheral device write fault",
    (0x04, 0x00): "Logical unit not ready, cause not reportable",
    (0x04, 0x01): "Logical unit is in process of becoming ready",
    (0x04, 0x02): "Logical unit not ready, initializing command required",
    (0x04, 0x03): "Logical unit not ready, manual intervention required",
    (0x04, 0x04): "Logical unit not ready, format in progress",
    (0x04, 0x05): "Logical unit not ready, rebuild in progress",
    (0x04, 0x06): "Logical unit not ready, recalculation in progress",
    (0x04, 0x07): "Logical unit not ready, operation in progress",
    (0x04, 0x08): "Logical unit not ready, long write in progress",
    (0x04, 0x09): "Logical unit not ready, self-test in progress",
    (0x04, 0x0A): "Logical unit not accessible, asymmetric access state transition",
    (0x04, 0x0B): "Logical unit not accessible, target port in standby state",
    (0x04, 0x0C): "Logical unit not accessible, target port in unavailable state",
    (0x04, 0x11): "Logical unit not ready, notify (enable spinup) required",
    (0x04, 0x12): "Logical unit not ready, offline",
    (0x04, 0x14): "Logical unit not ready, space allocation in progress",
    (0x04, 0x1A): "Logical unit not ready, START STOP UNIT command in progress",
    (0x04, 0x22): "Logical unit not ready, power cycle required",
    (0x05, 0x00): "Logical unit does not respond to selection",
    (0x08, 0x00): "Logical unit communication failure",
    (0x08, 0x01): "Logical unit communication time-out",
    (0x08, 0x02): "Logical unit communication parity error",
    (0x0B, 0x00): "Warning",
    (0x0B, 0x01): "Warning - specified temperature exceeded",
    (0x0C, 0x00): "Write error",
    (0x0C, 0x02): "Write error - auto reallocation failed",
    (0x0C, 0x03): "Write error - recommend reassignment",
    (0x0C, 0x12): "Insufficient zone resources",
    (0x0E, 0x01): "Information unit too short",
    (0x10, 0x00): "Id CRC or ECC error",
    (0x10, 0x01): "Logical block guard check failed",
    (0x10, 0x02): "Logical block application tag check failed",
    (0x10, 0x03): "Logical block reference tag check failed",
    (0x11, 0x00): "Unrecovered read error",
    (0x11, 0x01): "Read retries exhausted",
    (0x11, 0x02): "Error too long to correct",
    (0x11, 0x04): "Unrecovered read error - auto reallocate failed",
    (0x11, 0x0B): "Unrecovered read error - recommend reassignment",
    (0x11, 0x0C): "Unrecovered read error - recommend rewrite the data",
    (0x11, 0x14): "Read error - lba marked bad by application client",
    (0x12, 0x00): "Address mark not found for id field",
    (0x13, 0x00): "Address mark not found for data field",
    (0x14, 0x00): "Recorded entity not found",
    (0x14, 0x01): "Record not found",
    (0x15, 0x00): "Random positioning error",
    (0x16, 0x00): "Data synchronization mark error",
    (0x17, 0x00): "Recovered data with no error correction applied",
    (0x18, 0x00): "Recovered data with error correction applied",
    (0x19, 0x00): "Defect list error",
    (0x1A, 0x00): "Parameter list length error",
    (0x1D, 0x00): "Miscompare during verify operation",
    (0x20, 0x00): "Invalid command operation code",
    (0x21, 0x00): "Logical block address out of range",
    (0x21, 0x01): "Invalid element address",
    (0x24, 0x00): "Invalid field in cdb",
    (0x25, 0x00): "Logical unit not supported",
    (0x26, 0x00): "Invalid field in parameter list",
    (0x26, 0x01): "Parameter not supported",
    (0x26, 0x02): "Parameter value invalid",
    (0x27, 0x00): "Write protected",
    (0x27, 0x01): "Hardware write protected",
    (0x27, 0x02): "Logical unit software write protected",
    (0x27, 0x07): "Space allocation failed write protect",
    (0x28, 0x00): "Not ready to ready change, medium may have changed",
    (0x28, 0x01): "Import or export element accessed",
    (0x29, 0x00): "Power on, reset, or bus device reset occurred",
    (0x29, 0x01): "Power on occurred",
    (0x29, 0x02): "SCSI bus reset occurred",
    (0x29, 0x03): "Bus device reset function occurred",
    (0x29, 0x04): "Device internal reset",
    (0x29, 0x07): "I_T nexus loss occurred",
    (0x2A, 0x00): "Parameters changed",
    (0x2A, 0x01): "Mode parameters changed",
    (0x2A, 0x02): "Log parameters changed",
    (0x2A, 0x03): "Reservations preempted",
    (0x2A, 0x09): "Capacity data has changed",
    (0x2A, 0x10): "Timestamp changed",
    (0x2C, 0x00): "Command sequence error",
    (0x2F, 0x00): "Commands cleared by another initiator",
    (0x30, 0x00): "Incompatible medium installed",
    (0x30, 0x02): "Cannot read medium - incompatible format",
    (0x31, 0x00): "Medium format corrupted",
    (0x32, 0x00): "No defect spare location available",
    (0x38, 0x07): "Thin provisioning soft threshold reached",
    (0x39, 0x00): "Saving parameters not supported",
    (0x3A, 0x00): "Medium not present",
    (0x3A, 0x01): "Medium not present - tray closed",
    (0x3A, 0x02): "Medium not present - tray open",
    (0x3A, 0x03): "Medium not present - loadable",
    (0x3A, 0x04): "Medium not present - medium auxiliary memory accessible",
    (0x3E, 0x00): "Logical unit has not self-configured yet",
    (0x3E, 0x01): "Logical unit failure",
    (0x3E, 0x02): "Timeout on logical unit",
    (0x3F, 0x00): "Target operating conditions have changed",
    (0x3F, 0x01): "Microcode has been changed",
    (0x3F, 0x03): "Inquiry data has changed",
    (0x3F, 0x0E): "Reported luns data has changed",
    (0x40, 0x00): "Ram failure (should use 40 nn)",
    (0x44, 0x00): "Internal target failure",
    (0x45, 0x00): "Select or reselect failure",
    (0x47, 0x00): "SCSI parity error",
    (0x48, 0x00): "Initiator detected error message received",
    (0x49, 0x00): "Invalid message error",
    (0x4B, 0x00): "Data phase error",
    (0x4E, 0x00): "Overlapped commands attempted",
    (0x53, 0x00): "Media load or eject failed",
    (0x53, 0x02): "Medium removal prevented",
    (0x55, 0x03): "Insufficient resources",
    (0x55, 0x0E): "Insufficient zone resources",
    (0x5A, 0x00): "Operator request or state change input",
    (0x5A, 0x01): "Operator medium removal request",
    (0x5D, 0x00): "Failure prediction threshold exceeded",
    (0x5D, 0xFF): "Failure prediction threshold exceeded (false)",
    (0x5E, 0x00): "Low power condition on",
    (0x5E, 0x01): "Idle condition activated by timer",
    (0x5E, 0x02): "Standby condition activated by timer",
    (0x63, 0x00): "End of user area encountered on this track",
    (0x64, 0x00): "Illegal mode for this track",
    (0x65, 0x00): "Voltage fault",
    (0x67, 0x00): "Configuration failure",
    (0x6F, 0x00): "Copy protection key exchange failure - authentication failure",
}


def asc_text(asc: int, ascq: int) -> str:
    """The standard text, or a description of the range (as sg3_utils prints unknown codes)."""
    text = ASC_ASCQ.get((asc, ascq))
    if text is not None:
        return text
    if asc >= 0x80:
        return f"vendor specific ASC={asc:02x}, ASCQ={ascq:02x} (hex)"
    if ascq >= 0x80:
        return f"ASC={asc:02x}, vendor specific qualification ASCQ={ascq:02x} (hex)"
    return f"ASC={asc:02x}, ASCQ={ascq:02x} (hex)"


def sense_key_name(key: int) -> str:
    return SENSE_KEYS.get(key & 0xF, f"Sense key {key:#x}")
