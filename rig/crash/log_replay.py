"""Applying a write log, or one of its crash states, onto a block backend."""

from __future__ import annotations

from rig.core.backend import BlockBackend
from rig.core.node import ReqFlags
from rig.crash.cuts import Durable, plan_at, sector_size
from rig.crash.cuts import image as state_image
from rig.crash.logfile import WriteLog
from rig.crash.records import Kind
from rig.crash.states import CrashState, CrashStates
from rig.errors import ConfigError

_CHUNK = 1 << 20


def _check_size(log: WriteLog, backend: BlockBackend) -> None:
    if backend.getlength() < log.header.device_size:
        raise ConfigError(f"the device has {backend.getlength()} bytes, the log needs "
                          f"{log.header.device_size}")


def replay(log: WriteLog, backend: BlockBackend, upto: int | None = None) -> int:
    """Issue records ``1..upto`` (default: all) on ``backend`` as they were recorded: writes
    and write-zeroes with their flags, discards, flushes. Marks are skipped. The device should
    hold the log's initial image. Returns the number of requests issued."""
    records = log.records if upto is None else log.upto(upto)
    _check_size(log, backend)
    issued = 0
    for rec in records:
        if rec.kind is Kind.WRITE:
            backend.pwrite(rec.offset, rec.data, fua=rec.fua)
        elif rec.kind is Kind.WRITE_ZEROES:
            flags = ReqFlags.MAY_UNMAP if rec.may_unmap else ReqFlags.NONE
            backend.write_zeroes(rec.offset, rec.length, flags | ReqFlags.FUA if rec.fua
                                 else flags)
        elif rec.kind is Kind.DISCARD:
            backend.discard(rec.offset, rec.length)
        elif rec.kind is Kind.FLUSH:
            backend.flush()
        else:
            continue
        issued += 1
    return issued


def materialize(log: WriteLog, state: CrashState, backend: BlockBackend, *,
                initial: bytes | None = None, states: CrashStates | None = None) -> None:
    """Write the device content of ``state`` onto ``backend`` (whole, from offset 0), then
    flush. The content starts from ``initial`` (default: zeroes); ``states`` reuses the plans of
    an enumeration instead of walking the log again."""
    _check_size(log, backend)
    if states is not None:
        content = states.image(state)
    else:
        plan = plan_at(log, state.cut)
        base = Durable(log, initial).at(state.cut)
        content = state_image(plan, state, sector_size(log), base)
    view = memoryview(content)
    for pos in range(0, len(content), _CHUNK):
        backend.pwrite(pos, view[pos:pos + _CHUNK])
    backend.flush()
