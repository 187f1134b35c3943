"""blockrig benchmark: ``rig io`` against fio (same loop device) and qemu-io (same raw file).

Run as root from the repository root::

    .venv/bin/python bench/run.py            # full run, each measurement >= ~2.5 s
    .venv/bin/python bench/run.py --quick    # smoke run, ~0.5 s per measurement

See bench/README.md for what is measured and how to read the ratios. This is a benchmark, not a
test: it prints PASS/MISS next to each target and always exits 0 when it managed to measure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import startup as start_up  # bench/startup.py (this directory is on sys.path when run)

MiB = 1 << 20
KiB = 1 << 10

#: Targets from the issue: (ratio kind, bound). "min": rig/fio >= bound; "max": rig/qemu <= bound.
TARGET_SEQ = 0.95
TARGET_4K = 0.85
TARGET_QEMU = 1.0


# -------------------------------------------------------------------------------- plumbing
def rig_command() -> list[str]:
    """The ``rig`` console script next to this interpreter (as installed in the venv)."""
    script = Path(sys.executable).parent / "rig"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "rig"]


#: Environment for the processes under test (set by :func:`main`).
CHILD_ENV: dict[str, str] = dict(os.environ)


def run_timed(argv: list[str], script: Path | None, out: Path | None = None) -> float:
    """Run ``argv`` with ``script`` as stdin; return the process wall time in seconds.

    stdout goes to ``out`` (or /dev/null); a non-zero exit status is an error, because then the
    number would not mean anything.
    """
    stdin = script.open("rb") if script is not None else subprocess.DEVNULL
    stdout = out.open("wb") if out is not None else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                              env=CHILD_ENV, check=False)
        wall = time.perf_counter() - t0
    finally:
        for f in (stdin, stdout):
            if not isinstance(f, int):
                f.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
    return wall


def check_output_clean(out: Path, what: str) -> None:
    """The scripts use -q everywhere: any output line other than qemu-io's prompt is a failure
    (an I/O error or a pattern mismatch), which would make the timing meaningless."""
    text = out.read_text(errors="replace").replace("qemu-io> ", "").strip()
    if text:
        raise RuntimeError(f"{what} printed unexpected output: {text[:300]!r}")


@dataclass
class FioResult:
    bw: float  # bytes/s over fio's own job runtime
    iops: float
    wall: float


def run_fio(dev: str, rw: str, bs: int, io_size: int, seed: int = 1) -> FioResult:
    argv = ["fio", "--name=bench", f"--filename={dev}", f"--rw={rw}", f"--bs={bs}",
            "--ioengine=psync", "--direct=1", "--iodepth=1", "--numjobs=1",
            f"--io_size={io_size}", "--randrepeat=1", f"--randseed={seed}", "--norandommap",
            "--output-format=json"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"fio failed: {proc.stderr.strip()[-500:]}")
    job = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]
    side = job["write"] if rw in ("write", "randwrite") else job["read"]
    return FioResult(bw=float(side["bw_bytes"]), iops=float(side["iops"]), wall=wall)


# ----------------------------------------------------------------------------- scripts
def seq_script(path: Path, op: str, dev_size: int, bs: int, total: int) -> int:
    """``op -q OFF bs`` lines walking the device from 0, wrapping around; returns line count."""
    blocks = dev_size // bs
    n = max(1, total // bs)
    with path.open("w") as f:
        f.writelines(f"{op} -q {(i % blocks) * bs} {bs}\n" for i in range(n))
    return n


def rand_script(path: Path, dev_size: int, bs: int, n: int, seed: int) -> int:
    """``read -q OFF 4k`` at uniformly random ``bs``-aligned offsets (seeded)."""
    rng = random.Random(seed)
    blocks = dev_size // bs
    with path.open("w") as f:
        f.writelines(f"read -q {rng.randrange(blocks) * bs} {bs}\n" for _ in range(n))
    return n


def mixed_script(path: Path, file_size: int, n: int, seed: int) -> int:
    """Writes with a pattern, read-back verification of what was written, and periodic flushes:
    sizes 4k..64k at random 4k-aligned offsets. Every op carries -q."""
    rng = random.Random(seed)
    lines = []
    ops = 0
    while ops < n:
        size = rng.choice((4, 8, 16, 64)) * KiB
        off = rng.randrange((file_size - size) // (4 * KiB)) * 4 * KiB
        pat = rng.randrange(1, 256)
        lines.append(f"write -q -P 0x{pat:x} {off} {size}\n")
        lines.append(f"read -q -P 0x{pat:x} {off} {size}\n")
        ops += 2
        if rng.random() < 0.1:
            lines.append("flush\n")
            ops += 1
    path.write_text("".join(lines))
    return ops


# --------------------------------------------------------------------------- statistics
@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, scale: float = 1.0, digits: int = 0) -> str:
        vs = [v * scale for v in self.values]
        return (f"{statistics.median(vs):.{digits}f} "
                f"[{min(vs):.{digits}f}-{max(vs):.{digits}f}]")


def ratio_series(a: Series, b: Series) -> Series:
    """Per-repetition ratios a/b (runs of one repetition were measured back to back)."""
    return Series([x / y for x, y in zip(a.values, b.values, strict=True)])


def verdict(value: float, bound: float, kind: str) -> str:
    ok = value >= bound if kind == "min" else value <= bound
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------------------ part 1
@dataclass
class FioCase:
    name: str
    rw: str  # fio's rw
    op: str  # rig io command
    bs: int
    unit: str  # "MB/s" or "IOPS"
    target: float
    fio: Series = field(default_factory=Series)
    rig_net: Series = field(default_factory=Series)
    rig_gross: Series = field(default_factory=Series)
    work: int = 0  # bytes per run
    script: Path | None = None


def part1(args: argparse.Namespace, tmp: Path,
          log: Callable[[str], None]) -> tuple[list[FioCase], Series]:
    """Returns the cases and rig io's startup+shutdown time (empty script) in seconds."""
    from rig.drivers.loop import scratch_loop

    rig = rig_command()
    size = args.size
    cases = [
        FioCase("seq read 1M", "read", "read", MiB, "MB/s", TARGET_SEQ),
        FioCase("seq write 1M", "write", "write", MiB, "MB/s", TARGET_SEQ),
        FioCase("rand read 4k QD1", "randread", "read", 4 * KiB, "IOPS", TARGET_4K),
    ]
    startup = Series()
    with scratch_loop(size, block_size=512, direct_io=True, dir=args.dir) as loopdev:
        dev = str(loopdev.path)
        log(f"loop device {dev}: {size // MiB} MiB over a sparse file in {args.dir}, "
            "direct-io on, 512-byte blocks")
        # Fill the device so reads hit allocated blocks, not holes of the backing file.
        log("filling the device with data (fio sequential write, not timed)")
        run_fio(dev, "write", MiB, size)
        base = [*rig, "io", "-t", "none", "-f", "raw", "--allow", dev, dev]
        empty = tmp / "empty.txt"
        empty.write_text("")
        run_timed(base, empty)  # warm the page cache for the interpreter and modules

        # Calibrate: a short fio run gives the rate; size the work to take args.seconds.
        for c in cases:
            probe = 64 * MiB if c.bs == MiB else 2 * MiB
            r = run_fio(dev, c.rw, c.bs, min(probe, size))
            rate = r.bw if r.bw > 0 else 1.0
            work = int(rate * args.seconds)
            c.work = max(c.bs * 64, work // c.bs * c.bs)
            c.script = tmp / f"{c.rw}.txt"
            if c.rw == "randread":
                rand_script(c.script, size, c.bs, c.work // c.bs, seed=args.seed)
            else:
                seq_script(c.script, c.op, size, c.bs, c.work)
            log(f"  {c.name}: {c.work // c.bs} requests ({c.work / MiB:.0f} MiB) per run")

        for rep in range(args.reps):
            startup.add(run_timed(base, empty))
            for c in cases:
                assert c.script is not None

                def do_fio(c: FioCase = c) -> None:
                    r = run_fio(dev, c.rw, c.bs, c.work, seed=args.seed)
                    c.fio.add(r.bw / 1e6 if c.unit == "MB/s" else r.iops)

                def do_rig(c: FioCase = c) -> None:
                    wall = run_timed(base, c.script)
                    n = c.work // c.bs
                    for series, t in ((c.rig_gross, wall), (c.rig_net, wall - startup.median)):
                        series.add(c.work / t / 1e6 if c.unit == "MB/s" else n / t)

                # Alternate who goes first, so slow drift favours neither side.
                for fn in (do_fio, do_rig) if rep % 2 == 0 else (do_rig, do_fio):
                    fn()
            log(f"  repetition {rep + 1}/{args.reps} done")
    return cases, startup


# ------------------------------------------------------------------------------ part 2
@dataclass
class QemuCase:
    name: str
    script: Path
    ops: int
    qemu: Series = field(default_factory=Series)
    rig: Series = field(default_factory=Series)


def part2(args: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> list[QemuCase]:
    rig = rig_command()
    size = args.file_size
    image = Path(tempfile.mkstemp(prefix="rig-bench-", suffix=".img", dir=args.dir)[1])
    try:
        log(f"raw file {image}: {size // MiB} MiB, filled with data")
        with image.open("r+b") as f:
            chunk = os.urandom(MiB)
            for _ in range(size // MiB):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        qemu_argv = ["qemu-io", "-f", "raw", "-t", "none", str(image)]
        rig_argv = [*rig, "io", "-f", "raw", "-t", "none", str(image)]
        out = tmp / "out.txt"

        def calibrate(make: Callable[[Path, int], int], name: str) -> QemuCase:
            probe = tmp / f"{name}-probe.txt"
            n = make(probe, 400)
            t = run_timed(qemu_argv, probe, out)
            t0 = run_timed(qemu_argv, None, out)  # qemu-io's own startup
            per_op = max((t - t0) / n, 1e-6)
            n = max(200, int(args.seconds / per_op))
            script = tmp / f"{name}.txt"
            n = make(script, n)
            log(f"  {name}: {n} commands per run")
            return QemuCase(name, script, n)

        cases = [
            calibrate(lambda p, n: mixed_script(p, size, n, args.seed), "mixed"),
            calibrate(lambda p, n: rand_script(p, size, 4 * KiB, n, args.seed),
                      "rand read 4k"),
        ]
        run_timed(rig_argv, None, out)  # warm-up
        for rep in range(args.reps):
            for c in cases:
                def do_qemu(c: QemuCase = c) -> None:
                    c.qemu.add(run_timed(qemu_argv, c.script, out))
                    check_output_clean(out, "qemu-io")

                def do_rig(c: QemuCase = c) -> None:
                    c.rig.add(run_timed(rig_argv, c.script, out))
                    check_output_clean(out, "rig io")

                for fn in (do_qemu, do_rig) if rep % 2 == 0 else (do_rig, do_qemu):
                    fn()
            log(f"  repetition {rep + 1}/{args.reps} done")
        return cases
    finally:
        with contextlib.suppress(FileNotFoundError):
            image.unlink()


# ------------------------------------------------------------------------------ report
def print_report(p1: list[FioCase], startup: Series | None, p2: list[QemuCase]) -> None:
    print()
    print("All numbers: median of the repetitions [min-max].")
    if p1:
        print()
        print("1. rig io vs fio (psync, direct=1, QD1) on the same loop device")
        if startup is not None:
            print(f"   rig io startup+shutdown (empty script): {startup.fmt(1000, 1)} ms")
        hdr = (f"   {'case':<18} {'unit':<5} {'fio':>20} {'rig io (net)':>20} "
               f"{'rig io (gross)':>20} {'rig/fio net':>18} {'gross':>6}  target")
        print(hdr)
        print("   " + "-" * (len(hdr) - 3))
        for c in p1:
            net = ratio_series(c.rig_net, c.fio)
            gross = ratio_series(c.rig_gross, c.fio)
            print(f"   {c.name:<18} {c.unit:<5} {c.fio.fmt():>20} {c.rig_net.fmt():>20} "
                  f"{c.rig_gross.fmt():>20} {net.fmt(1, 2):>18} {gross.median:>6.2f}  "
                  f">= {c.target:.2f} {verdict(net.median, c.target, 'min')}")
        print("   net = rig io wall time minus its startup+shutdown time; gross = full wall time.")
    if p2:
        print()
        print("2. rig io vs qemu-io (-f raw -t none), same file, same script, process wall time")
        hdr = (f"   {'script':<14} {'cmds':>7} {'qemu-io s':>18} {'rig io s':>18} "
               f"{'rig/qemu':>18}  target")
        print(hdr)
        print("   " + "-" * (len(hdr) - 3))
        for q in p2:
            r = ratio_series(q.rig, q.qemu)
            print(f"   {q.name:<14} {q.ops:>7} {q.qemu.fmt(1, 3):>18} {q.rig.fmt(1, 3):>18} "
                  f"{r.fmt(1, 2):>18}  <= {TARGET_QEMU:.2f} "
                  f"{verdict(r.median, TARGET_QEMU, 'max')}")
        print("   rig/qemu < 1 means rig io finished the script sooner (lower is better).")


def environment() -> str:
    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        except OSError:
            return "missing"
        return out.splitlines()[0].strip() if out else "?"

    return (f"kernel {platform.release()}, {os.cpu_count()} CPUs, python "
            f"{platform.python_version()}, {version(['fio', '--version'])}, "
            f"{version(['qemu-io', '--version'])}")


@contextlib.contextmanager
def scratch_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rig-bench-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short runs (~0.5 s per measurement, smaller device): a smoke test")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median)")
    p.add_argument("--dir", default="/var/tmp",
                   help="where the loop backing file and the raw file go (ext4, O_DIRECT)")
    p.add_argument("--seed", type=int, default=1, help="RNG seed for random offsets")
    p.add_argument("--only", choices=("fio", "qemu", "startup"), help="run only one part")
    p.add_argument("--as-is", action="store_true",
                   help="run rig io with the environment unchanged (by default a bytecode cache "
                   "in a scratch directory is enabled, see README)")
    args = p.parse_args(argv)
    args.seconds = 0.5 if args.quick else 2.5
    args.size = (256 if args.quick else 1024) * MiB
    args.file_size = (64 if args.quick else 256) * MiB

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    missing = [t for t in ("fio", "qemu-io") if shutil.which(t) is None]
    if missing:
        log(f"bench: missing tools: {', '.join(missing)}")
        return 2
    if os.geteuid() != 0 and args.only not in ("qemu", "startup"):
        log("bench: part 1 needs root (loop devices); run as root or pass --only qemu")
        return 2
    log(environment())
    p1: list[FioCase] = []
    p2: list[QemuCase] = []
    startup: Series | None = None
    p3 = ""
    with scratch_tmp() as tmp:
        if not args.as_is:
            # A normal installation has bytecode caches. Enable them for rig io even when the
            # environment turns them off, but outside the source tree (nothing is left behind).
            CHILD_ENV.pop("PYTHONDONTWRITEBYTECODE", None)
            CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        elif os.environ.get("PYTHONDONTWRITEBYTECODE"):
            log("note: PYTHONDONTWRITEBYTECODE is set: rig io compiles its modules at every start")
        if args.only in (None, "fio"):
            log("part 1: rig io vs fio on a loop device")
            p1, startup = part1(args, tmp, log)
        if args.only in (None, "qemu"):
            log("part 2: rig io vs qemu-io on a raw file")
            p2 = part2(args, tmp, log)
        if args.only in (None, "startup"):
            log("part 3: start-up, rig io vs qemu-io (bench/startup.py)")
            p3 = start_up.report(start_up.measure_in(args.dir, max(10, args.reps), CHILD_ENV))
    print_report(p1, startup, p2)
    if p3:
        print()
        print("3. start-up: -c 'read 0 4k' on a 16 MiB raw file, whole process, interleaved")
        print("\n".join("   " + line for line in p3.splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
