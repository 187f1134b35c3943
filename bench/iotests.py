"""QEMU 7.2's qemu-iotests against ``rig io`` (issue 19): fetch, pick the reference set, run.

Called by ``bench/iotests.sh``; see docs/iotests.md. A benchmark run by hand, not part of CI.

1. Fetch: QEMU's own tests from Debian's ``qemu`` source package of the installed qemu-utils
   (``apt-get source --download-only`` with deb-src entries derived from the configured deb
   entries in a private apt directory; ``dpkg-source -x`` applies Debian's patches, which carry
   the 7.2.x stable releases). Only ``tests/qemu-iotests`` and ``python/`` are kept, in
   ``$XDG_CACHE_HOME/blockrig/iotests/7.2`` (default ``~/.cache``).
2. Reference set: the (test, format) pairs, protocol ``file``, formats raw and qcow2, that need
   only qemu-io and qemu-img and that the system's qemu-io passes. "Only qemu-io and qemu-img":
   QEMU_PROG, QEMU_NBD_PROG and QSD_PROG point at a stub that fails, so a test that starts a VM,
   an NBD server or the storage daemon fails with the real qemu-io too and stays out. Tests that
   name those programs are not even tried. The list is cached next to the tests, keyed by the
   qemu-io version.
3. Run: every reference pair with ``QEMU_IO_PROG`` = a two-line wrapper that execs ``rig io``
   (with ``RIG_IO_NAME=qemu-io``, so messages carry qemu-io's program name as in the golden
   files), ``QEMU_IMG_PROG=/usr/bin/qemu-img``. Prints pass counts, each failure's first diff
   lines, and the wall time next to qemu-io's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORMATS = ("raw", "qcow2")
QEMU_IO = "/usr/bin/qemu-io"
QEMU_IMG = "/usr/bin/qemu-img"
#: A test naming any of these starts something other than qemu-io and qemu-img.
NEEDS_MORE = re.compile(
    r"_launch_qemu|QEMU_PROG|_qemu_nbd|qemu_nbd|QEMU_NBD|_qsd|QSD_PROG|qemu_storage_daemon"
    r"|iotests\.VM|\bVM\(|QemuStorageDaemon|_send_qemu_cmd|nbd_server")
STUB = """#!/bin/sh
# iotests bench: this test needs more than qemu-io and qemu-img
[ "$*" = "-machine help" ] && exit 0
echo "iotests stub: $0 $*" >&2
exit 1
"""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blockrig" / "iotests" / "7.2"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- 1. fetch ------------------------------------------------------------------------------

def deb_src_entries() -> tuple[str, str]:
    """(one-line list, deb822 text): every configured ``deb`` entry as ``deb-src``."""
    lines: list[str] = []
    stanzas: list[str] = []
    etc = Path("/etc/apt")
    for f in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if f.is_file():
            for line in f.read_text().splitlines():
                if re.match(r"\s*deb\s", line):
                    lines.append(re.sub(r"^\s*deb\s", "deb-src ", line))
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields = {m.group(1).lower(): m.group(2).strip() for m in
                      re.finditer(r"^([A-Za-z-]+):(.*)$", stanza, re.M)}
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            stanzas.append(re.sub(r"^Types:.*$", "Types: deb-src", stanza, flags=re.M | re.I))
    return "\n".join(lines) + "\n", "\n\n".join(stanzas) + "\n"


def source_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${source:Version}", "qemu-utils"],
                         capture_output=True, text=True, check=False)
    if out.returncode or not out.stdout.strip():
        raise SystemExit("iotests: qemu-utils is not installed (Debian's qemu-io and qemu-img "
                         "are the reference): apt-get install qemu-utils")
    return out.stdout.strip()


def fetch(root: Path) -> None:
    if (root / "tests" / "qemu-iotests" / "check").exists() and (root / "python").is_dir():
        return
    version = source_version()
    if not version.split(":")[-1].startswith("7.2"):
        raise SystemExit(f"iotests: qemu-utils {version} is not QEMU 7.2")
    root.parent.mkdir(parents=True, exist_ok=True)
    say(f"iotests: fetching qemu {version} source (tests/qemu-iotests and python/) ...")
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp_name:
        tmp = Path(tmp_name)
        parts = tmp / "sources.list.d"
        parts.mkdir()
        one_line, deb822 = deb_src_entries()
        (tmp / "sources.list").write_text(one_line)
        (parts / "src.sources").write_text(deb822)
        for d in ("lists/partial", "cache/archives/partial"):
            (tmp / d).mkdir(parents=True)
        apt = ["apt-get", "-q", "-o", f"Dir::Etc::sourcelist={tmp}/sources.list",
               "-o", f"Dir::Etc::sourceparts={parts}", "-o", f"Dir::State::Lists={tmp}/lists",
               "-o", f"Dir::Cache={tmp}/cache", "-o", "APT::Sandbox::User=root"]
        src = tmp / "src"
        src.mkdir()
        for cmd in ([*apt, "update"], [*apt, "source", "--download-only", f"qemu={version}"]):
            r = subprocess.run(cmd, cwd=src, capture_output=True, text=True, check=False)
            if r.returncode:
                raise SystemExit(f"iotests: {' '.join(cmd[:1] + cmd[-2:])} failed:\n"
                                 f"{r.stdout[-2000:]}{r.stderr[-2000:]}")
        dsc = next(src.glob("qemu_*.dsc"))
        r = subprocess.run(["dpkg-source", "-x", dsc.name, "x"], cwd=src,
                           capture_output=True, text=True, check=False)
        if r.returncode:
            raise SystemExit(f"iotests: dpkg-source -x failed:\n{r.stderr[-2000:]}")
        staged = tmp / "7.2"
        (staged / "tests").mkdir(parents=True)
        shutil.move(src / "x" / "tests" / "qemu-iotests", staged / "tests" / "qemu-iotests")
        shutil.move(src / "x" / "python", staged / "python")
        (staged / "VERSION").write_text(version + "\n")
        if root.exists():
            shutil.rmtree(root)
        staged.rename(root)
    say(f"iotests: cached in {root}")


# --- 2. running one pair -------------------------------------------------------------------

@dataclass
class Result:
    test: str
    fmt: str
    status: str  # pass, fail, skip
    seconds: float
    detail: list[str]


def tools(root: Path, rig: str) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "stub"
    stub.write_text(STUB)
    wrapper = bin_dir / "rig-io"
    wrapper.write_text(f'#!/bin/sh\nRIG_IO_NAME=qemu-io exec {rig} io "$@"\n')
    for f in (stub, wrapper):
        f.chmod(0o755)
    return bin_dir


def run_one(root: Path, bin_dir: Path, prog: str, fmt: str, test: str,
            scratch: Path, timeout: float) -> Result:
    iotests = root / "tests" / "qemu-iotests"
    test_dir = scratch / f"{Path(prog).name}-{fmt}-{test.replace('/', '_')}"
    test_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, QEMU_IO_PROG=prog, QEMU_IMG_PROG=QEMU_IMG,
               QEMU_PROG=str(bin_dir / "stub"), QEMU_NBD_PROG=str(bin_dir / "stub"),
               QSD_PROG=str(bin_dir / "stub"), TEST_DIR=str(test_dir))
    env.pop("RIG_IO_NAME", None)
    start = time.monotonic()
    name = test.removeprefix("tests/")  # check takes a tests/ test by its bare name
    p = subprocess.Popen([sys.executable, "./check", "-tap", f"-{fmt}", "-file", name],
                         cwd=iotests, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        shutil.rmtree(test_dir, ignore_errors=True)
        return Result(test, fmt, "fail", time.monotonic() - start, [f"timed out after "
                                                                    f"{timeout:.0f} s"])
    seconds = time.monotonic() - start
    shutil.rmtree(test_dir, ignore_errors=True)
    lines = out.splitlines()
    status, detail = "fail", lines[-20:]
    for i, line in enumerate(lines):
        if line.startswith("ok ") and "# SKIP" in line:
            status, detail = "skip", [line.split("# SKIP", 1)[1].strip()]
        elif line.startswith("ok "):
            status, detail = "pass", []
        elif line.startswith("not ok "):
            status, detail = "fail", [x for x in lines[i + 1:] if not x.startswith("# ")]
    return Result(test, fmt, status, seconds, detail)


def run_all(root: Path, bin_dir: Path, prog: str, pairs: list[tuple[str, str]], jobs: int,
            timeout: float, progress: bool = True) -> list[Result]:
    scratch = Path(tempfile.mkdtemp(prefix="iotests-", dir=os.environ.get("TMPDIR", "/tmp")))
    results: list[Result] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futs = [pool.submit(run_one, root, bin_dir, prog, fmt, test, scratch, timeout)
                    for fmt, test in pairs]
            for n, fut in enumerate(concurrent.futures.as_completed(futs), 1):
                r = fut.result()
                results.append(r)
                if progress:
                    say(f"  [{n}/{len(pairs)}] {Path(prog).name} {r.fmt} {r.test}: "
                        f"{r.status} ({r.seconds:.1f} s)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    order = {pair: i for i, pair in enumerate(pairs)}
    return sorted(results, key=lambda r: order[(r.fmt, r.test)])


# --- 3. the reference set ------------------------------------------------------------------

def all_tests(root: Path) -> list[str]:
    iotests = root / "tests" / "qemu-iotests"
    names = sorted(p.name for p in iotests.iterdir() if re.fullmatch(r"\d{3}", p.name))
    names += sorted(f"tests/{p.name}" for p in (iotests / "tests").iterdir()
                    if not p.name.endswith(".out") and "." not in p.name)
    return names


def candidates(root: Path) -> list[str]:
    iotests = root / "tests" / "qemu-iotests"
    return [t for t in all_tests(root)
            if not NEEDS_MORE.search((iotests / t).read_text(errors="replace"))]


def qemu_io_version() -> str:
    out = subprocess.run([QEMU_IO, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def reference(root: Path, bin_dir: Path, jobs: int, timeout: float,
              refresh: bool) -> dict[tuple[str, str], float]:
    """{(fmt, test): qemu-io's wall seconds} for every reference pair, cached."""
    path = root / "reference.txt"
    version = qemu_io_version()
    if path.exists() and not refresh:
        text = path.read_text().splitlines()
        if text and text[0] == f"# {version}":
            ref: dict[tuple[str, str], float] = {}
            for line in text[1:]:
                if line and not line.startswith("#"):
                    fmt, test, secs = line.split()
                    ref[(fmt, test)] = float(secs)
            return ref
    pairs = [(fmt, t) for fmt in FORMATS for t in candidates(root)]
    say(f"iotests: building the reference set: {len(pairs)} candidate pairs with {QEMU_IO} "
        f"(once; cached in {path})")
    results = run_all(root, bin_dir, QEMU_IO, pairs, jobs, timeout)
    lines = [f"# {version}",
             "# format test qemu-io-seconds: the pairs the system's qemu-io passes with only "
             "qemu-io and qemu-img"]
    ref = {}
    for r in results:
        if r.status == "pass":
            ref[(r.fmt, r.test)] = r.seconds
            lines.append(f"{r.fmt} {r.test} {r.seconds:.2f}")
    others = [f"# {r.status} {r.fmt} {r.test}: {(r.detail or [''])[0][:100]}"
              for r in results if r.status != "pass"]
    path.write_text("\n".join(lines + others) + "\n")
    return ref


# --- main ----------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench/iotests.sh", description=__doc__.split("\n")[0])
    for fmt in FORMATS:
        p.add_argument(f"-{fmt}", dest="formats", action="append_const", const=fmt,
                       help=f"only {fmt}")
    p.add_argument("tests", nargs="*", help="tests to run (default: the whole reference set); "
                   "a test outside the reference set runs too")
    p.add_argument("-j", "--jobs", type=int, default=2, help="tests in parallel (default 2)")
    p.add_argument("--qemu-io", action="store_true",
                   help="run the system qemu-io (instead of rig io) on the same pairs")
    p.add_argument("--rig", default=str(REPO / ".venv" / "bin" / "rig"),
                   help="the rig program (default: the repository's .venv)")
    p.add_argument("--refresh", action="store_true", help="rebuild the cached reference set")
    p.add_argument("--lines", type=int, default=12, help="diff lines shown per failure")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per test")
    p.add_argument("--list", action="store_true", help="print the reference set and exit")
    args = p.parse_args(argv)
    formats = args.formats or list(FORMATS)
    root = cache_root()
    fetch(root)
    bin_dir = tools(root, args.rig)
    ref = reference(root, bin_dir, max(1, args.jobs), args.timeout, args.refresh)
    if args.list:
        for (fmt, test), secs in sorted(ref.items()):
            print(f"{fmt} {test} {secs:.1f}")
        return 0
    tests = [t.removeprefix("tests/qemu-iotests/") for t in args.tests]
    pairs = [(fmt, t) for fmt in formats for t in (tests or all_tests(root))
             if (fmt, t) in ref or tests]
    prog = QEMU_IO if args.qemu_io else str(bin_dir / "rig-io")
    name = "qemu-io" if args.qemu_io else "rig io"
    start = time.monotonic()
    results = run_all(root, bin_dir, prog, pairs, max(1, args.jobs), args.timeout)
    wall = time.monotonic() - start
    for r in results:
        if r.status != "pass":
            ref_note = "" if (r.fmt, r.test) in ref else " (not in the reference set)"
            print(f"--- {r.fmt} {r.test}: {r.status}{ref_note}")
            for line in r.detail[:args.lines]:
                print(f"    {line}")
    print()
    for fmt in formats:
        mine = [r for r in results if r.fmt == fmt]
        if not mine:
            continue
        passed = [r for r in mine if r.status == "pass"]
        ours = sum(r.seconds for r in mine)
        theirs = sum(ref.get((r.fmt, r.test), 0.0) for r in mine)
        ratio = f", {ours / theirs:.2f}x qemu-io's {theirs:.0f} s" if theirs else ""
        failed = " ".join(r.test for r in mine if r.status != "pass")
        print(f"{fmt}: {name} passes {len(passed)}/{len(mine)}"
              f" (the reference set has {sum(1 for k in ref if k[0] == fmt)} {fmt} pairs);"
              f" {ours:.0f} s of tests{ratio}")
        if failed:
            print(f"  not passed: {failed}")
    total = sum(1 for r in results if r.status == "pass")
    print(f"all: {total}/{len(results)} in {wall:.0f} s wall, -j {args.jobs}; "
          f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
