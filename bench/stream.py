"""blockrig benchmark: the rig's block-stream job against ``qemu-img convert`` of the same chain.

Run from the repository root (no root needed)::

    .venv/bin/python bench/stream.py            # 256 MiB chain, 5 repetitions
    .venv/bin/python bench/stream.py --quick    # 64 MiB chain, 3 repetitions: a smoke run

The chain, made once in ``--dir`` with qemu-img/qemu-io: a qcow2 base full of data (64 KiB
clusters), a middle qcow2 holding every fourth MiB, and an empty qcow2 top. Each repetition
measures, in turns (who goes first alternates):

* **rig**: a fresh copy of the empty top; ``StreamJob`` with no speed limit, in this process,
  from ``rig.open`` to the job's end and the image's close (metadata written, file flushed);
* **qemu-img**: ``qemu-img convert -t writeback -O qcow2`` of the same chain into a new qcow2
  (the same reads and writes of the data, and a flush at the end), the process's wall time;
* **qemu-stream** (for scale, when qemu-storage-daemon and ``qemu.qmp`` are there): QEMU's own
  block-stream on a fresh copy of the top, from the QMP command to BLOCK_JOB_COMPLETED.

Throughput = virtual size / time; the median of the repetitions is reported with the range, and
the ratio rig / qemu-img against the goal (0.8). The page cache is warm for both (one unmeasured
run of each first). This is a benchmark, not a test: it prints PASS/MISS and exits 0 whenever it
could measure (2 when qemu-img is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MiB = 1 << 20
GOAL = 0.8


def sh(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def make_chain(d: Path, size: int) -> Path:
    raw = d / "fill.raw"
    block = bytes(range(256)) * (MiB // 256)
    with open(raw, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)
    sh("qemu-img", "convert", "-O", "qcow2", raw, d / "base.qcow2")
    raw.unlink()
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
       d / "mid.qcow2")
    cmds = [a for off in range(0, size, 4 * MiB) for a in ("-c", f"write -P 7 {off} 1M")]
    sh("qemu-io", *cmds, d / "mid.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2",
       d / "top.qcow2")
    return d / "top.qcow2"


def rig_run(top: Path, work: Path) -> float:
    import rig
    from rig.jobs import StreamJob

    img = work / "stream.qcow2"
    shutil.copyfile(top, img)
    start = time.perf_counter()
    with rig.open({"driver": "qcow2", "file": {"driver": "file", "filename": str(img)}}) as blk:
        job = StreamJob(blk)
        job.start()
        if job.wait() is not None:
            raise RuntimeError(f"the stream job failed: {job.error}")
    took = time.perf_counter() - start
    img.unlink()
    return took


def qemu_run(top: Path, work: Path) -> float:
    out = work / "convert.qcow2"
    start = time.perf_counter()
    sh("qemu-img", "convert", "-t", "writeback", "-O", "qcow2", top, out)
    took = time.perf_counter() - start
    out.unlink()
    return took


def _connect(sock: Path, timeout: float = 20.0) -> Any:
    """A QMP connection to the daemon, once it listens (the socket file appears a moment
    before it accepts)."""
    from qemu.qmp.legacy import QEMUMonitorProtocol

    deadline = time.monotonic() + timeout
    while True:
        qmp = QEMUMonitorProtocol(str(sock))
        try:
            qmp.connect(negotiate=True)
            return qmp
        except Exception:  # ConnectError, refused or missing socket: not listening yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def qsd_run(top: Path, work: Path) -> float:
    """QEMU's own block-stream (qemu-storage-daemon, QMP) on a fresh copy of the top: from the
    command to BLOCK_JOB_COMPLETED (the daemon's start-up is not counted)."""
    import json


    img = work / "qsd.qcow2"
    shutil.copyfile(top, img)
    sock = work / "qmp.sock"
    sock.unlink(missing_ok=True)  # a previous run's socket would look like a ready daemon
    node = {"driver": "qcow2", "node-name": "top",
            "file": {"driver": "file", "filename": str(img)}}
    proc = subprocess.Popen(["qemu-storage-daemon", "--chardev",
                             f"socket,path={sock},server=on,wait=off,id=m", "--monitor",
                             "chardev=m", "--blockdev", json.dumps(node)])
    try:
        qmp = _connect(sock)
        start = time.perf_counter()
        qmp.cmd("block-stream", device="top", **{"job-id": "s"})
        while True:
            ev = qmp.pull_event(wait=60)
            if ev is not None and ev["event"] == "BLOCK_JOB_COMPLETED":
                break
        took = time.perf_counter() - start
        with contextlib.suppress(Exception):  # the daemon may hang up before it answers
            qmp.cmd("quit")
        with contextlib.suppress(Exception):
            qmp.close()
    finally:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        img.unlink()
    return took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="64 MiB chain, 3 repetitions")
    p.add_argument("--size", type=int, help="chain size in MiB (default 256, quick 64)")
    p.add_argument("--reps", type=int, help="repetitions (default 5, quick 3)")
    p.add_argument("--dir", default="/var/tmp", help="where the images go (default /var/tmp)")
    args = p.parse_args(argv)
    size = (args.size or (64 if args.quick else 256)) * MiB
    reps = args.reps or (3 if args.quick else 5)
    missing = [t for t in ("qemu-img", "qemu-io") if shutil.which(t) is None]
    if missing:
        print(f"bench: missing tools: {', '.join(missing)} (Debian qemu-utils)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rig-bench-stream-", dir=args.dir) as tmp:
        d = Path(tmp)
        print(f"bench: making a {size // MiB} MiB chain in {d}", file=sys.stderr)
        top = make_chain(d, size)
        sides: dict[str, Callable[[Path, Path], float]] = {"rig": rig_run,
                                                          "qemu-img": qemu_run}
        if shutil.which("qemu-storage-daemon") and _has_qmp():
            sides["qemu-stream"] = qsd_run
        runs: dict[str, list[float]] = {name: [] for name in sides}
        for fn in sides.values():
            fn(top, d)  # warm-up: page cache, imports
        for i in range(reps):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                runs[name].append(sides[name](top, d))
                print(f"bench: rep {i + 1}/{reps} {name}: {runs[name][-1]:.3f} s",
                      file=sys.stderr)
    mibs = {k: [size / MiB / t for t in v] for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in mibs.items()}
    print(f"{'':12} {'MiB/s (median)':>15} {'range':>20}")
    for k, v in mibs.items():
        print(f"{k:12} {med[k]:15.0f} {min(v):9.0f} - {max(v):8.0f}")
    ratio = med["rig"] / med["qemu-img"]
    verdict = "PASS" if ratio >= GOAL else "MISS"
    print(f"ratio rig/qemu-img: {ratio:.2f}x (goal >= {GOAL}x) {verdict}")
    if "qemu-stream" in med:
        print(f"ratio rig/qemu-stream: {med['rig'] / med['qemu-stream']:.2f}x (for scale: "
              "QEMU's own stream job, same chunking)")
    return 0


def _has_qmp() -> bool:
    try:
        import qemu.qmp  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
