"""The device's volatile write cache, for the ``sg`` node: WCE in the Caching mode page, read
with MODE SENSE(10) and set with MODE SELECT(10), as ``sdparm --get/--set WCE`` does.

* ``caching(pc)``: the page's current, changeable, default or saved values
  (:class:`rig.scsi.mode_pages.CachingPage`); bad or short data from the device is one
  :class:`~rig.scsi.fields.ScsiDataError`, a refused command a :class:`CommandRefused` (an
  OSError with the kernel's errno for the outcome, as every failed command of the node).
* ``write_cache``: WCE now (asked anew each time).
* ``set_write_cache(enabled, save=False)``: current values only unless ``save``. Refused on a
  node opened read-only (EPERM) and, like every write to the device, by the safety gate
  (``drivers/safety.py``: mounted, held, not allowed), which is asked again at the time of the
  change; refused (ENOTSUP) when the changeable mask says WCE cannot change, or when ``save`` is
  asked of a device whose page is not savable (PS=0), before anything is sent. The value is read
  back; a device that answers GOOD but keeps the old value is EIO. Then the kernel's sd driver
  is told to read the page again (``device/rescan``), so ``/sys/block/sdX/queue/write_cache``
  (whether the kernel sends flushes at all) agrees with the device.

Not to be confused with ``BlockBackend.write_cache``, the rig's own cache mode (QEMU's
writeback/writethrough): this one is the disk's.
"""

from __future__ import annotations

import contextlib
import errno
import os

from rig.drivers.sg.sgio import SgResult
from rig.scsi import cdb
from rig.scsi.asc import UNIT_ATTENTION
from rig.scsi.mode_pages import CachingPage, PageControl, caching_select, find_caching_page


class CommandRefused(OSError):
    """A MODE SENSE or MODE SELECT the device refused: the kernel's errno for the outcome, and
    the whole result (``rig sg wce`` exits with sg3_utils' category for it)."""

    def __init__(self, result: SgResult) -> None:
        error = result.outcome.error(result.command.name.upper().replace("_", " "))
        super().__init__(error.errno, error.strerror)
        self.result = result


def _checked(result: SgResult) -> SgResult:
    if not result.ok:
        raise CommandRefused(result)
    return result


#: Enough for the header, a long block descriptor and the Caching page.
_ALLOCATION = 252
_UA_RETRIES = 3


class SgCaching:
    """Mixin for the sg node (which provides ``_run``, ``filename``, ``read_only``)."""

    filename: str
    read_only: bool

    def _run(self, command: cdb.Command) -> SgResult:
        raise NotImplementedError

    def _check_writable(self) -> None:
        raise NotImplementedError

    def _block_device(self) -> str | None:
        raise NotImplementedError

    def _sense_page(self, pc: PageControl) -> SgResult:
        command = cdb.mode_sense(0x08, pc=int(pc), dbd=True, allocation_length=_ALLOCATION)
        r = self._run(command)
        for _ in range(_UA_RETRIES):  # a disk reports "mode parameters changed" once, to the
            sense = r.outcome.sense   # next command (scsi_debug does after MODE SELECT)
            if r.ok or sense is None or sense.sense_key != UNIT_ATTENTION:
                break
            r = self._run(command)
        return r

    def caching(self, pc: PageControl = PageControl.CURRENT) -> CachingPage:
        """The Caching mode page's ``pc`` values (MODE SENSE(10), DBD=1)."""
        return find_caching_page(_checked(self._sense_page(pc)).data, ten=True)

    @property
    def write_cache(self) -> bool:
        """WCE of the device now: True if it may acknowledge writes before they are durable."""
        return self.caching().wce

    def set_write_cache(self, enabled: bool, *, save: bool = False) -> None:
        """Set WCE (MODE SELECT(10), PF=1; SP=1 only with ``save``), then read it back."""
        what = f"{self.filename}: setting WCE={int(enabled)}"
        if self.read_only:
            raise OSError(errno.EPERM, f"{what}: the node was opened read-only")
        self._check_writable()
        current = self.caching()
        if not self.caching(PageControl.CHANGEABLE).wce:
            raise OSError(errno.ENOTSUP, f"{what}: the device does not let WCE change (its "
                          "changeable-values mask has WCE=0)")
        if save and not current.savable:
            raise OSError(errno.ENOTSUP, f"{what}: the device cannot save its Caching page "
                          "(PS=0); set it without saving")
        if current.wce != enabled or save:
            _checked(self._run(cdb.mode_select(caching_select(current, wce=enabled),
                                               save=save)))
        now = self.caching().wce
        if now != enabled:
            raise OSError(errno.EIO, f"{what}: MODE SELECT succeeded but WCE reads back as "
                          f"{int(now)}")
        self._rescan()

    def _rescan(self) -> None:
        """Ask sd to read the Caching page again (it caches WCE at probe time), so the kernel
        sends flushes exactly when the device has a volatile cache. Best effort: without sysfs
        write access the kernel's view stays stale (``kernel_write_cache`` shows it)."""
        disk = self._block_device()
        if disk is None:
            return
        path = f"/sys/class/block/{os.path.basename(disk)}/device/rescan"
        with contextlib.suppress(OSError), open(path, "w") as f:
            f.write("1")

    def kernel_write_cache(self) -> str | None:
        """What the kernel believes (``queue/write_cache``: ``write back`` or ``write
        through``), or None without a block device."""
        disk = self._block_device()
        if disk is None:
            return None
        try:
            with open(f"/sys/class/block/{os.path.basename(disk)}/queue/write_cache") as f:
                return f.read().strip()
        except OSError:
            return None
