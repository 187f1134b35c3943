"""SCSI-layer faults at the SG_IO call site: a transport that asks the
:class:`~rig.scsi.fault_engine.ScsiFaultEngine` about each command and, when a rule fires, fills
``sg_io_hdr`` the way the kernel does for a device that answered so: status, masked status,
driver status DRIVER_SENSE, the sense bytes and their length, the residual, ``info`` with
SG_INFO_CHECK. :func:`rig.drivers.sg.sgio.sg_io` then decodes it like any other answer, so the
caller gets the same :class:`~rig.scsi.status.Outcome`, errno and message as from a device.

* check-condition: the command does not reach the device (nothing is transferred), unless
  ``transfer``: then it runs, and its status and sense are replaced;
* transport: host status only (DID_TIME_OUT, DID_NO_CONNECT ...), nothing transferred;
* delay: the engine sleeps, then the command goes on;
* short: the command goes to the device, then ``resid`` more bytes are reported untransferred.
"""

from __future__ import annotations

import ctypes
from typing import Any

from rig.core.options import Options
from rig.drivers.ffi.ioctls import ioctl
from rig.drivers.sg.sgio import SG_INFO_CHECK, SgIoHdr, Transport
from rig.errors import ConfigError
from rig.faults.load import load_document, tables_from_flat
from rig.scsi.fault_engine import ScsiFaultEngine
from rig.scsi.fault_rules import NO_INFORMATION, CheckCondition, Short, scsi_rules_from_data
from rig.scsi.fault_rules import Transport as HostFailure
from rig.scsi.sense import descriptor_sense, fixed_sense
from rig.scsi.status import CHECK_CONDITION

DRIVER_SENSE = 0x08


class FaultTransport:
    """Callable like the ioctl (``(fd, "SG_IO", hdr) -> int``), over ``below``."""

    def __init__(self, engine: ScsiFaultEngine, below: Transport | None = None) -> None:
        self.engine = engine
        self.below = below

    def _send(self, fd: int, name: str, hdr: SgIoHdr) -> int:
        return (self.below if self.below is not None else ioctl)(fd, name, hdr)

    def __call__(self, fd: int, name: str, hdr: SgIoHdr) -> int:
        cdb = ctypes.string_at(hdr.cmdp, hdr.cmd_len) if hdr.cmdp else b""
        verdict = self.engine.decide(cdb)
        action = verdict.action
        if isinstance(action, CheckCondition):
            info = action.information if action.information is not None else verdict.lba
            if info == NO_INFORMATION:
                info = None
            build = descriptor_sense if action.descriptor else fixed_sense
            sense = build(action.key, action.asc, action.ascq, information=info)
            resid = hdr.dxfer_len
            if action.transfer:
                self._send(fd, name, hdr)
                resid = hdr.resid
            n = min(len(sense), hdr.mx_sb_len)
            if n and hdr.sbp:
                ctypes.memmove(hdr.sbp, sense, n)
            _answer(hdr, status=CHECK_CONDITION, driver=DRIVER_SENSE, sense_len=n, resid=resid)
            return 0
        if isinstance(action, HostFailure):
            _answer(hdr, host=action.host)
            return 0
        result = self._send(fd, name, hdr)
        if isinstance(action, Short):
            hdr.resid = min(hdr.dxfer_len, max(hdr.resid, 0) + action.resid)
        return result


def _answer(hdr: SgIoHdr, *, status: int = 0, host: int = 0, driver: int = 0,
            sense_len: int = 0, resid: int | None = None) -> None:
    hdr.status = status
    hdr.masked_status = status >> 1
    hdr.msg_status = 0
    hdr.host_status = host
    hdr.driver_status = driver
    hdr.sb_len_wr = sense_len
    hdr.resid = hdr.dxfer_len if resid is None else resid
    hdr.duration = 0
    hdr.info = SG_INFO_CHECK


# ------------------------------------------------------------------------------ options
def engine_from_options(opts: Options) -> ScsiFaultEngine | None:
    """The sg node's ``scsi-faults`` option: a ``.toml``/``.json`` file (``scsi = [...]`` or a
    bare list) or inline tables flattened to ``scsi-faults.N.key``; ``scsi-faults-seed``."""
    seed = opts.int("scsi-faults-seed", 0)
    inline = {k[len("scsi-faults."):]: opts.raw(k) for k in list(opts.keys())
              if k.startswith("scsi-faults.")}
    path = opts.raw("scsi-faults")
    if path is not None and inline:
        raise ConfigError(f"Parameter '{opts.path}scsi-faults' is both a file name and a list")
    if path is not None:
        if not isinstance(path, str):
            raise ConfigError(f"Parameter '{opts.path}scsi-faults' expects a file name or a "
                              "list of rule tables")
        rules = scsi_rules_from_data(_load_file(path), path)
    elif inline:
        rules = scsi_rules_from_data(tables_from_flat(inline, f"{opts.path}scsi-faults"))
    else:
        return None
    return ScsiFaultEngine(rules, seed=seed)


def _load_file(path: str) -> list[Any]:
    """``scsi = [...]`` (TOML ``[[scsi]]``, JSON ``{"scsi": [...]}``) or a bare JSON list, read
    with the block rules' bounded loader (:func:`rig.faults.load.load_document`)."""
    data = load_document(path, "SCSI rule file")
    if isinstance(data, dict):
        extra = sorted(str(key) for key in data if key != "scsi")
        if extra:
            raise ConfigError(f"{path}: unknown top-level key {extra[0][:40]!r} (a SCSI rule "
                              "file holds only 'scsi', a list of rule tables)")
        data = data.get("scsi", [])
    if not isinstance(data, list):
        raise ConfigError(f"{path}: 'scsi' must be a list of rule tables")
    return data
