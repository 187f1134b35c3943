"""The ``sg`` driver: a SCSI device as a block node, every request a SCSI command over SG_IO.

read: READ(10)/(16); write: WRITE(10)/(16), with FUA when the device reports DPOFUA (MODE
SENSE); flush: SYNCHRONIZE CACHE(10)/(16); discard: UNMAP when the Logical Block Provisioning
page says LBPU and Block Limits gives an UNMAP count, else WRITE SAME(16) with UNMAP when it
says LBPWS (the order Linux's sd uses). Limits come from READ CAPACITY(16) (or (10)) and the
Block Limits VPD page. A failed command is an OSError with the errno Linux's block layer gives
the same outcome (:mod:`rig.scsi.status`), and its text names the sense.

Opening for writing passes the same safety check as ``host_device`` on the SCSI disk's block
device (``/dev/sgN`` -> ``/dev/sdX`` through sysfs); an sg node with no block device must be
allowed by path.

A CD/DVD drive (type 5, removable) is served read-only, possibly empty; removable media get the
node API's media verbs over SCSI (:mod:`rig.drivers.sg.media`). ``scsi-faults`` puts SCSI-layer
fault rules at the SG_IO call (:mod:`rig.drivers.sg.faults`). The disk's volatile write cache
(WCE in the Caching mode page) is read and set by :mod:`rig.drivers.sg.caching`.
"""

from __future__ import annotations

import errno
import glob
import mmap
import os
import stat

from rig.core.graph import OpenContext
from rig.core.limits import BlockLimits
from rig.core.node import Iov, Node, ReqFlags
from rig.core.options import Options
from rig.core.registry import register_driver
from rig.drivers import safety
from rig.drivers.nodes.posix import open_error
from rig.drivers.sg.caching import SgCaching
from rig.drivers.sg.faults import FaultTransport, engine_from_options
from rig.drivers.sg.media import SgMedia
from rig.drivers.sg.sgio import SgDevice, SgResult
from rig.errors import ConfigError, RigError, UnsafeDeviceError
from rig.scsi import cdb
from rig.scsi.asc import ILLEGAL_REQUEST
from rig.scsi.fault_engine import ScsiFaultEngine
from rig.scsi.fields import FieldValue
from rig.scsi.responses import (
    MODE_HEADER_10,
    READ_CAPACITY_10_DATA,
    READ_CAPACITY_16_DATA,
    STANDARD_INQUIRY,
    VPD_B0,
    VPD_B2,
    decode_mode_sense,
    decode_vpd_00,
)

#: Peripheral device types the node serves: disk, simplified direct access, host-managed zoned.
_BLOCK_TYPES = (0x00, 0x0E, 0x14)
#: CD/DVD (MMC): served read-only when the medium is removable.
_MMC = 0x05
_DEFAULT_MAX_BYTES = 256 * 1024  # when sysfs does not say (the block layer's usual default)
_MAX_UNMAP_DEFAULT = 0xFFFFFFFF


def block_device_of(path: str) -> str | None:
    """``/dev/sdX`` behind ``path``: itself for a block device, sysfs for ``/dev/sgN``."""
    st = os.stat(path)
    if stat.S_ISBLK(st.st_mode):
        return path
    sysdir = f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/device/block"
    names = sorted(glob.glob(f"{sysdir}/*"))
    return "/dev/" + os.path.basename(names[0]) if names else None


def check_writable(path: str, allow: safety.AllowList | None) -> None:
    """host_device's safety rules, applied to the block device the SCSI device backs."""
    disk = block_device_of(path)
    if disk is not None:
        safety.check_writable(disk, allow)
        return
    allowed = safety.AllowList.from_env()
    if allow is not None:
        allowed = allowed.merged(allow)
    if os.path.abspath(path) not in allowed.paths:
        raise UnsafeDeviceError(
            f"refusing to write to {path}: no block device shows who uses it (allow it with "
            f"--allow {path} or {safety.AllowList.ENV})")


@register_driver("sg")
class SgNode(SgCaching, SgMedia, Node):
    def __init__(self, filename: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.filename = filename
        self.dev: SgDevice | None = None
        self.block_size = 512
        self.blocks = 0
        self.discard_mode = "none"  # "unmap" | "write_same_16" | "none"
        self.max_unmap_blocks = 0
        self.max_unmap_descriptors = 0
        self.max_ws_blocks = 0
        self.physical_block_size = 0
        self.has_fua = False
        self.inquiry: dict[str, FieldValue] = {}
        self.scsi_faults: ScsiFaultEngine | None = None
        """SCSI-layer fault rules applied at this node's SG_IO call (``scsi-faults``)."""
        self.allow: safety.AllowList | None = None
        """The ``x-allow`` entries: asked again before a change of the device's settings."""

    def describe(self) -> str:
        return self.filename

    def drive_name(self) -> str:
        return self.filename

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        filename = opts.str("filename")
        if filename is None:
            raise ConfigError("The 'sg' block driver requires a file name")
        filename = filename.removeprefix("sg:")
        allow = safety.allow_option(opts.str("x-allow", ""))
        timeout_ms = opts.int("timeout", 60_000, minimum=1)
        safety.stat_device_node(filename, f"'sg' driver requires '{filename}' to be a SCSI "
                                "generic or block device")
        if not ctx.read_only:
            check_writable(filename, allow)
        engine = engine_from_options(opts)
        node = cls(filename, **ctx.node_kwargs())
        node.allow = allow
        try:
            node.dev = SgDevice(filename, write=not ctx.read_only, timeout_ms=timeout_ms)
        except OSError as e:
            raise open_error(filename, e) from None
        if engine is not None:
            node.scsi_faults = engine
            node.dev.transport = FaultTransport(engine, below=node.dev.transport)
        try:
            node.probe()
        except BaseException:
            node.close()
            raise
        node.clear_media_changed()  # changes count from the open on
        return node

    # ------------------------------------------------------------------ probing
    def _run(self, command: cdb.Command) -> SgResult:
        assert self.dev is not None
        return self.note_outcome(self.dev.execute(command))

    def _check_writable(self) -> None:
        check_writable(self.filename, self.allow)

    def _block_device(self) -> str | None:
        return block_device_of(self.filename)

    def probe(self) -> None:
        inq = self._run(cdb.inquiry()).check()
        rec = STANDARD_INQUIRY.decode(inq.data)
        self.inquiry = rec.as_dict()
        pdt = rec.num("peripheral_device_type")
        self.removable = bool(rec.num("rmb"))
        if rec.num("peripheral_qualifier") == 0 and pdt == _MMC and self.removable:
            self._probe_mmc()
            return
        if rec.num("peripheral_qualifier") != 0 or pdt not in _BLOCK_TYPES:
            raise RigError(f"'{self.filename}' is not a SCSI disk (peripheral device type "
                           f"{pdt:#04x}, qualifier {rec.num('peripheral_qualifier')})")
        self._read_capacity()
        pages: list[int] = []
        r = self._run(cdb.inquiry(0x00))
        if r.ok:
            pages = decode_vpd_00(r.data)
        max_xfer_blocks = opt_blocks = granularity = 0
        lbpu = lbpws = False
        if 0xB0 in pages:
            r = self._run(cdb.inquiry(0xB0, 64))
            if r.ok and len(r.data) >= 36:
                b0 = VPD_B0.decode(r.data)
                max_xfer_blocks = b0.num("max_transfer_length")
                opt_blocks = b0.num("optimal_transfer_length")
                self.max_unmap_blocks = b0.num("max_unmap_lba_count")
                self.max_unmap_descriptors = b0.num("max_unmap_block_descriptor_count")
                granularity = b0.num("optimal_unmap_granularity")
                self.max_ws_blocks = b0.num("max_write_same_length")
        if 0xB2 in pages:
            r = self._run(cdb.inquiry(0xB2, 8))
            if r.ok and len(r.data) >= 6:
                b2 = VPD_B2.decode(r.data)
                lbpu, lbpws = bool(b2.num("lbpu")), bool(b2.num("lbpws"))
        if lbpu and self.max_unmap_blocks and self.max_unmap_descriptors:
            self.discard_mode = "unmap"
        elif lbpws:
            self.discard_mode = "write_same_16"
        self.has_fua = self._dpofua()
        if self.has_fua:
            self.supported_write_flags = ReqFlags.FUA
        bs = self.block_size
        max_bytes = self._queue_max_bytes()
        if max_xfer_blocks:
            max_bytes = min(max_bytes, max_xfer_blocks * bs)
        max_bytes = max(bs, max_bytes // bs * bs)
        discard_bytes = 0
        if self.discard_mode == "unmap":
            discard_bytes = min(self.max_unmap_blocks, 1 << 22) * bs
        elif self.discard_mode == "write_same_16":
            discard_bytes = min(self.max_ws_blocks or 1 << 22, 1 << 22) * bs
        self.limits = BlockLimits(
            request_alignment=bs, buffer_alignment=1, max_transfer=max_bytes,
            opt_transfer=opt_blocks * bs if opt_blocks else 0,
            discard_granularity=(max(granularity, 1) * bs) if self.discard_mode != "none"
            else 0,
            max_discard=discard_bytes, physical_block_size=self.physical_block_size,
        )

    def _probe_mmc(self) -> None:
        """A CD/DVD drive: read-only, the medium may be absent; no VPD or mode pages asked."""
        if not self.read_only:
            raise ConfigError(f"'{self.filename}' is a CD/DVD drive: open it read-only")
        self.block_size = 2048
        self._refresh_capacity()
        max_bytes = max(self.block_size, self._queue_max_bytes() // self.block_size
                        * self.block_size)
        self.limits = BlockLimits(request_alignment=self.block_size, buffer_alignment=1,
                                  max_transfer=max_bytes,
                                  physical_block_size=self.block_size)

    def _refresh_capacity(self) -> None:
        cap = self.read_capacity_now()
        if cap is None:
            self.blocks = 0
            return
        self.blocks, block_size = cap
        if block_size and not block_size & (block_size - 1):
            self.block_size = block_size
        self.physical_block_size = self.block_size

    def _read_capacity(self) -> None:
        r16 = self._run(cdb.read_capacity_16())
        if r16.ok and len(r16.data) >= 12:
            rec = READ_CAPACITY_16_DATA.decode(r16.data)
            self.block_size = rec.num("block_length")
            self.blocks = rec.num("returned_lba") + 1
            self.physical_block_size = self.block_size << rec.num("lbppbe")
            return
        r10 = self._run(cdb.read_capacity_10()).check()
        rec = READ_CAPACITY_10_DATA.decode(r10.data)
        self.block_size = rec.num("block_length")
        self.blocks = rec.num("returned_lba") + 1
        self.physical_block_size = self.block_size
        if not self.block_size or self.block_size & (self.block_size - 1):
            raise RigError(f"'{self.filename}': unusable block size {self.block_size}")

    def _dpofua(self) -> bool:
        r = self._run(cdb.mode_sense(0x08, allocation_length=64))
        if r.ok and len(r.data) >= MODE_HEADER_10.size:
            return bool(decode_mode_sense(r.data, ten=True)["header"]["dpofua"])
        r = self._run(cdb.mode_sense(0x08, ten=False, allocation_length=64))
        if r.ok and len(r.data) >= 4:
            return bool(decode_mode_sense(r.data, ten=False)["header"]["dpofua"])
        return False

    def _queue_max_bytes(self) -> int:
        """What one SG_IO may move: the queue's max_sectors_kb, and no more pages than its
        max_segments (SG_IO copies the buffer into separate pages; a larger request is
        EINVAL, seen on the VM lab's virtio-scsi disk)."""
        disk = block_device_of(self.filename)
        if disk is None:
            return _DEFAULT_MAX_BYTES
        queue = f"/sys/class/block/{os.path.basename(disk)}/queue"
        values = []
        for attr in ("max_sectors_kb", "max_segments", "max_segment_size"):
            try:
                with open(f"{queue}/{attr}") as f:
                    values.append(int(f.read()))
            except (OSError, ValueError):
                return _DEFAULT_MAX_BYTES
        sectors_kb, segments, segment_size = values
        return min(sectors_kb * 1024, segments * min(mmap.PAGESIZE, segment_size or 1 << 16))

    # ------------------------------------------------------------------ data
    def _lba(self, offset: int, length: int) -> tuple[int, int]:
        bs = self.block_size
        if offset % bs or length % bs:
            raise OSError(errno.EINVAL, f"request {offset}+{length} is not aligned to the "
                          f"{bs}-byte logical block")
        return offset // bs, length // bs

    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        lba, blocks = self._lba(offset, length)
        r = self._run(cdb.read(lba, blocks, self.block_size)).check()
        if len(r.data) != length:
            raise OSError(errno.EIO, f"READ: short transfer ({len(r.data)} of {length} bytes, "
                          f"residual {r.outcome.resid})")
        pos = 0
        for buf in iov:
            n = buf.nbytes
            buf[:] = r.data[pos:pos + n]
            pos += n

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        lba, _ = self._lba(offset, length)
        data = b"".join(bytes(b) for b in iov)
        fua = bool(flags and flags & ReqFlags.FUA)
        r = self._run(cdb.write(lba, data, self.block_size, fua=fua)).check()
        if r.outcome.resid:
            raise OSError(errno.EIO, f"WRITE: short transfer (residual {r.outcome.resid})")

    def _flush_to_disk(self) -> None:
        self._run(cdb.synchronize_cache(cdb16=self.blocks > 0xFFFFFFFF)).check()

    def _discard(self, offset: int, length: int) -> None:
        if self.discard_mode == "none":
            raise OSError(errno.ENOTSUP, "discard: the device reports neither UNMAP nor "
                          "WRITE SAME with UNMAP")
        lba, blocks = self._lba(offset, length)
        step = (min(self.max_unmap_blocks, _MAX_UNMAP_DEFAULT) if self.discard_mode == "unmap"
                else self.limits.max_discard // self.block_size)
        while blocks:
            n = min(blocks, step)
            command = (cdb.unmap([(lba, n)]) if self.discard_mode == "unmap"
                       else cdb.write_same_16(lba, n, self.block_size, unmap=True))
            r = self._run(command)
            sense = r.outcome.sense
            if (not r.ok and sense is not None and sense.sense_key == ILLEGAL_REQUEST
                    and sense.asc in (0x20, 0x24)):
                self.discard_mode = "none"  # as sd does: the device refused the command
                raise OSError(errno.ENOTSUP, f"discard: {r.outcome.describe()}")
            r.check()
            lba += n
            blocks -= n

    def _getlength(self) -> int:
        if self.removable:  # the medium may have changed: ask, as sr does after a change
            self._refresh_capacity()
        return self.blocks * self.block_size

    def _truncate(self, length: int) -> None:
        if length != self._getlength():
            raise OSError(errno.ENOTSUP, "Cannot grow or shrink a SCSI device")

    def _close(self) -> None:
        if self.dev is not None:
            self.dev.close()
            self.dev = None


class DeviceCaching(SgCaching):
    """The write cache of an open :class:`SgDevice` without a node (``rig sg wce``): any SCSI
    device that answers the Caching page, with the node's checks (``allow`` as ``x-allow``)."""

    def __init__(self, dev: SgDevice, *, allow: safety.AllowList | None = None) -> None:
        self.dev = dev
        self.filename = dev.path
        self.read_only = not dev.writable
        self.allow = allow

    def _run(self, command: cdb.Command) -> SgResult:
        return self.dev.execute(command)

    def _check_writable(self) -> None:
        check_writable(self.filename, self.allow)

    def _block_device(self) -> str | None:
        return block_device_of(self.filename)
