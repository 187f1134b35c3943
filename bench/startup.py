"""Start-up: ``rig io -c 'read 0 4k' FILE`` against ``qemu-io`` doing the same (issue 19).

    .venv/bin/python bench/startup.py             # 10 runs of each, interleaved
    .venv/bin/python bench/startup.py --reps 30

Both read 4 KiB from a 16 MiB raw file (``-f`` not given: both probe the format and print the
same warning) and exit; the whole process is timed, wall clock and CPU (user + system, from the
kernel's accounting of the finished child). ``python -c pass`` with the same interpreter is
measured too: the floor no Python program can go under. Runs are interleaved (qemu-io, rig io,
python, qemu-io, ...) so drift of a shared machine favours none of them; the load average is
printed with the numbers. Goal (issue 19): rig io's median wall time at most 50 ms.

``bench/run.py`` runs this as its part 3. Like it, by default rig io gets a bytecode cache in a
scratch directory when the environment sets ``PYTHONDONTWRITEBYTECODE`` (see README,
"Bytecode"); ``--as-is`` leaves the environment alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

#: The goal for rig io's median wall time, in seconds.
TARGET = 0.050
IMAGE_SIZE = 16 << 20


def rig_command() -> list[str]:
    """The ``rig`` console script next to this interpreter (as installed in the venv)."""
    script = Path(sys.executable).parent / "rig"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rig"]


def run_once(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``argv`` (output discarded; it must exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


class Timing:
    def __init__(self, name: str) -> None:
        self.name = name
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def add(self, sample: tuple[float, float]) -> None:
        self.wall.append(sample[0])
        self.cpu.append(sample[1])

    def line(self) -> str:
        w, c = self.wall, self.cpu
        return (f"{self.name:<12} wall {statistics.median(w) * 1000:7.1f} ms "
                f"[{min(w) * 1000:.1f}-{max(w) * 1000:.1f}]   cpu "
                f"{statistics.median(c) * 1000:6.1f} ms [{min(c) * 1000:.1f}-{max(c) * 1000:.1f}]")


def measure(image: Path, reps: int, env: dict[str, str]) -> list[Timing]:
    """Interleaved runs of qemu-io, rig io and the bare interpreter on ``image``."""
    argvs = {
        "qemu-io": ["qemu-io", "-c", "read 0 4k", str(image)],
        "rig io": [*rig_command(), "io", "-c", "read 0 4k", str(image)],
        "python": [sys.executable, "-c", "pass"],
    }
    for argv in argvs.values():  # warm the page cache (and rig io's bytecode cache)
        run_once(argv, env)
    timings = {name: Timing(name) for name in argvs}
    for _ in range(reps):
        for name, argv in argvs.items():
            timings[name].add(run_once(argv, env))
    return list(timings.values())


def report(timings: list[Timing]) -> str:
    by_name = {t.name: t for t in timings}
    rig = statistics.median(by_name["rig io"].wall)
    qemu = statistics.median(by_name["qemu-io"].wall)
    verdict = "PASS" if rig <= TARGET else "**MISS**"
    lines = [t.line() for t in timings]
    lines.append(f"rig io / qemu-io wall {rig / qemu:.1f}x; rig io median {rig * 1000:.1f} ms, "
                 f"target <= {TARGET * 1000:.0f} ms {verdict} (load average "
                 f"{os.getloadavg()[0]:.2f})")
    return "\n".join(lines)


@contextlib.contextmanager
def scratch_image(directory: str) -> Iterator[Path]:
    fd, name = tempfile.mkstemp(prefix="rig-startup-", suffix=".img", dir=directory)
    try:
        os.ftruncate(fd, IMAGE_SIZE)
        os.close(fd)
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def measure_in(directory: str, reps: int, env: dict[str, str]) -> list[Timing]:
    """:func:`measure` on a scratch image in ``directory`` (removed afterwards)."""
    with scratch_image(directory) as image:
        return measure(image, reps, env)


def child_env(cache_dir: Path | None) -> dict[str, str]:
    """The environment for the runs: with ``cache_dir``, bytecode caches on (outside the
    source tree) even if the environment turned them off."""
    env = dict(os.environ)
    if cache_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=10, help="runs of each program (median)")
    p.add_argument("--dir", default="/var/tmp", help="where the 16 MiB raw file goes")
    p.add_argument("--as-is", action="store_true",
                   help="leave PYTHONDONTWRITEBYTECODE and the bytecode cache alone")
    args = p.parse_args(argv)
    if shutil.which("qemu-io") is None:
        print("bench: missing tool: qemu-io", file=sys.stderr)
        return 2
    cache = Path(tempfile.mkdtemp(prefix="rig-startup-pyc-"))
    try:
        env = child_env(None if args.as_is else cache)
        print(report(measure_in(args.dir, args.reps, env)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
