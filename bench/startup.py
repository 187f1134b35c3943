"""Start-up: ``rig io -c 'read 0 4k' FILE`` against ``qemu-io`` doing the same (issue 19).

    .venv/bin/python bench/startup.py             # 10 runs of each, interleaved
    .venv/bin/python bench/startup.py --reps 30

Both read 4 KiB from a 16 MiB raw file (``-f`` not given: both probe the format and print the
same warning) and exit; the whole process is timed, wall clock and CPU (user + system, from the
kernel's accounting of the finished child). ``python -c pass`` with the same interpreter is
measured too: the floor no Python program can go under. Runs are interleaved (qemu-io, rig io,
python, qemu-io, ...) so drift of a shared machine favours none of them; the load average is
printed with the numbers. Goal (issue 19): rig io's median wall time at most 50 ms.

Two ``rig`` are timed. ``rig io`` is what a user runs: a regular (non-editable) install of the
working tree in a fresh venv made from the base interpreter, built once with pip and kept under
``~/.cache/blockrig/startup/`` keyed by a hash of the sources (``--no-install`` skips it). The
goal applies to it. ``rig io dev`` is the development venv's editable install: its
interpreter starts slower (setuptools' editable finder, loaded by a ``.pth`` at every start,
imports pathlib, urllib and more before any of the rig's code runs), a cost no user pays.

``bench/run.py`` runs this as its part 3. Like it, by default rig io gets a bytecode cache in a
scratch directory when the environment sets ``PYTHONDONTWRITEBYTECODE`` (see README,
"Bytecode"); ``--as-is`` leaves the environment alone.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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

#: The goal for rig io's median wall time, in seconds (for the regular install).
TARGET = 0.050
IMAGE_SIZE = 16 << 20
#: The source tree, and what of it a regular install is built from (the wheel's inputs).
REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "rig", "drivers", "cli", "fixtures")
#: Where the regular install is kept: one venv, for the newest hash of the sources.
CACHE = Path.home() / ".cache" / "blockrig" / "startup"


def rig_command() -> list[str]:
    """The ``rig`` console script next to this interpreter (as installed in the venv)."""
    script = Path(sys.executable).parent / "rig"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rig"]


def base_python() -> str:
    """The interpreter this venv was made from (a fresh venv made from it has no .pth of ours)."""
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def source_files() -> list[str]:
    """The files a wheel of the working tree is built from, relative to :data:`REPO`."""
    found: list[str] = []
    for name in SOURCES:
        top = REPO / name
        if top.is_file():
            found.append(name)
            continue
        for path in top.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.append(str(path.relative_to(REPO)))
    return sorted(found)


def sources_key(files: Sequence[str]) -> str:
    """A hash of the files' names and contents and of the base interpreter."""
    h = hashlib.sha256(f"{base_python()} {sys.version}\n".encode())
    for rel in files:
        h.update(rel.encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def regular_install() -> Path:
    """The ``rig`` script of a regular install of the working tree (built if not cached).

    A fresh venv from the base interpreter (with pip, as ``python -m venv`` makes it), and
    ``pip install --no-deps`` of a copy of the sources (the copy keeps ``build/`` and
    ``*.egg-info`` out of the tree). Raises :class:`RuntimeError` when pip fails (offline).
    """
    files = source_files()
    root = CACHE / sources_key(files)
    rig = root / "venv" / "bin" / "rig"
    if (root / "complete").exists() and rig.exists():
        return rig
    if CACHE.exists():  # installs of older sources are of no further use
        for old in CACHE.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    src = root / "src"
    try:
        for rel in files:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, src / rel)
        for argv in ([base_python(), "-m", "venv", str(root / "venv")],
                     [str(root / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                      "--disable-pip-version-check", "--no-deps", str(src)]):
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                tail = (p.stderr.strip().splitlines() or ["?"])[-1]
                raise RuntimeError(f"{' '.join(argv[:4])}... exited {p.returncode}: {tail}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    shutil.rmtree(src, ignore_errors=True)
    (root / "complete").touch()
    return rig


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
        return (f"{self.name:<13} wall {statistics.median(w) * 1000:7.1f} ms "
                f"[{min(w) * 1000:.1f}-{max(w) * 1000:.1f}]   cpu "
                f"{statistics.median(c) * 1000:6.1f} ms [{min(c) * 1000:.1f}-{max(c) * 1000:.1f}]")


def measure(image: Path, reps: int, env: dict[str, str],
            installed: Path | None = None) -> list[Timing]:
    """Interleaved runs of qemu-io, rig io and the bare interpreter on ``image``: the regular
    install's (``installed``, its ``rig`` script) if given, and the development venv's."""
    read = ["io", "-c", "read 0 4k", str(image)]
    argvs = {"qemu-io": ["qemu-io", "-c", "read 0 4k", str(image)]}
    if installed is not None:
        argvs["rig io"] = [str(installed), *read]
        argvs["python"] = [str(installed.parent / "python"), "-c", "pass"]
    argvs["rig io dev"] = [*rig_command(), *read]
    argvs["python dev"] = [sys.executable, "-c", "pass"]
    for argv in argvs.values():  # warm the page cache (and rig io's bytecode cache)
        run_once(argv, env)
    timings = {name: Timing(name) for name in argvs}
    for _ in range(reps):
        for name, argv in argvs.items():
            timings[name].add(run_once(argv, env))
    return list(timings.values())


def report(timings: list[Timing]) -> str:
    by_name = {t.name: t for t in timings}
    name = "rig io" if "rig io" in by_name else "rig io dev"
    rig = statistics.median(by_name[name].wall)
    qemu = statistics.median(by_name["qemu-io"].wall)
    verdict = "PASS" if rig <= TARGET else "**MISS**"
    lines = [t.line() for t in timings]
    lines.append(f"{name} / qemu-io wall {rig / qemu:.1f}x; {name} median {rig * 1000:.1f} ms, "
                 f"target <= {TARGET * 1000:.0f} ms {verdict} (load average "
                 f"{os.getloadavg()[0]:.2f})")
    if name == "rig io":
        lines.append("rig io: a regular install in a fresh venv (the target's); rig io dev: the "
                     "editable install, whose .pth finder costs every start")
    else:
        lines.append("no regular install (--no-install or pip failed): the target is checked on "
                     "the editable install, which starts slower than a user's")
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


def measure_in(directory: str, reps: int, env: dict[str, str],
               regular: bool = True) -> list[Timing]:
    """:func:`measure` on a scratch image in ``directory`` (removed afterwards), with the
    regular install (built or found in the cache) unless ``regular`` is false or pip fails."""
    installed = None
    if regular:
        try:
            installed = regular_install()
        except (OSError, RuntimeError) as e:
            print(f"bench: no regular install of the rig: {e}", file=sys.stderr)
    with scratch_image(directory) as image:
        return measure(image, reps, env, installed)


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
    p.add_argument("--no-install", action="store_true",
                   help="time only the development venv's rig (no regular install is built)")
    args = p.parse_args(argv)
    if shutil.which("qemu-io") is None:
        print("bench: missing tool: qemu-io", file=sys.stderr)
        return 2
    cache = Path(tempfile.mkdtemp(prefix="rig-startup-pyc-"))
    try:
        env = child_env(None if args.as_is else cache)
        print(report(measure_in(args.dir, args.reps, env, not args.no_install)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
