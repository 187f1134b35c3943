"""blockrig benchmark: what the ``faults`` filter costs over the bare node, in the same run.

Run from the repository root (root for the loop device; it is skipped otherwise)::

    .venv/bin/python bench/faults.py            # full run
    .venv/bin/python bench/faults.py --quick    # smoke run

Four graphs are open at once on the same target, all with O_DIRECT (cache=none): ``bare`` (the
node alone), ``raw`` (the raw format over it: the cost of any one filter layer, for reference),
``faults-0`` (the filter, no rules) and ``faults-10k`` (the filter with 10,000 byte-range rules
loaded from a TOML file: 4 KiB ``error`` rules spread evenly over the device, each requiring
``state = 2``, which never holds, so a request that overlaps one finds it in the index, evaluates
it, and carries on: on the 1 GiB sparse file about 0.6 rules per request, on the 256 MiB files
about 2.6).

Each round runs seeded random 64 KiB requests on every graph, the graphs taking turns every 50
requests in a rotating order (so drift and slow patches hit them alike). The ratio of a round is
``time(graph) / time(bare)``; the result is the median over rounds, with the interquartile range
and the median extra time per request in microseconds.

Targets (from the issue): faults-0 <= 1.02, faults-10k <= 1.10. Devices:

* ``sparse``: the ``file`` driver on a sparse file: reads of holes never touch the disk (~4 us a
  request here), the harshest denominator: the ratio is the filter's pure CPU cost, and stable.
* ``data``: the ``file`` driver on a file full of data: reads hit the disk (~120 us), noisy.
* ``loop``: ``host_device`` on a loop device (direct I/O) over that file (~150 us), noisy.

This is a benchmark, not a test: it prints PASS/MISS and exits 0 when it managed to measure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rig
from rig.core.backend import BlockBackend
from rig.core.buffers import aligned_buffer
from rig.filters.faults import find_faults

KiB = 1 << 10
MiB = 1 << 20
REQUEST = 64 * KiB
RULES = 10_000
#: Requests a graph runs before the next takes its turn.
BLOCK = 50
TARGETS = {"faults-0": 1.02, "faults-10k": 1.10}
#: Reference rows without a target: what any one-layer filter costs here (the raw format).


@dataclass
class Target:
    name: str
    spec: dict[str, Any]
    size: int


def write_rules(path: Path, size: int, n: int) -> None:
    """``n`` 4 KiB error rules, evenly spread, that never fire (``state = 2``)."""
    stride = size // n
    with open(path, "w") as f:
        for i in range(n):
            start = i * stride + stride // 2
            f.write(f'[[rules]]\nname = "r{i}"\naction = "error"\nop = ["read", "write"]\n'
                    f"start = {start}\nend = {start + 4 * KiB}\nstate = 2\n\n")


def make_file(path: Path, size: int, fill: bool) -> None:
    with open(path, "wb") as f:
        if not fill:
            f.truncate(size)
            return
        chunk = os.urandom(MiB)
        for _ in range(size // MiB):
            f.write(chunk)
        os.fsync(f.fileno())


def graphs(target: Target, rules_file: Path) -> dict[str, dict[str, Any]]:
    return {
        "bare": target.spec,
        "raw": {"driver": "raw", "file": target.spec},
        "faults-0": {"driver": "faults", "file": target.spec},
        "faults-10k": {"driver": "faults", "file": target.spec, "rules": str(rules_file)},
    }


def run_round(blk: BlockBackend, offsets: list[int], buf: memoryview, write: bool) -> float:
    iov = [buf]
    t0 = time.perf_counter()
    if write:
        for off in offsets:
            blk.pwritev(off, iov)
    else:
        for off in offsets:
            blk.preadv(off, iov)
    return time.perf_counter() - t0


Series = dict[str, list[tuple[float, float]]]


def measure(target: Target, rules_file: Path, rounds: int, per_round: int,
            write: bool) -> Series:
    """Per round, for each faults graph: (time / bare time, extra microseconds per request)."""
    specs = graphs(target, rules_file)
    with contextlib.ExitStack() as stack:
        t0 = time.perf_counter()
        blks = {name: stack.enter_context(rig.open(spec, cache="none"))
                for name, spec in specs.items()}
        print(f"  opened (10,000 rules loaded and indexed) in {time.perf_counter() - t0:.2f} s")
        buf = aligned_buffer(REQUEST)
        buf[:] = os.urandom(REQUEST)
        rng = random.Random(1)
        slots = target.size // REQUEST
        names = list(blks)
        for name in names:  # warm up (page tables, caches, code paths)
            run_round(blks[name], [rng.randrange(slots) * REQUEST for _ in range(200)], buf,
                      write)
        ratios: Series = {n: [] for n in names if n != "bare"}
        bare_us: list[float] = []
        for r in range(rounds):
            # The graphs take turns every BLOCK requests (rotating who goes first), so a slow
            # patch of the device or the host hits them all alike; each draws its own offsets.
            times = dict.fromkeys(names, 0.0)
            for b in range(per_round // BLOCK):
                k = r + b
                for name in names[k % len(names):] + names[:k % len(names)]:
                    offsets = [rng.randrange(slots) * REQUEST for _ in range(BLOCK)]
                    times[name] += run_round(blks[name], offsets, buf, write)
            for name in ratios:
                extra_us = (times[name] - times["bare"]) / per_round * 1e6
                ratios[name].append((times[name] / times["bare"], extra_us))
            bare_us.append(times["bare"] / per_round * 1e6)
        print(f"  bare: {statistics.median(bare_us):.1f} us per {REQUEST // KiB} KiB "
              f"{'write' if write else 'read'} (median round)")
        fired = sum(find_faults(blks["faults-10k"].root).counters().values())
        assert fired == 0, f"the 10k rules must never fire, fired {fired}"
    return ratios


def report(name: str, ratios: Series) -> None:
    for graph, series in ratios.items():
        values = [r for r, _ in series]
        q = statistics.quantiles(values, n=4)
        med = statistics.median(values)
        extra = statistics.median(us for _, us in series)
        bound = TARGETS.get(graph)
        verdict = ("(reference: one plain filter layer)" if bound is None else
                   f"target <= {bound:.2f}  {'PASS' if med <= bound else 'MISS'}")
        print(f"  {graph:>10} / bare = {med:.3f}  (IQR {q[0]:.3f}..{q[2]:.3f}, "
              f"{len(series)} rounds; {extra:+.2f} us/request)  {verdict}")


@contextlib.contextmanager
def loop_target(path: Path, size: int) -> Iterator[Target | None]:
    if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
        print("loop: skipped (needs root and /dev/loop-control)")
        yield None
        return
    from rig.drivers.loop import LoopDevice

    with LoopDevice.attach(str(path), block_size=512, direct_io=True) as dev:
        yield Target("loop", {"driver": "host_device", "filename": dev.path}, size)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few short rounds (a smoke run)")
    ap.add_argument("--write", action="store_true", help="64 KiB writes instead of reads")
    ap.add_argument("--only", choices=("sparse", "data", "loop"), action="append")
    ap.add_argument("--dir", default="/var/tmp", help="where the test files go (O_DIRECT)")
    args = ap.parse_args(argv)
    rounds, per_round = (5, 500) if args.quick else (21, 2000)
    which = args.only or ["sparse", "data", "loop"]
    print(f"faults filter overhead: {REQUEST // KiB} KiB O_DIRECT "
          f"{'writes' if args.write else 'reads'}, {rounds} rounds x {per_round} requests, "
          f"python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="rig-bench-faults-") as tmp:
        d = Path(tmp)
        sparse, data = d / "sparse.img", d / "data.img"
        sparse_size, data_size = 1 << 30, 256 * MiB
        make_file(sparse, sparse_size, fill=False)
        make_file(data, data_size, fill=True)
        for size in {sparse_size, data_size}:
            write_rules(d / f"rules-{size}.toml", size, RULES)
        targets = [Target("sparse", {"driver": "file", "filename": str(sparse)}, sparse_size),
                   Target("data", {"driver": "file", "filename": str(data)}, data_size)]
        for t in targets:
            if t.name in which:
                print(f"{t.name}: file driver, {t.size // MiB} MiB "
                      f"{'sparse' if t.name == 'sparse' else 'filled'} file")
                report(t.name, measure(t, d / f"rules-{t.size}.toml", rounds, per_round,
                                       args.write))
        if "loop" in which:
            with loop_target(data, data_size) as lt:
                if lt is not None:
                    print(f"loop: host_device on a loop device (dio) over the {data_size // MiB}"
                          " MiB filled file")
                    report("loop", measure(lt, d / f"rules-{data_size}.toml", rounds,
                                           per_round, args.write))
    return 0


if __name__ == "__main__":
    sys.exit(main())
