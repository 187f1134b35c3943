"""blockrig benchmark: crash states materialized and checked per minute (``rig crash check``).

Run as root from the repository root::

    .venv/bin/python bench/crash.py            # 64 MiB device, about a minute
    .venv/bin/python bench/crash.py --quick    # 16 MiB, fewer states: a smoke run

A synthetic write log of a ``--size`` device (default 64 MiB): the whole device written and
flushed first, then rounds of random writes (4 KiB to 64 KiB, some with FUA) ending in a flush,
so every cut has a few writes in flight. Two ways to put each state on a real block device and
run a trivial checker (``true``) on it:

* ``rig``: ``rig crash check LOG --check true`` as a user runs it (one export; per state a
  copy-on-write overlay reset and the state's pieces, a page-cache drop, ``sh -c true``);
  the whole command's wall time, start-up included;
* ``copy``: the way without overlays (xfstests' replay-log, a fresh device per state): the whole
  state image written onto a plain loop device with O_DIRECT, then ``sh -c true``; measured on
  the first ``--copy-states`` states and given per minute.

Prints states per minute for both, the ratio, and PASS/MISS against the issue's goal (1000 per
minute). A benchmark, not a test: exits 0 whenever it could measure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
GOAL_PER_MINUTE = 1000


def make_log(path: str, size: int, rounds: int, in_flight: int, seed: int) -> None:
    from rig.crash.logfile import LogWriter

    rng = random.Random(seed)
    with LogWriter(path, device_size=size, logical_block_size=512) as w:
        block = bytes(rng.getrandbits(8) for _ in range(4096)) * (MiB // 4096)
        for pos in range(0, size, MiB):
            w.write(pos, block)
        w.flush()
        for _ in range(rounds):
            for _ in range(in_flight):
                length = rng.choice([4096, 16384, 65536])
                offset = rng.randrange(0, size - length, 4096)
                w.write(offset, rng.randbytes(length), fua=rng.random() < 0.1)
            w.flush()


def bench_rig(log: str) -> tuple[int, float]:
    rig = os.path.join(os.path.dirname(sys.executable), "rig")
    t0 = time.perf_counter()
    proc = subprocess.run([rig, "crash", "check", log, "--check", "true", "--json",
                           "--no-bundle"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"rig crash check failed: {proc.stderr.strip()[-500:]}")
    report = json.loads(proc.stdout)
    return int(report["checked"]), wall


def bench_copy(log_path: str, count: int) -> tuple[int, float]:
    from rig.crash.logfile import read_log
    from rig.crash.states import CrashStates
    from rig.drivers.loop import scratch_loop

    log = read_log(log_path)
    states = CrashStates(log)
    size = log.header.device_size
    with scratch_loop(size, direct_io=True) as loop:
        fd = os.open(loop.path, os.O_WRONLY | os.O_DIRECT)
        try:
            import mmap
            buf = mmap.mmap(-1, size)
            t0 = time.perf_counter()
            done = 0
            for state in states:
                if done == count:
                    break
                buf[:] = states.image(state)
                os.pwrite(fd, buf, 0)
                os.fsync(fd)
                subprocess.run(["sh", "-c", "true"], check=True)
                done += 1
            wall = time.perf_counter() - t0
        finally:
            os.close(fd)
    return done, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB, fewer states")
    parser.add_argument("--size", type=int, default=64, metavar="MIB")
    parser.add_argument("--copy-states", type=int, default=60, metavar="N")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/crash.py: needs root (loop devices, FUSE)", file=sys.stderr)
        return 2
    size = (16 if args.quick else args.size) * MiB
    rounds, in_flight = (8, 5) if args.quick else (40, 6)
    with tempfile.TemporaryDirectory(prefix="rig-bench-crash-") as tmp:
        log = os.path.join(tmp, "bench.rwlog")
        make_log(log, size, rounds, in_flight, args.seed)
        print(f"log: {size // MiB} MiB device, {rounds} rounds of {in_flight} writes in flight",
              file=sys.stderr)
        n_rig, t_rig = bench_rig(log)
        n_copy, t_copy = bench_copy(log, 20 if args.quick else args.copy_states)
    rig_rate = 60 * n_rig / t_rig
    copy_rate = 60 * n_copy / t_copy
    verdict = "PASS" if rig_rate >= GOAL_PER_MINUTE else "MISS"
    print(f"{'way':<6} {'states':>7} {'seconds':>8} {'states/min':>11}")
    print(f"{'rig':<6} {n_rig:>7} {t_rig:>8.1f} {rig_rate:>11.0f}   goal >= {GOAL_PER_MINUTE}: "
          f"{verdict}")
    print(f"{'copy':<6} {n_copy:>7} {t_copy:>8.1f} {copy_rate:>11.0f}")
    print(f"ratio rig/copy: {rig_rate / copy_rate:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
