"""dm-flakey and the rig's fault injector, configured for the same faults, give the same results
to the same workload, side by side (each over its own loop device holding the same data).

The workload runs through the rig with ``cache=none`` (O_DIRECT, no page cache in the way) and
records, per operation, either the data read / "ok", or the errno.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

import rig
from rig.drivers.loop import LoopDevice

KiB = 1024
SIZE = 4 * 1024 * KiB
Outcome = tuple[str, Any]


def _fill(path: str) -> None:
    with rig.open({"driver": "host_device", "filename": path, "x-allow": path},
                  cache="none") as blk:
        for offset in range(0, SIZE, 256 * KiB):
            blk.pwrite(offset, bytes([0x11 + offset // (256 * KiB)]) * (256 * KiB))
        blk.flush()


def _workload(blk: Any) -> list[Outcome]:
    out: list[Outcome] = []

    def step(fn: Callable[[], Any]) -> None:
        try:
            result = fn()
            out.append(("ok", bytes(result) if result is not None else None))
        except OSError as e:
            out.append(("errno", e.errno))

    step(lambda: blk.pread(0, 64 * KiB))
    step(lambda: blk.pwrite(0, b"\xa1" * (64 * KiB)))
    step(lambda: blk.pread(0, 64 * KiB))
    step(lambda: blk.pwrite(512 * KiB, b"\xb2" * (4 * KiB)))
    step(lambda: blk.pread(508 * KiB, 12 * KiB))
    step(lambda: blk.pread(1024 * KiB, 4 * KiB))
    return out


def _flakey_and_rig(rig_loop: Callable[..., LoopDevice], rig_dm_flakey: Callable[..., str],
                    flakey: dict[str, Any], rules: list[dict[str, Any]]) -> tuple[Any, Any]:
    a, b = rig_loop(SIZE), rig_loop(SIZE)
    _fill(a.path)
    _fill(b.path)
    dm_path = rig_dm_flakey(a.path, **flakey)
    dm = rig.open({"driver": "host_device", "filename": dm_path, "x-allow": dm_path},
                  cache="none")
    faulty = rig.open({"driver": "faults", "rules": rules,
                       "file": {"driver": "host_device", "filename": b.path,
                                "x-allow": b.path}}, cache="none")
    return dm, faulty


CASES = {
    "error_writes": ({"up": 0, "down": 3600, "features": ["error_writes"]},
                     [{"action": "error", "op": "write"}]),
    "drop_writes": ({"up": 0, "down": 3600, "features": ["drop_writes"]},
                    [{"action": "drop", "op": "write"}]),
    "all_io_fails": ({"up": 0, "down": 3600}, [{"action": "error", "op": "read|write"}]),
}


@pytest.mark.rig_needs("dm", "loop")
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_faults_same_results(rig_loop: Callable[..., LoopDevice],
                                  rig_dm_flakey: Callable[..., str], case: str) -> None:
    flakey, rules = CASES[case]
    dm, faulty = _flakey_and_rig(rig_loop, rig_dm_flakey, flakey, rules)
    with dm, faulty:
        kernel, ours = _workload(dm), _workload(faulty)
    assert kernel == ours
    assert any(kind == "errno" for kind, _ in kernel) != (case == "drop_writes")


@pytest.mark.rig_needs("dm", "loop")
def test_up_then_down_interval(rig_loop: Callable[..., LoopDevice],
                               rig_dm_flakey: Callable[..., str]) -> None:
    """dm-flakey's up interval is the rig's ``after`` window: fine for UP s, then failing."""
    up = 4
    dm, faulty = _flakey_and_rig(rig_loop, rig_dm_flakey, {"up": up, "down": 3600},
                                 [{"action": "error", "op": "read|write", "after": up}])
    start = time.monotonic()
    with dm, faulty:
        before = (_workload(dm), _workload(faulty))
        assert time.monotonic() - start < up - 1, "too slow to finish inside the up interval"
        time.sleep(max(0.0, up + 1.5 - (time.monotonic() - start)))
        after = (_workload(dm), _workload(faulty))
    assert before[0] == before[1] and all(kind == "ok" for kind, _ in before[0])
    assert after[0] == after[1] and all(kind == "errno" for kind, _ in after[0])
