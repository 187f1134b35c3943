"""``rig bench throttle``: how close the throttle filter's achieved rate is to the limit, real
clock (also ``bench/throttle.py``)::

    rig bench throttle                 # 5 s per limit, six limits, ~35 s
    rig bench throttle --quick         # 1 s per limit: a smoke run
    rig bench throttle --plot out.png  # also draw achieved rate over time against the limit

For each of QEMU's six limits (bps/iops; read, write, total) a throttle node over a RAM node is
driven by 4 threads per direction (queue depth 4; "total" runs 4 readers and 4 writers), with
64 KiB requests for bps limits and 4 KiB for iops limits. After a warm-up of 0.5 s (the bucket's
initial allowance, avg/10, would otherwise add 2 % to a 5 s window), completions are counted over
the measurement window. Target (issue 5): within +-2 % of the limit (QEMU's iotest 093 allows
+-10 %). This is a benchmark, not a test: it prints the numbers and PASS/MISS, and never fails.

The plot (``--plot``, needs the ``[plot]`` extra: matplotlib) shows the achieved rate in 100 ms
bins against the limit, one panel per limit.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rig.core.backend import BlockBackend
from rig.core.graph import open_node
from rig.core.outputs import check_output, open_output
from rig.throttle.group import GROUPS
from rig.throttle.limits import ThrottleLimits

CASES: dict[str, int] = {
    "bps-read": 8 << 20, "bps-write": 8 << 20, "bps-total": 8 << 20,
    "iops-read": 500, "iops-write": 500, "iops-total": 500,
}
DEPTH = 4
WARMUP = 0.5
BIN = 0.1


@dataclass
class Outcome:
    name: str
    limit: int
    achieved: float
    series: list[float] = field(default_factory=list)

    @property
    def error(self) -> float:
        return self.achieved / self.limit - 1


def run_case(name: str, limit: int, seconds: float) -> Outcome:
    gid = f"bench-{name}"
    GROUPS.create(gid, ThrottleLimits.from_mapping({name: limit}))
    bps = name.startswith("bps")
    size = 64 << 10 if bps else 4096
    blk = BlockBackend(open_node({"driver": "throttle", "throttle-group": gid,
                                 "file": {"driver": "memory", "size": 64 << 20}}))
    direction = name.split("-")[1]
    writers = {"read": [False], "write": [True], "total": [False, True]}[direction]
    done: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop = time.monotonic() + WARMUP + seconds + 0.2
    data = bytes(size)

    def worker(write: bool) -> None:
        buf = bytearray(size)
        while time.monotonic() < stop:
            if write:
                blk.pwrite(0, data)
            else:
                blk.preadv(0, [memoryview(buf)])
            with lock:
                done.append((time.monotonic(), size if bps else 1))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(w,)) for w in writers for _ in range(DEPTH)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    blk.close()
    GROUPS.remove(gid)
    start, end = t0 + WARMUP, t0 + WARMUP + seconds
    amount = sum(n for t, n in done if start <= t < end)
    bins = [0.0] * int((WARMUP + seconds) / BIN + 1)
    for t, n in done:
        i = int((t - t0) / BIN)
        if i < len(bins):
            bins[i] += n / BIN
    return Outcome(name, limit, amount / seconds, bins)


def plot(outcomes: list[Outcome], path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'blockrig[plot]'): no plot")
        return
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True)
    for ax, o in zip(axes.flat, outcomes, strict=False):
        unit, scale = ("MiB/s", 1 << 20) if o.name.startswith("bps") else ("ops/s", 1)
        xs = [BIN * (i + 0.5) for i in range(len(o.series))]
        ax.step(xs, [v / scale for v in o.series], where="mid", label="achieved (100 ms bins)")
        ax.axhline(o.limit / scale, color="red", linestyle="--", label="limit")
        ax.axvspan(0, WARMUP, color="grey", alpha=0.15, label="warm-up")
        ax.set_title(f"{o.name} = {o.limit / scale:g} {unit}: {o.error * 100:+.2f} %")
        ax.set_ylabel(unit)
        ax.set_ylim(0, o.limit / scale * 1.6)
    for ax in axes.flat[len(outcomes):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    axes.flat[0].legend(loc="upper right", fontsize="small")
    fig.suptitle("rig throttle filter, real clock: achieved rate vs limit")
    fig.tight_layout()
    with open_output(path, "--plot", replace=True, binary=True) as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png")
    print(f"plot written to {path}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="1 s windows instead of 5 s")
    p.add_argument("--seconds", type=float, default=None, help="window length (default 5)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="draw achieved rate vs limit")
    p.add_argument("--only", action="append", choices=sorted(CASES), help="run only these")


def run(args: argparse.Namespace) -> int:
    if args.plot:
        check_output(args.plot, "--plot", replace=True)  # before minutes of measuring
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    names = args.only or list(CASES)
    outcomes = []
    print(f"{'limit':<11} {'value':>10} {'achieved':>12} {'error':>8}  target +-2 %")
    for name in names:
        o = run_case(name, CASES[name], seconds)
        outcomes.append(o)
        verdict = "PASS" if abs(o.error) <= 0.02 else "MISS"
        print(f"{name:<11} {o.limit:>10} {o.achieved:>12.1f} {o.error * 100:>+7.2f}%  {verdict}",
              flush=True)
    if args.plot:
        plot(outcomes, args.plot)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))
