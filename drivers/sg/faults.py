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
import json
import tomllib
from pathlib import Path
from typing import Any

from rig.core.options import Options
from rig.drivers.ioctls import ioctl
from rig.drivers.sg.sgio import SG_INFO_CHECK, SgIoHdr, Transport
from rig.errors import ConfigError
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
        rules = scsi_rules_from_data(_load_file(str(path)), str(path))
    elif inline:
        rules = scsi_rules_from_data(_tables_from_flat(inline, f"{opts.path}scsi-faults"))
    else:
        return None
    return ScsiFaultEngine(rules, seed=seed)


def _load_file(path: str) -> list[Any]:
    try:
        raw = Path(path).read_bytes()
        data: Any = (tomllib.loads(raw.decode()) if path.endswith(".toml")
                     else json.loads(raw))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the SCSI rule file: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: bad rule file: {e}") from None
    if isinstance(data, dict):
        data = data.get("scsi", [])
    if not isinstance(data, list):
        raise ConfigError(f"{path}: 'scsi' must be a list of rule tables")
    return data


def _tables_from_flat(flat: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """``{"0.action": ..., "0.opcode.1": ...}`` -> ``[{"action": ..., "opcode": [...]}]``."""
    tables: dict[int, dict[str, Any]] = {}
    for full, value in flat.items():
        head, _, rest = full.partition(".")
        if not head.isdigit() or not rest:
            raise ConfigError(f"'{source}.{full}': expected {source}.N.KEY (N = 0, 1, ...)")
        key, _, item = rest.partition(".")
        table = tables.setdefault(int(head), {})
        if item:
            table.setdefault(key, {})[int(item)] = value
        else:
            table[key] = value
    out = []
    for index in sorted(tables):
        table = tables[index]
        out.append({k: [v[i] for i in sorted(v)] if isinstance(v, dict) else v
                    for k, v in table.items()})
    return out
