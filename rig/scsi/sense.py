"""Sense data, fixed (response codes 0x70/0x71) and descriptor (0x72/0x73) formats (SPC-5 4.4),
decoded to one :class:`Sense`, and built (for fault rules and tests) from the same tables.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rig.scsi.asc import ILLEGAL_REQUEST, asc_text, sense_key_name
from rig.scsi.fields import Layout, flag, u

FIXED = Layout("sense.fixed", 18, [
    flag("valid", 0, 7), u("response_code", 0, 7), flag("filemark", 2, 7), flag("eom", 2, 6),
    flag("ili", 2, 5), flag("sdat_ovfl", 2, 4), u("sense_key", 2, 4), u("information", 3, 32),
    u("additional_length", 7, 8), u("command_specific", 8, 32), u("asc", 12, 8),
    u("ascq", 13, 8), u("fru", 14, 8), flag("sksv", 15, 7), u("sense_key_specific", 15, 23),
])
DESCRIPTOR_HEADER = Layout("sense.descriptor_header", 8, [
    u("response_code", 0, 7), u("sense_key", 1, 4), u("asc", 2, 8), u("ascq", 3, 8),
    flag("sdat_ovfl", 4, 7), u("additional_length", 7, 8),
])
INFORMATION_DESCRIPTOR = Layout("sense.desc.information", 12, [
    u("type", 0, 8), u("length", 1, 8), flag("valid", 2, 7), u("information", 4, 64),
], const={"type": 0x00, "length": 0x0A})
COMMAND_SPECIFIC_DESCRIPTOR = Layout("sense.desc.command_specific", 12, [
    u("type", 0, 8), u("length", 1, 8), u("command_specific", 4, 64),
], const={"type": 0x01, "length": 0x0A})
SKS_DESCRIPTOR = Layout("sense.desc.sense_key_specific", 8, [
    u("type", 0, 8), u("length", 1, 8), flag("sksv", 4, 7), u("sense_key_specific", 4, 23),
], const={"type": 0x02, "length": 0x06})
BLOCK_DESCRIPTOR = Layout("sense.desc.block", 4, [
    u("type", 0, 8), u("length", 1, 8), flag("ili", 3, 5),
], const={"type": 0x05, "length": 0x02})

DESCRIPTOR_NAMES = {0x00: "Information", 0x01: "Command specific",
                    0x02: "Sense key specific", 0x03: "Field replaceable unit",
                    0x04: "Stream commands", 0x05: "Block commands", 0x09: "ATA Status Return",
                    0x0A: "Progress indication"}


@dataclass
class Sense:
    response_code: int
    sense_key: int
    asc: int
    ascq: int
    information: int | None = None
    """the INFORMATION field when VALID is set (fixed) or an information descriptor exists"""
    information_valid: bool = False
    command_specific: int | None = None
    sksv: bool = False
    sense_key_specific: int = 0
    filemark: bool = False
    eom: bool = False
    ili: bool = False
    descriptors: list[dict[str, Any]] = field(default_factory=list)
    raw: bytes = b""

    @property
    def descriptor_format(self) -> bool:
        return self.response_code in (0x72, 0x73)

    @property
    def deferred(self) -> bool:
        return self.response_code in (0x71, 0x73)

    @property
    def key_name(self) -> str:
        return sense_key_name(self.sense_key)

    @property
    def asc_text(self) -> str:
        return asc_text(self.asc, self.ascq)

    def matches(self, key: int, asc: int | None = None, ascq: int | None = None) -> bool:
        return (self.sense_key == key and (asc is None or self.asc == asc)
                and (ascq is None or self.ascq == ascq))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["raw"] = self.raw.hex(" ")
        d["format"] = "descriptor" if self.descriptor_format else "fixed"
        d["deferred"] = self.deferred
        d["sense_key_name"] = self.key_name
        d["asc_text"] = self.asc_text
        for desc in d["descriptors"]:
            for k, v in desc.items():
                if isinstance(v, bytes):
                    desc[k] = v.hex(" ")
        return d

    def text(self) -> str:
        """sg3_utils' layout: format line, additional sense line, then the details."""
        fmt = "Descriptor" if self.descriptor_format else "Fixed"
        when = "<<<deferred>>>" if self.deferred else "current"
        lines = [f"{fmt} format, {when}; Sense key: {self.key_name}"]
        text = self.asc_text
        lines.append(text if text.startswith(("ASC=", "vendor")) else
                     f"Additional sense: {text}")
        if not self.descriptor_format:
            if self.information is not None or self.raw[3:7] != b"\0\0\0\0":
                info = int.from_bytes(self.raw[3:7], "big")
                valid = "" if self.information_valid else "Valid=0, "
                lines.append(f"  {valid}Info fld={info:#x} [{info}]")
            if self.sksv:
                lines.append(f"  Sense Key Specific: {_sks_text(self)}")
        for d in self.descriptors:
            name = DESCRIPTOR_NAMES.get(d["type"], f"type {d['type']:#04x}")
            if d["type"] == 0x00 and "information" in d:
                lines.append(f"  Descriptor type: Information: 0x{d['information']:016x}")
            elif d["type"] == 0x02 and d.get("sksv"):
                lines.append(f"  Descriptor type: Sense key specific: {_sks_text(self)}")
            else:
                lines.append(f"  Descriptor type: {name}")
        return "\n".join(lines)


def _sks_text(s: Sense) -> str:
    v = s.sense_key_specific
    if s.sense_key == ILLEGAL_REQUEST:
        where = "Command" if v & 0x400000 else "Data parameters"
        text = f"Error in {where}: byte {v & 0xFFFF}"
        if v & 0x080000:
            text += f" bit {(v >> 16) & 0x7}"
        return text
    return f"{v:#08x}"


def decode_sense(data: bytes | bytearray) -> Sense | None:
    """None when there is no sense (empty, or a response code that is not 0x70-0x73)."""
    data = bytes(data)
    if len(data) < 1:
        return None
    code = data[0] & 0x7F
    if code in (0x70, 0x71):
        r = FIXED.decode(data)
        valid = bool(r.num("valid"))
        total = 8 + r.num("additional_length")
        cmd_specific = r.num("command_specific") if total >= 12 and len(data) >= 12 else None
        return Sense(
            response_code=code, sense_key=r.num("sense_key"), asc=r.num("asc"),
            ascq=r.num("ascq"), information=r.num("information") if valid else None,
            information_valid=valid, command_specific=cmd_specific,
            sksv=bool(r.num("sksv")), sense_key_specific=r.num("sense_key_specific"),
            filemark=bool(r.num("filemark")), eom=bool(r.num("eom")), ili=bool(r.num("ili")),
            raw=data[:max(total, 8)])
    if code in (0x72, 0x73):
        h = DESCRIPTOR_HEADER.decode(data)
        total = 8 + h.num("additional_length")
        s = Sense(response_code=code, sense_key=h.num("sense_key"), asc=h.num("asc"),
                  ascq=h.num("ascq"), raw=data[:total])
        pos = 8
        while pos + 2 <= min(total, len(data)):
            kind, length = data[pos], data[pos + 1]
            body = data[pos:pos + 2 + length]
            d: dict[str, Any] = {"type": kind, "length": length}
            if kind == 0x00 and length >= 0x0A:
                d.update(INFORMATION_DESCRIPTOR.decode(body).as_dict())
                s.information = d["information"]
                s.information_valid = bool(d["valid"])
            elif kind == 0x01 and length >= 0x0A:
                d.update(COMMAND_SPECIFIC_DESCRIPTOR.decode(body).as_dict())
                s.command_specific = d["command_specific"]
            elif kind == 0x02 and length >= 0x06:
                d.update(SKS_DESCRIPTOR.decode(body).as_dict())
                s.sksv = bool(d["sksv"])
                s.sense_key_specific = d["sense_key_specific"]
            elif kind == 0x05 and length >= 0x02:
                d.update(BLOCK_DESCRIPTOR.decode(body).as_dict())
                s.ili = bool(d["ili"])
            else:
                d["data"] = body[2:]
            s.descriptors.append(d)
            pos += 2 + length
        return s
    return None


def fixed_sense(key: int, asc: int, ascq: int = 0, *, information: int | None = None,
                deferred: bool = False, sks: int | None = None) -> bytes:
    """18 bytes of fixed-format sense."""
    values: dict[str, int] = {
        "response_code": 0x71 if deferred else 0x70, "sense_key": key, "asc": asc,
        "ascq": ascq, "additional_length": 10,
    }
    if information is not None:
        values.update(valid=1, information=information)
    if sks is not None:
        values.update(sksv=1, sense_key_specific=sks)
    return FIXED.encode(values)


def descriptor_sense(key: int, asc: int, ascq: int = 0, *, information: int | None = None,
                     deferred: bool = False, sks: int | None = None) -> bytes:
    """Descriptor-format sense, with an information and a sense-key specific descriptor
    when given."""
    body = b""
    if information is not None:
        body += INFORMATION_DESCRIPTOR.encode(valid=1, information=information)
    if sks is not None:
        body += SKS_DESCRIPTOR.encode(sksv=1, sense_key_specific=sks)
    return DESCRIPTOR_HEADER.encode(response_code=0x73 if deferred else 0x72, sense_key=key,
                                    asc=asc, ascq=ascq, additional_length=len(body)) + body
