"""The Caching mode page in MODE SENSE data, and the MODE SELECT parameter list that changes it.

Reading is strict, because a device's answer decides whether a flush test means anything:
:func:`find_caching_page` takes MODE SENSE (10) or (6) data as the device sent it (header,
block descriptors, pages) and returns the Caching page (08h) decoded with
:data:`rig.scsi.responses.CACHING_PAGE`, or raises one :class:`ScsiDataError` naming what is
wrong: data shorter than its header, a mode data length shorter than the header or running
past the data, block descriptors running past it, no Caching page, a page cut short, a page in
subpage format.

Writing follows what sdparm ``--set WCE`` and Linux's ``cache_type`` store do
(:func:`caching_select`): the page as the device returned it (current values), with WCE
changed and the PS bit cleared (PS is reserved in MODE SELECT), after a header whose mode data
length is zero (reserved in MODE SELECT) and whose device-specific parameter is zero (WP and
DPOFUA are reserved there for disks), with no block descriptor. The CDB is MODE SELECT with
PF=1, and SP only when the values are to be saved (``rig.scsi.cdb.mode_select``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from rig.scsi.fields import Record, ScsiDataError
from rig.scsi.responses import CACHING_PAGE, MODE_HEADER_6, MODE_HEADER_10, MODE_PAGE_HEADER

CACHING_PAGE_CODE = 0x08
#: The page length SBC gives the Caching page (bytes after its 2-byte header).
CACHING_PAGE_LENGTH = 0x12


class PageControl(enum.IntEnum):
    """MODE SENSE's PC field: which values of a page to return."""

    CURRENT = 0
    CHANGEABLE = 1
    DEFAULT = 2
    SAVED = 3


@dataclass(frozen=True)
class CachingPage:
    """The Caching page as one MODE SENSE returned it."""

    fields: Record
    """The page's fields (``wce``, ``rcd``, ``ps`` ...), CACHING_PAGE's names."""
    page: bytes
    """The page's bytes, header included, as long as its page length says."""
    medium_type: int
    """The mode parameter header's medium type (sent back unchanged in MODE SELECT)."""

    @property
    def wce(self) -> bool:
        """Write Cache Enable: the device may complete a write before it is on the medium."""
        return bool(self.fields.num("wce"))

    @property
    def rcd(self) -> bool:
        """Read Cache Disable."""
        return bool(self.fields.num("rcd"))

    @property
    def savable(self) -> bool:
        """PS: the device can save this page (keep it over a power cycle)."""
        return bool(self.fields.num("ps"))


def _command(ten: bool) -> str:
    return "MODE SENSE(10)" if ten else "MODE SENSE(6)"


def find_caching_page(data: bytes, *, ten: bool = True) -> CachingPage:
    """The Caching page in MODE SENSE data; :class:`ScsiDataError` if it is not there whole."""
    what = _command(ten)
    layout = MODE_HEADER_10 if ten else MODE_HEADER_6
    if len(data) < layout.size:
        raise ScsiDataError(f"{what} data: {len(data)} bytes, shorter than its "
                            f"{layout.size}-byte header")
    header = layout.decode(data)
    total = header.num("mode_data_length") + (2 if ten else 1)
    if total < layout.size:
        raise ScsiDataError(f"{what} data: the header's mode data length says {total} bytes in "
                            f"all, less than the {layout.size}-byte header itself")
    if total > len(data):
        raise ScsiDataError(f"{what} data: the header says {total} bytes, the device sent "
                            f"{len(data)} (cut short)")
    data = data[:total]
    pos = layout.size + header.num("block_descriptor_length")
    if pos > len(data):
        raise ScsiDataError(f"{what} data: block descriptors of "
                            f"{header.num('block_descriptor_length')} bytes run past its "
                            f"{len(data)} bytes")
    seen: list[str] = []
    while pos + 2 <= len(data):
        ph = MODE_PAGE_HEADER.decode(data[pos:pos + 2])
        code, length = ph.num("page_code"), ph.num("page_length")
        if ph.num("spf"):  # subpage format: a 4-byte header, length in bytes 2-3
            if pos + 4 > len(data):
                break
            if code == CACHING_PAGE_CODE and data[pos + 1] == 0:
                raise ScsiDataError(f"{what} data: the Caching page (08h) is in subpage "
                                    "format (SPF=1), which SBC does not define for it")
            seen.append(f"{code:02x}h,{data[pos + 1]:02x}h")
            pos += 4 + int.from_bytes(data[pos + 2:pos + 4], "big")
            continue
        if code == CACHING_PAGE_CODE:
            page = data[pos:pos + 2 + length]
            if length < 1 or len(page) < 2 + length:
                raise ScsiDataError(f"{what} data: the Caching page (08h) is cut short: "
                                    f"{len(page)} of {2 + max(length, 1)} bytes")
            return CachingPage(CACHING_PAGE.decode(page), bytes(page),
                               header.num("medium_type"))
        seen.append(f"{code:02x}h")
        pos += 2 + length
    found = f" (pages found: {', '.join(seen)})" if seen else " (no page at all)"
    raise ScsiDataError(f"{what} data: no Caching page (08h){found}")


def caching_select(current: CachingPage, *, wce: bool, ten: bool = True) -> bytes:
    """MODE SELECT's parameter list setting WCE in the ``current`` Caching page: a header with
    only the medium type, no block descriptor, the page with PS cleared and WCE set."""
    page = bytearray(current.page)
    page[0] &= 0x7F  # PS is reserved in MODE SELECT
    page[2] = (page[2] & ~0x04) | (0x04 if wce else 0)
    layout = MODE_HEADER_10 if ten else MODE_HEADER_6
    header = layout.encode(medium_type=current.medium_type)
    return header + bytes(page)
