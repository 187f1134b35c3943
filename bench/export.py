"""blockrig benchmark: fio on a plain loop device, the rig export and qemu-storage-daemon's export.

Run as root from the repository root::

    .venv/bin/python bench/export.py            # full run: 5 s per fio run, about 7 minutes
    .venv/bin/python bench/export.py --quick    # smoke run: 1 s per fio run, noisy

Four block devices over the same preallocated image file, all loop devices with direct I/O:

* ``loop``: a plain loop device on the image;
* ``rig``: ``rig export`` of a ``file`` node on the image (``cache.direct=on``, no rules): the
  rig's FUSE file (libfuse3's low-level API) with the export's own loop device on top;
* ``faults``: the same with a ``faults`` filter over the node holding 10,000 rules that match
  nothing (4 KiB ``error`` rules for reads and writes spread evenly over the image, each
  requiring ``state = 2``, which never holds: a request that touches one asks the engine, which
  finds the trigger false; one that touches none skips the engine);
* ``qsd``: qemu-storage-daemon's FUSE export of a ``blkdebug`` node (no rules) over a ``file``
  node on the image (``cache.direct=on``), with a loop device on the exported file.

fio (``--direct=1 --ioengine=libaio``, time based) runs 1 MiB sequential read and write at queue
depth 8 and 4 KiB random read and write at queue depths 1 and 16 on each device. The three
devices take turns run by run, in a rotating order, and every run is repeated (median reported).
See bench/README.md for the numbers and how to read them. This is a benchmark, not a test: it
prints PASS/MISS next to each target and exits 0 whenever it managed to measure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

KiB = 1 << 10
MiB = 1 << 20

#: Targets (issues 12 and 20): sequential, the rig export >= 0.5x the plain loop device and
#: ahead of qemu-storage-daemon; 4 KiB random at least as fast as qsd at QD1 and 0.8x at QD16;
#: with 10,000 rules that match nothing, within 10 % of the export without rules.
TARGET_SEQ_VS_LOOP = 0.5
TARGET_SEQ_VS_QSD = 1.0
TARGET_QD1_VS_QSD = 1.0
TARGET_QD16_VS_QSD = 0.8
TARGET_FAULTS_VS_RIG = 0.9
#: How many never-matching rules the ``faults`` setup holds.
RULES = 10_000

SETUPS = ("loop", "rig", "faults", "qsd")
SETUP_TITLES = {"loop": "plain loop", "rig": "rig export", "faults": "rig + 10k rules",
                "qsd": "qsd export"}
#: How long a FUSE mount or the rig's device line may take to appear.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

Log = Callable[[str], None]


# ------------------------------------------------------------------------------ workloads
@dataclass(frozen=True)
class Workload:
    name: str
    rw: str  # fio --rw
    bs: int
    iodepth: int

    @property
    def sequential(self) -> bool:
        return self.rw in ("read", "write")

    @property
    def unit(self) -> str:
        return "MB/s" if self.sequential else "IOPS"

    @property
    def writes(self) -> bool:
        return self.rw in ("write", "randwrite")


WORKLOADS = (
    Workload("seq read 1M QD8", "read", MiB, 8),
    Workload("seq write 1M QD8", "write", MiB, 8),
    Workload("rand read 4k QD1", "randread", 4 * KiB, 1),
    Workload("rand read 4k QD16", "randread", 4 * KiB, 16),
    Workload("rand write 4k QD1", "randwrite", 4 * KiB, 1),
    Workload("rand write 4k QD16", "randwrite", 4 * KiB, 16),
)


@dataclass
class FioRun:
    value: float  # MB/s (1e6 bytes) or IOPS, from fio's JSON
    lat_us: float  # mean completion latency
    iops: float
    wall: float  # seconds, the whole fio process (ramp and start-up included)


def run_fio(dev: str, wl: Workload, size: int, runtime: float, ramp: float) -> FioRun:
    argv = ["fio", "--name=bench", f"--filename={dev}", f"--rw={wl.rw}", f"--bs={wl.bs}",
            "--direct=1", "--ioengine=libaio", f"--iodepth={wl.iodepth}", "--numjobs=1",
            f"--size={size}", "--time_based", f"--runtime={runtime:g}s",
            f"--ramp_time={ramp:g}s", "--norandommap", "--randrepeat=0",
            "--output-format=json"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"fio on {dev} ({wl.name}) failed: {proc.stderr.strip()[-500:]}")
    job = json.loads(proc.stdout[proc.stdout.index("{"):])["jobs"][0]
    if job.get("error"):
        raise RuntimeError(f"fio on {dev} ({wl.name}) reported error {job['error']}")
    side = job["write"] if wl.writes else job["read"]
    value = side["bw_bytes"] / 1e6 if wl.sequential else float(side["iops"])
    return FioRun(value=value, lat_us=float(side["clat_ns"]["mean"]) / 1000,
                  iops=float(side["iops"]), wall=wall)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of all threads of ``pid`` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


# ----------------------------------------------------------------------------- statistics
@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def fmt(self, digits: int = 0) -> str:
        return (f"{self.median:.{digits}f} "
                f"[{min(self.values):.{digits}f}-{max(self.values):.{digits}f}]")


#: The ratios the report shows (per repetition, then the median).
RATIOS = (("rig", "loop"), ("rig", "qsd"), ("faults", "rig"))


def ratio_series(a: Series, b: Series) -> Series:
    """Per-repetition ratios a/b (the runs of one repetition were made one right after another)."""
    return Series([x / y if y else float("inf") for x, y in zip(a.values, b.values, strict=True)])


@dataclass
class Result:
    workload: Workload
    value: dict[str, Series] = field(default_factory=dict)
    lat_us: dict[str, Series] = field(default_factory=dict)
    #: The serving process's CPU time per request (us) and busy cores, for the two exports.
    cpu_us: dict[str, Series] = field(default_factory=dict)
    cores: dict[str, Series] = field(default_factory=dict)

    def add(self, setup: str, run: FioRun, cpu: float | None) -> None:
        self.value.setdefault(setup, Series()).add(run.value)
        self.lat_us.setdefault(setup, Series()).add(run.lat_us)
        if cpu is not None:
            # The CPU time covers the whole fio run, ramp included: spread it over the requests
            # of the whole run at the measured rate (a close estimate in steady state).
            self.cpu_us.setdefault(setup, Series()).add(cpu / (run.iops * run.wall) * 1e6)
            self.cores.setdefault(setup, Series()).add(cpu / run.wall)

    def ratio(self, a: str, b: str) -> Series | None:
        if a in self.value and b in self.value:
            return ratio_series(self.value[a], self.value[b])
        return None

    def verdicts(self) -> list[tuple[str, float, bool]]:
        """(target text, measured median ratio, met) for the targets that apply."""
        out = []
        vs_loop = self.ratio("rig", "loop")
        if self.workload.sequential and vs_loop is not None:
            out.append((f"rig/loop >= {TARGET_SEQ_VS_LOOP:g}", vs_loop.median,
                        vs_loop.median >= TARGET_SEQ_VS_LOOP))
        vs_qsd = self.ratio("rig", "qsd")
        if vs_qsd is not None:
            if self.workload.sequential:
                out.append((f"rig/qsd > {TARGET_SEQ_VS_QSD:g}", vs_qsd.median,
                            vs_qsd.median > TARGET_SEQ_VS_QSD))
            else:
                want = TARGET_QD1_VS_QSD if self.workload.iodepth == 1 else TARGET_QD16_VS_QSD
                out.append((f"rig/qsd >= {want:g}", vs_qsd.median, vs_qsd.median >= want))
        vs_rig = self.ratio("faults", "rig")
        if vs_rig is not None:
            out.append((f"faults/rig >= {TARGET_FAULTS_VS_RIG:g}", vs_rig.median,
                        vs_rig.median >= TARGET_FAULTS_VS_RIG))
        return out


# --------------------------------------------------------------------------------- setup
@dataclass(frozen=True)
class Device:
    path: str
    pid: int | None = None  # the process that serves it (None: the kernel's loop driver)


def spawn(argv: list[str], stdout: Any, stderr: Path) -> subprocess.Popen[bytes]:
    """Start a server in its own session (Ctrl-C reaches only us, and we tear down in order)
    with SIGTERM as its parent-death signal (it does not outlive us, even after a SIGKILL)."""
    from rig.drivers.ffi import libc  # imported before the fork: nothing imports in the child

    parent = os.getpid()

    def child_setup() -> None:  # between fork and exec
        libc.set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    with stderr.open("wb") as err:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err,
                                start_new_session=True, preexec_fn=child_setup)


def stop_process(proc: subprocess.Popen[bytes], log: Log, what: str) -> None:
    """SIGTERM, wait; SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log(f"  {what} ignored SIGTERM for {STOP_TIMEOUT:.0f} s: SIGKILL")
            proc.kill()
            proc.wait()


def tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").strip()[-800:]
    return ""


def rig_command() -> list[str]:
    """The ``rig`` console script next to this interpreter (as installed in the venv)."""
    script = Path(sys.executable).parent / "rig"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rig"]


def loop_facts(dev: str) -> str:
    base = f"/sys/block/{os.path.basename(dev)}"
    facts = []
    for rel, name in (("loop/dio", "dio"), ("queue/max_sectors_kb", "max_sectors_kb"),
                      ("queue/logical_block_size", "lbs")):
        with contextlib.suppress(OSError), open(f"{base}/{rel}") as f:
            facts.append(f"{name}={f.read().strip()}")
    return " ".join(facts)


@contextlib.contextmanager
def plain_loop(image: Path, log: Log) -> Iterator[Device]:
    from rig.drivers.loop import LoopDevice

    loop = LoopDevice.attach(str(image), direct_io=True)
    try:
        log(f"  loop: {loop.path} on {image} ({loop_facts(loop.path)})")
        yield Device(loop.path)
    finally:
        loop.detach()


def write_rules(path: Path, size: int, n: int) -> None:
    """``n`` 4 KiB error rules for reads and writes, evenly spread over ``size`` bytes, that never
    fire (``state = 2``; the state stays 1)."""
    stride = size // n
    with open(path, "w") as f:
        for i in range(n):
            start = i * stride + stride // 2
            f.write(f'[[rules]]\nname = "r{i}"\naction = "error"\nop = ["read", "write"]\n'
                    f"start = {start}\nend = {start + 4 * KiB}\nstate = 2\n\n")


#: Extra ``rig export`` arguments for both rig setups (``--rig-arg``, e.g. ``--threads=2``).
RIG_EXPORT_ARGS: list[str] = []


@contextlib.contextmanager
def rig_export(image: Path, tmp: Path, cache_direct: bool, log: Log,
               pids: list[int], rules: Path | None = None) -> Iterator[Device]:
    """``rig export`` in a child process; its first stdout line is the device. Its pid goes
    into ``pids`` (its mountpoint is named after it: the leftover check looks for that). With
    ``rules``, the node is under a ``faults`` filter holding them."""
    node: dict[str, Any] = {"driver": "file", "filename": str(image),
                            "cache": {"direct": cache_direct}}
    if rules is not None:
        node = {"driver": "faults", "rules": str(rules), "file": node}
    graph = "json:" + json.dumps(node)
    err = tmp / ("rig-export.log" if rules is None else "rig-export-faults.log")
    proc = spawn([*rig_command(), "export", *RIG_EXPORT_ARGS, graph], subprocess.PIPE, err)
    pids.append(proc.pid)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("/dev/loop"):
            raise RuntimeError(f"rig export did not print a device within {START_TIMEOUT:.0f} s "
                               f"(exit {proc.poll()}): {tail(err)}")
        log(f"  {'faults' if rules else 'rig'}: {line} served by rig export pid {proc.pid}, "
            f"cache.direct={'on' if cache_direct else 'off'} ({loop_facts(line)})")
        yield Device(line, proc.pid)
    finally:
        stop_process(proc, log, "rig export")
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.returncode not in (0, None):
            log(f"  rig export exited {proc.returncode}: {tail(err)}")


@contextlib.contextmanager
def qsd_export(image: Path, tmp: Path, cache_direct: bool, log: Log) -> Iterator[Device]:
    """qemu-storage-daemon: file -> blkdebug, FUSE export on a regular file, loop on that."""
    from rig.drivers.export import fuse_mounts
    from rig.drivers.loop import LoopDevice

    mountfile = tmp / "qsd-disk"
    mountfile.touch()
    direct = "on" if cache_direct else "off"
    argv = ["qemu-storage-daemon",
            "--blockdev", f"driver=file,node-name=file0,filename={image},cache.direct={direct}",
            "--blockdev", "driver=blkdebug,node-name=dbg0,image=file0",
            "--export", f"type=fuse,id=exp0,node-name=dbg0,mountpoint={mountfile},writable=on"]
    err = tmp / "qsd.log"
    proc = spawn(argv, subprocess.DEVNULL, err)
    loop: LoopDevice | None = None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while str(mountfile) not in fuse_mounts(str(mountfile)):
            if proc.poll() is not None:
                raise RuntimeError(f"qemu-storage-daemon exited {proc.returncode}: {tail(err)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"qemu-storage-daemon's FUSE mount on {mountfile} did not "
                                   f"appear within {START_TIMEOUT:.0f} s: {tail(err)}")
            time.sleep(0.01)
        loop = LoopDevice.attach(str(mountfile), direct_io=True)
        log(f"  qsd: {loop.path} on {mountfile}, qemu-storage-daemon pid {proc.pid}, "
            f"cache.direct={direct} ({loop_facts(loop.path)})")
        yield Device(loop.path, proc.pid)
    finally:
        if loop is not None:
            loop.detach()
        stop_process(proc, log, "qemu-storage-daemon")
        if str(mountfile) in fuse_mounts(str(mountfile)):
            log(f"  {mountfile} still mounted after qemu-storage-daemon stopped: lazy unmount")
            subprocess.run(["fusermount3", "-u", "-z", str(mountfile)], check=False)


def make_image(path: Path, size: int) -> None:
    """``size`` bytes of random data, written and fsynced: every block allocated, no holes."""
    chunk = os.urandom(MiB)
    with path.open("wb") as f:
        for _ in range(size // MiB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------- checks
def guests_running() -> set[int]:
    """Pids of QEMU system emulators (a VM lab guest eats CPU and makes the numbers noisy)."""
    proc = subprocess.run(["pgrep", "qemu-system"], capture_output=True, text=True, check=False)
    return {int(pid) for pid in proc.stdout.split()}


@dataclass
class Noise:
    """Which fio runs had a QEMU guest running next to them (at the run's start or end)."""

    runs: int = 0
    noisy_runs: int = 0
    guests: set[int] = field(default_factory=set)
    waited: float = 0.0  # seconds spent waiting for a quiet machine (--quiet-wait)

    def wait_quiet(self, limit: float) -> None:
        t0 = time.monotonic()
        while limit > 0 and guests_running() and time.monotonic() - t0 < limit:
            time.sleep(0.5)
        self.waited += time.monotonic() - t0

    def record(self, before: set[int], after: set[int]) -> bool:
        self.runs += 1
        self.guests |= before | after
        if before or after:
            self.noisy_runs += 1
        return bool(before or after)

    def summary(self) -> str:
        if not self.noisy_runs:
            return f"no QEMU guest was running during any of the {self.runs} fio runs"
        return (f"a QEMU guest was running during {self.noisy_runs} of the {self.runs} fio runs "
                f"({len(self.guests)} guest processes seen): noisy numbers")


def leftovers(tmp: Path, rig_pids: list[int]) -> list[str]:
    """Loop devices and FUSE mounts of this run that are still there (should be none)."""
    from rig.drivers.export import PREFIX, fuse_mounts

    marks = [str(tmp)] + [f"{PREFIX}{pid}-" for pid in rig_pids]
    found = []
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    found += [f"loop: {line}" for line in out.splitlines() if any(m in line for m in marks)]
    found += [f"mount: {m}" for m in fuse_mounts() if any(k in m for k in marks)]
    return found


# ------------------------------------------------------------------------------ measure
def measure(args: argparse.Namespace, devices: dict[str, Device], log: Log,
            noise: Noise) -> list[Result]:
    results = [Result(wl) for wl in WORKLOADS if not args.workload or
               any(w in wl.name for w in args.workload)]
    setups = list(devices)
    log("warm-up: 1 s of each workload kind on each device (not reported)")
    for name in setups:
        for wl in (WORKLOADS[0], WORKLOADS[2]):
            run_fio(devices[name].path, wl, args.size, min(args.runtime, 1.0), 0)
    for rep in range(args.reps):
        for i, res in enumerate(results):
            k = (rep + i) % len(setups)  # rotate who goes first: drift favours no setup
            marks = []
            for name in setups[k:] + setups[:k]:
                dev = devices[name]
                noise.wait_quiet(args.quiet_wait)
                before = guests_running()
                cpu0 = cpu_seconds(dev.pid) if dev.pid else 0.0
                run = run_fio(dev.path, res.workload, args.size, args.runtime, args.ramp)
                res.add(name, run, cpu_seconds(dev.pid) - cpu0 if dev.pid else None)
                if noise.record(before, guests_running()):
                    marks.append(name)
            line = "  ".join(f"{n} {res.value[n].values[-1]:.0f}" for n in setups)
            log(f"  rep {rep + 1}/{args.reps} {res.workload.name:<19} "
                f"{res.workload.unit:<4}  {line}"
                + (f"  (guest running: {', '.join(marks)})" if marks else ""))
    return results


# ------------------------------------------------------------------------------- report
def print_report(results: list[Result], setups: list[str], args: argparse.Namespace) -> None:
    print()
    print(f"fio --direct=1 --ioengine=libaio, {args.runtime:g} s per run after "
          f"{args.ramp:g} s ramp, {args.reps} repetitions: median [min-max]; ratios per "
          "repetition, then median [min-max]")
    cols = [SETUP_TITLES[s] for s in setups]
    ratios = [r for r in RATIOS if r[0] in setups and r[1] in setups]
    hdr = (f"{'workload':<19} {'unit':<4} " + " ".join(f"{c:>21}" for c in cols) + " "
           + " ".join(f"{a + '/' + b:>17}" for a, b in ratios) + "  targets")
    print(hdr)
    print("-" * len(hdr))
    for res in results:
        row = f"{res.workload.name:<19} {res.workload.unit:<4} "
        row += " ".join(f"{res.value[s].fmt():>21}" for s in setups) + " "
        row += " ".join(f"{r.fmt(2):>17}" for a, b in ratios
                        if (r := res.ratio(a, b)) is not None)
        row += "  " + ", ".join(f"{t} {'PASS' if ok else 'MISS'}" for t, _, ok in res.verdicts())
        print(row)
    print()
    servers = [s for s in setups if s != "loop"]
    print("fio's mean completion latency (us); for the exports also the serving process's CPU "
          "time per request (us) and busy cores (medians):")
    for res in results:
        row = f"  {res.workload.name:<19} " + "  ".join(
            f"{s} {res.lat_us[s].median:6.0f}" for s in setups)
        for s in servers:
            if s in res.cpu_us:
                row += (f"  | {s} cpu {res.cpu_us[s].median:5.0f} us/req"
                        f" {res.cores[s].median:4.2f} cores")
        print(row)
    verdicts = [(res.workload.name, t, v, ok) for res in results for t, v, ok in res.verdicts()]
    if verdicts:
        missed = [f"{n} ({t}: {v:.2f})" for n, t, v, ok in verdicts if not ok]
        print()
        print(f"targets: {len(verdicts) - len(missed)}/{len(verdicts)} PASS"
              + (f"; MISS: {', '.join(missed)}" if missed else ""))


def environment(args: argparse.Namespace) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        except OSError:
            return "missing"
        return out.splitlines()[0].strip() if out.strip() else "?"

    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), "?")
    return {
        "kernel": platform.release(),
        "cpus": f"{os.cpu_count()} x {cpu}",
        "python": platform.python_version(),
        "fio": first_line(["fio", "--version"]),
        "qemu-storage-daemon": first_line(["qemu-storage-daemon", "--version"]),
        "libfuse3": first_line(["dpkg-query", "-W", "-f=${Version}\\n", "libfuse3-3"]),
        "filesystem": first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", args.dir]),
    }


def save_json(path: str, env: dict[str, str], args: argparse.Namespace, setups: list[str],
              results: list[Result], noise: Noise) -> None:
    data: dict[str, Any] = {
        "environment": env,
        "settings": {"runtime_s": args.runtime, "ramp_s": args.ramp, "reps": args.reps,
                     "image_bytes": args.size, "exports_cache_direct": not args.cached,
                     "setups": setups},
        "noise": {"fio_runs": noise.runs, "runs_with_a_qemu_guest": noise.noisy_runs,
                  "guest_pids": sorted(noise.guests), "quiet_wait_s": round(noise.waited, 1)},
        "workloads": [],
    }
    for res in results:
        wl = res.workload
        entry: dict[str, Any] = {
            "name": wl.name, "rw": wl.rw, "bs": wl.bs, "iodepth": wl.iodepth, "unit": wl.unit,
            "values": {s: res.value[s].values for s in setups},
            "median": {s: res.value[s].median for s in setups},
            "clat_mean_us_median": {s: res.lat_us[s].median for s in setups},
            "server_cpu_us_per_request_median": {s: v.median for s, v in res.cpu_us.items()},
            "server_cores_busy_median": {s: v.median for s, v in res.cores.items()},
            "targets": [{"target": t, "ratio": v, "pass": ok} for t, v, ok in res.verdicts()],
        }
        for a, b in RATIOS:
            if (r := res.ratio(a, b)) is not None:
                entry[f"{a}/{b}"] = {"per_rep": r.values, "median": r.median}
        data["workloads"].append(entry)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------------- main
def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="1 s runs (0.25 s ramp), 64 MiB image: a smoke test, not numbers")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (median)")
    p.add_argument("--runtime", type=float, help="seconds per fio run (default 5, quick 1)")
    p.add_argument("--dir", default="/var/tmp",
                   help="where the image goes (a filesystem with O_DIRECT; default /var/tmp)")
    p.add_argument("--size", type=int, help="image size in MiB (default 256, quick 64)")
    p.add_argument("--only", action="append", choices=SETUPS,
                   help="measure only this setup (repeatable)")
    p.add_argument("--workload", action="append", metavar="TEXT",
                   help="only workloads whose name contains TEXT (repeatable)")
    p.add_argument("--cached", action="store_true",
                   help="open the image with cache.direct=off in the rig and in "
                   "qemu-storage-daemon (default: on, so that, as with the plain loop device's "
                   "direct I/O, nothing is served from the host page cache)")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                   help="before each fio run, wait up to SECONDS for no qemu-system process "
                   "to be running (default 0: do not wait; runs are counted either way)")
    p.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    p.add_argument("--rig-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG to both rig exports (repeatable; e.g. --rig-arg=--threads=2)")
    args = p.parse_args(argv)
    args.runtime = args.runtime or (1.0 if args.quick else 5.0)
    RIG_EXPORT_ARGS[:] = args.rig_arg
    args.ramp = 0.25 if args.quick else 1.0
    args.size = (args.size or (64 if args.quick else 256)) * MiB
    setups = [s for s in SETUPS if not args.only or s in args.only]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tools = ["fio", "losetup", "fusermount3"] + (["qemu-storage-daemon"] if "qsd" in setups
                                                  else [])
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        log(f"bench: missing tools: {', '.join(missing)}")
        return 2
    if os.geteuid() != 0:
        log("bench: needs root (loop devices, FUSE mounts)")
        return 2
    env = environment(args)
    log(", ".join(f"{k} {v}" for k, v in env.items()))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="rig-bench-export-", dir=args.dir))
    noise = Noise()
    rig_pids: list[int] = []
    results: list[Result] = []
    try:
        with contextlib.ExitStack() as stack:
            try:
                image = tmp / "image.raw"
                log(f"image {image}: {args.size // MiB} MiB of random data, fsynced")
                make_image(image, args.size)
                devices: dict[str, Device] = {}
                for name in setups:
                    if name == "loop":
                        devices[name] = stack.enter_context(plain_loop(image, log))
                    elif name == "rig":
                        devices[name] = stack.enter_context(
                            rig_export(image, tmp, not args.cached, log, rig_pids))
                    elif name == "faults":
                        rules = tmp / "rules.toml"
                        write_rules(rules, args.size, RULES)
                        devices[name] = stack.enter_context(
                            rig_export(image, tmp, not args.cached, log, rig_pids, rules))
                    else:
                        devices[name] = stack.enter_context(
                            qsd_export(image, tmp, not args.cached, log))
                results = measure(args, devices, log, noise)
            finally:
                # Tear down without being interrupted again by an impatient second Ctrl-C.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                log("tearing down")
    finally:
        left = leftovers(tmp, rig_pids)
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if left:
            log("WARNING: left behind: " + "; ".join(left))
        else:
            log("teardown clean: no loop device on the image or the export files, "
                "no FUSE mount of this run (losetup -a, /proc/self/mountinfo)")
    print_report(results, setups, args)
    print()
    print(noise.summary() + (f"; waited {noise.waited:.0f} s for quiet" if noise.waited >= 1
                             else ""))
    if args.json:
        save_json(args.json, env, args, setups, results, noise)
        log(f"results saved to {args.json}")
    return 0


def run_main() -> int:
    """:func:`main`, with Ctrl-C or SIGTERM giving exit status 130 after the teardown."""
    try:
        return main()
    except KeyboardInterrupt:
        print("bench: interrupted (everything was torn down)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(run_main())
