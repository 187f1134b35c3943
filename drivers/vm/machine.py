"""``Guest``: one QEMU guest that boots once and runs any number of commands.

    with Guest(disks=["64M"], cdrom="cd.iso") as g:
        job = g.start("python3 watch_tray.py")   # runs in the guest
        g.eject()                                # meanwhile, from the host, over QMP
        result = job.wait(timeout=60)            # stdout, stderr, status

Commands go through the per-boot control share (:mod:`rig.drivers.vm.guestscript`); each one's
stdout, stderr and status come back as files there, so they stay apart from the kernel console
(kept as ``console``). A command that does not finish in time, or a guest that panics or hangs,
gives status :data:`LOST` (125) with a one-line ``message``, and the QEMU process group is
killed. Nothing outlives the guest: QEMU dies with the process that started it (SIGKILL
included), and the temporary directory is removed on close, or after a SIGKILL by a watcher
(:class:`~rig.drivers.procs.DeathWatch`; failing that, by the next guest this user starts).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from rig.core.units import SizeError, parse_size
from rig.drivers.procs import DeathWatch, pid_alive
from rig.drivers.vm import accel as accel_mod
from rig.drivers.vm import guestscript
from rig.drivers.vm.initramfs import initramfs
from rig.drivers.vm.kernel import Kernel, fetch_kernel, find_kernel, require_kernel
from rig.drivers.vm.network import NIC_MODULE, Network
from rig.drivers.vm.process import kill_group, spawn
from rig.drivers.vm.qemu import CDROM_ID, QemuConfig, command_line, disk_id
from rig.drivers.vm.qmp import Monitor
from rig.errors import ConfigError, RigError

#: The status of a command whose end was not seen (timeout, panic, hang, QEMU died).
LOST = 125
_TMP_PREFIX = "blockrig-vm-"
_POLL_S = 0.02
_PROBE_TIMEOUT_S = 30.0
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "VIRTUAL_ENV")
_MESSAGE_RE = re.compile(r"^(blockrig-vm: .*|Kernel panic.*)$", re.MULTILINE)

DiskSpec = int | str | Path
ShareSpec = str | Path | tuple[str | Path, str]


@dataclass(frozen=True)
class RunResult:
    """What one command gave back. ``status`` is :data:`LOST` (125) when its end was not seen,
    and ``message`` then says why."""

    status: int
    stdout: str
    stderr: str
    console: str
    seconds: float
    message: str = ""

    @property
    def lost(self) -> bool:
        return self.message != ""


class Job:
    """A command running in the guest (from :meth:`Guest.start`)."""

    def __init__(self, guest: Guest, number: int, timeout: float, echo: bool) -> None:
        self._guest = guest
        self.number = number
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._started = time.monotonic()
        self._echo = echo
        self._offsets = {"out": 0, "err": 0}
        utf8 = codecs.getincrementaldecoder("utf-8")
        self._decoders = {s: utf8("replace") for s in self._offsets}
        self._result: RunResult | None = None

    def output(self) -> str:
        """The command's stdout so far (it grows while the command runs)."""
        return _read_text(self._guest._out_dir / f"{self.number}.out")

    def done(self) -> bool:
        """True once the command has ended (or the guest is gone)."""
        return self._result is not None or self._rc_path().exists() or not self._guest.alive

    def wait(self) -> RunResult:
        """Wait until the command ends. Past its deadline (``timeout`` seconds after
        :meth:`Guest.start`, boot and earlier commands included) the guest is killed and the
        result is :data:`LOST`. Poll :meth:`done` to wait without that."""
        if self._result is not None:
            return self._result
        g = self._guest
        while True:
            self._pump()
            if self._rc_path().exists():
                return self._finish(self._read_rc(), "")
            if not g.alive:
                return self._finish(LOST, g.why_dead())
            if time.monotonic() >= self._deadline:
                g.kill()
                what = "command" if g.ready else "the guest was still booting"
                return self._finish(
                    LOST, f"timed out after {self._timeout:g} s ({what}); QEMU killed"
                )
            g._check_boot_deadline()
            time.sleep(_POLL_S)

    def _rc_path(self) -> Path:
        return self._guest._out_dir / f"{self.number}.rc"

    def _read_rc(self) -> int:
        try:
            return int(self._rc_path().read_text().strip())
        except ValueError:
            return LOST

    def _pump(self) -> None:
        if not self._echo:
            return
        for stream, sink in (("out", sys.stdout), ("err", sys.stderr)):
            self._offsets[stream] = _copy_new(
                self._guest._out_dir / f"{self.number}.{stream}", self._offsets[stream], sink,
                self._decoders[stream],
            )

    def _finish(self, status: int, message: str) -> RunResult:
        self._pump()
        out = self._guest._out_dir
        self._result = RunResult(
            status=status,
            stdout=_read_text(out / f"{self.number}.out"),
            stderr=_read_text(out / f"{self.number}.err"),
            console=self._guest.console(),
            seconds=time.monotonic() - self._started,
            message=message,
        )
        return self._result


class Guest:
    """A QEMU guest with the host's root file system (read-only, under a tmpfs overlay) and
    the devices asked for. Use it as a context manager; :meth:`run` a command, or
    :meth:`start` one and drive the devices over QMP while it runs.

    ``disks``: sizes (``"64M"``, bytes) of scratch disks, or paths of raw images, each a
    virtio-scsi ``scsi-hd`` (``/dev/sdX`` in the guest; ``$RIG_VM_DISKS`` lists them in order).
    ``cdrom``: a raw image for a ``scsi-cd`` (``/dev/sr0``), changeable over QMP.
    ``scsi_debug`` / ``null_blk``: module options ("" for the defaults) to load them with.
    ``modules``: more modules to load, each ``"name opt=val ..."``.
    ``shares``: host directories the guest may write to, mounted at the same path (or at the
    guest path given as the second item of a pair).
    ``udev``: start systemd-udevd (the host's ``udev`` package) and fill its database before the
    first command: ID_WWN, ID_SERIAL, ID_PATH and the /dev/disk links. Disk N has the SCSI
    serial ``rig-diskN`` and a WWN (:func:`rig.drivers.vm.qemu.disk_wwn`).
    ``network``: a NIC on QEMU's user network, with ports forwarded from the host's loopback
    (:class:`rig.drivers.vm.network.Network`; the guest reaches the host at 10.0.2.2).
    """

    def __init__(
        self,
        disks: Sequence[DiskSpec] = (),
        cdrom: str | Path | None = None,
        *,
        scsi_debug: str | None = None,
        null_blk: str | None = None,
        modules: Sequence[str] = (),
        shares: Sequence[ShareSpec] = (),
        memory: str = "1G",
        smp: int = 2,
        accel: str | None = None,
        boot_timeout: float = 120.0,
        quiet: bool = True,
        fetch: bool = False,
        kernel: Kernel | None = None,
        udev: bool = False,
        network: Network | None = None,
    ) -> None:
        self._disk_specs = list(disks)
        self._cdrom = Path(cdrom) if cdrom is not None else None
        self._scsi_debug = scsi_debug
        self._null_blk = null_blk
        self._modules = list(modules)
        self._shares = [_share(s) for s in shares]
        self._memory = memory
        self._smp = smp
        self._accel_req = accel
        self._boot_timeout = boot_timeout
        self._quiet = quiet
        self._fetch = fetch
        self._kernel = kernel
        self._udev = udev
        self._network = network
        self._tmp: Path | None = None
        self._watch: DeathWatch | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._monitor: Monitor | None = None
        self._next = 1
        self._spawned = 0.0
        self._ready_at: float | None = None
        self._dead_reason = ""
        self.accel = ""
        self.nonce = secrets.token_hex(6)
        self._validate()

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> Guest:
        self.boot()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def boot(self) -> None:
        """Start QEMU (returns at once; commands queue until the guest is up)."""
        if self._proc is not None:
            raise RigError("this guest was already booted: make a new Guest")
        kernel = self._kernel or find_kernel()
        if kernel is None:
            kernel = fetch_kernel() if self._fetch else require_kernel()
        self._kernel = kernel
        _reap_stale()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
        self._watch = DeathWatch("rig-vm-reaper", 'rm -rf "$1"', str(self._tmp))
        try:
            self.accel = accel_mod.choose(kernel, self._accel_req, lambda: probe_kvm(kernel))
            cfg = self._prepare(kernel, self._tmp)
            self._spawned = time.monotonic()
            argv = command_line(cfg) + (self._network.qemu_args() if self._network else [])
            self._proc = spawn(argv, self._tmp / "qemu.log")
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self._release_watch()
            raise

    def close(self) -> None:
        """Stop the guest (politely, then by force) and remove everything it left."""
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(OSError):
                (self._ctl / "stop").touch()
            deadline = time.monotonic() + (10.0 if self.ready else 0.0)
            while self._proc.poll() is None and time.monotonic() < deadline:
                time.sleep(_POLL_S)
        if self._proc is not None:
            kill_group(self._proc)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._release_watch()

    def _release_watch(self) -> None:
        if self._watch is not None:
            self._watch.release()
            self._watch = None

    def kill(self) -> None:
        """Kill QEMU now (the guest's commands end as :data:`LOST`)."""
        if self._proc is not None:
            if self._proc.poll() is None and not self._dead_reason:
                self._dead_reason = "killed by the host"
            kill_group(self._proc)

    # -- commands -----------------------------------------------------------------------------

    def start(self, cmd: str | Sequence[str], *, timeout: float = 300.0, cwd: str | None = None,
              env: Mapping[str, str] | None = None, echo: bool = False) -> Job:
        """Queue ``cmd`` (shell text, or an argv) in the guest and return at once.

        The command runs in ``cwd`` (default: the host's current directory, which the guest
        sees too) with the host's PATH and HOME plus ``env``. ``echo`` copies its output to
        this process's stdout and stderr as it comes.
        """
        if self._proc is None:
            raise RigError("the guest is not booted: use 'with Guest(...) as g'")
        n = self._next
        self._next += 1
        base = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        text = guestscript.command_script(cmd, cwd or os.getcwd(), {**base, **(env or {})})
        tmp = self._ctl / "cmd" / f".{n}.tmp"
        tmp.write_text(text)
        tmp.rename(self._ctl / "cmd" / str(n))
        return Job(self, n, timeout, echo)

    def run(self, cmd: str | Sequence[str], *, timeout: float = 300.0, cwd: str | None = None,
            env: Mapping[str, str] | None = None, echo: bool = False) -> RunResult:
        """Run ``cmd`` in the guest and wait for it (see :meth:`start`)."""
        return self.start(cmd, timeout=timeout, cwd=cwd, env=env, echo=echo).wait()

    # -- state --------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def ready(self) -> bool:
        """True once the guest has booted and its command loop runs."""
        if self._ready_at is None and self._tmp is not None and (self._ctl / "ready").exists():
            self._ready_at = time.monotonic()
        return self._ready_at is not None

    def wait_ready(self, timeout: float | None = None) -> float:
        """Wait for the command loop; returns the host-side boot time in seconds."""
        limit = timeout if timeout is not None else self._boot_timeout
        deadline = time.monotonic() + limit
        while not self.ready:
            if not self.alive:
                raise RigError(f"the guest did not boot: {self.why_dead()}")
            if time.monotonic() >= deadline:
                self.kill()
                raise RigError(f"the guest did not boot within {limit:g} s; QEMU killed")
            self._check_boot_deadline()
            time.sleep(_POLL_S)
        return self.boot_seconds or 0.0

    @property
    def boot_seconds(self) -> float | None:
        """Seconds from starting QEMU to the guest's command loop running (None before)."""
        return None if not self.ready or self._ready_at is None else \
            self._ready_at - self._spawned

    def guest_env(self) -> dict[str, str]:
        """The RIG_VM_* variables commands see (device names); empty before the boot ends."""
        env: dict[str, str] = {}
        for line in _read_text(self._ctl / "guest.env").splitlines():
            m = re.match(r"^(?:export )?(RIG_VM\w*)='?([^']*)'?$", line)
            if m:
                env[m.group(1)] = m.group(2)
        return env

    def console(self) -> str:
        """The serial console so far (kernel messages and the lab's own markers)."""
        if self._tmp is None:
            return ""
        return _read_text(self._tmp / "console.log")

    def why_dead(self) -> str:
        """One line: why the guest stopped."""
        if self._dead_reason:
            return self._dead_reason
        found = _MESSAGE_RE.findall(self.console())
        if found:
            return str(found[-1]).strip()
        qemu = _read_text(self._tmp / "qemu.log").strip() if self._tmp else ""
        if qemu:
            return f"QEMU: {qemu.splitlines()[-1]}"
        tail = self.console().strip().splitlines()[-1:]
        rc = self._proc.returncode if self._proc is not None else None
        return f"QEMU exited (status {rc}) " + (f"after: {tail[0]}" if tail else "with no output")

    # -- QMP ----------------------------------------------------------------------------------

    @property
    def qmp(self) -> Monitor:
        """The QMP session (connected on first use)."""
        if self._monitor is None:
            if not self.alive or self._tmp is None:
                raise RigError("the guest is not running: no QMP")
            self._monitor = Monitor(self._tmp / "qmp.sock")
        return self._monitor

    def eject(self, force: bool = True) -> None:
        """Open the CD-ROM tray (and remove the medium)."""
        self._need_cdrom()
        self.qmp.command("eject", id=CDROM_ID, force=force)

    def change_medium(self, image: str | Path) -> None:
        """Insert ``image`` (raw) into the CD-ROM, closing the tray."""
        self._need_cdrom()
        path = Path(image).resolve()
        if not path.is_file():
            raise ConfigError(f"{image}: no such CD image")
        self.qmp.command("blockdev-change-medium", id=CDROM_ID, filename=str(path),
                         format="raw", **{"read-only-mode": "read-only"})

    def remove_disk(self, index: int, timeout: float = 30.0) -> None:
        """Hot-unplug disk ``index`` and wait until QEMU reports it gone."""
        if not 0 <= index < len(self._disk_specs):
            raise RigError(f"no disk {index}: this guest has {len(self._disk_specs)}")
        self.qmp.command("device_del", id=disk_id(index))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            event = self.qmp.wait_event("DEVICE_DELETED", timeout=max(left, 0.1))
            if event.get("data", {}).get("device") == disk_id(index):
                return

    # -- internals ----------------------------------------------------------------------------

    @property
    def _ctl(self) -> Path:
        if self._tmp is None:
            raise RigError("the guest is closed")
        return self._tmp / "ctl"

    @property
    def _out_dir(self) -> Path:
        return self._ctl / "out"

    def _need_cdrom(self) -> None:
        if self._cdrom is None:
            raise RigError("this guest has no CD-ROM: pass cdrom=IMAGE")

    def _check_boot_deadline(self) -> None:
        if not self.ready and time.monotonic() - self._spawned > self._boot_timeout:
            self._dead_reason = f"the guest did not boot within {self._boot_timeout:g} s"
            self.kill()

    def _validate(self) -> None:
        for spec in self._disk_specs:
            _disk_size(spec)
        if self._cdrom is not None and not self._cdrom.is_file():
            raise ConfigError(f"--cdrom {self._cdrom}: no such image file")
        for host, _guest in self._shares:
            if not host.is_dir():
                raise ConfigError(f"share {host}: not a directory")
        if self._smp < 1:
            raise ConfigError(f"smp {self._smp}: need at least 1 CPU")

    def _prepare(self, kernel: Kernel, tmp: Path) -> QemuConfig:
        ctl = tmp / "ctl"
        (ctl / "cmd").mkdir(parents=True)
        (ctl / "out").mkdir()
        disks: list[Path] = []
        for i, spec in enumerate(self._disk_specs):
            size = _disk_size(spec)
            if size is None:
                disks.append(Path(str(spec)).resolve())
            else:
                img = tmp / f"disk{i}.img"
                with open(img, "wb") as f:
                    f.truncate(size)
                disks.append(img)
        shares = [(f"rigshare{i}", host) for i, (host, _g) in enumerate(self._shares)]
        plan = guestscript.BootPlan(
            kver=kernel.kver,
            modules_dir=str(kernel.modules_dir.resolve()),
            nonce=self.nonce,
            modprobe=self._modprobe_list(),
            disk_targets=list(range(len(disks))),
            cdrom=self._cdrom is not None,
            scsi_debug_disks=_scsi_debug_disks(self._scsi_debug),
            null_blk_devices=_null_blk_devices(self._null_blk),
            shares=[(tag, g) for (tag, _h), (_h2, g) in zip(shares, self._shares, strict=True)],
            device_wait_s=int(self._boot_timeout),
            udev=self._udev,
            setup_lines=self._network.boot_lines() if self._network else (),
        )
        (ctl / "boot.sh").write_text(guestscript.boot_script(plan))
        (ctl / "loop.sh").write_text(guestscript.loop_script(self.nonce))
        return QemuConfig(
            kernel=kernel.image, initrd=initramfs(kernel), control_dir=ctl,
            console_log=tmp / "console.log", qmp_socket=tmp / "qmp.sock", accel=self.accel,
            disks=disks, cdrom=self._cdrom.resolve() if self._cdrom else None,
            shares=shares, memory=self._memory, smp=self._smp, quiet=self._quiet,
        )

    def _modprobe_list(self) -> list[tuple[str, str]]:
        scsi = bool(self._disk_specs) or self._cdrom is not None or self._scsi_debug is not None
        out: list[tuple[str, str]] = []
        if self._disk_specs or self._scsi_debug is not None:
            out.append(("sd_mod", ""))
        if self._cdrom is not None:
            out.append(("sr_mod", ""))
        if scsi:
            out.append(("sg", ""))
        if self._disk_specs or self._cdrom is not None:
            out.append(("virtio_scsi", ""))
        if self._scsi_debug is not None:
            out.append(("scsi_debug", self._scsi_debug))
        if self._null_blk is not None:
            out.append(("null_blk", self._null_blk))
        if self._network is not None:
            out.append((NIC_MODULE, ""))
        for spec in self._modules:
            name, _, opts = spec.strip().partition(" ")
            if not name:
                raise ConfigError("an empty module name: give 'name [opt=val ...]'")
            out.append((name, opts))
        return out


def probe_kvm(kernel: Kernel) -> bool:
    """Boot under KVM and run ``true``: does KVM really work here?"""
    try:
        with Guest(accel="kvm", kernel=kernel, boot_timeout=_PROBE_TIMEOUT_S) as g:
            return g.run("true", timeout=_PROBE_TIMEOUT_S).status == 0
    except RigError:
        return False


def _disk_size(spec: DiskSpec) -> int | None:
    """The size of a scratch disk, or None for an image path (which must exist)."""
    if isinstance(spec, Path):
        if not spec.exists():
            raise ConfigError(f"disk {spec}: no such image")
        return None
    try:
        size = parse_size(spec)
    except SizeError:
        if isinstance(spec, str) and os.path.exists(spec):
            return None
        raise ConfigError(f"disk {spec!r}: neither a size (e.g. 64M) nor an existing "
                          "image") from None
    if size <= 0 or size % 512:
        raise ConfigError(f"disk {spec!r}: the size must be a positive multiple of 512 bytes")
    return size


def _options(opts: str | None) -> dict[str, str]:
    return dict(o.partition("=")[::2] for o in (opts or "").split())


def _scsi_debug_disks(opts: str | None) -> int:
    if opts is None:
        return 0
    o = _options(opts)
    try:
        if int(o.get("ptype", "0"), 0) != 0:
            return 0
        return (int(o.get("num_tgts", "1"), 0) * int(o.get("max_luns", "1"), 0)
                * int(o.get("add_host", "1"), 0))
    except ValueError as e:
        raise ConfigError(f"scsi_debug options {opts!r}: {e}") from None


def _null_blk_devices(opts: str | None) -> int:
    if opts is None:
        return 0
    try:
        return int(_options(opts).get("nr_devices", "1"), 0)
    except ValueError as e:
        raise RigError(f"null_blk options {opts!r}: {e}") from None


def _share(spec: ShareSpec) -> tuple[Path, str]:
    if isinstance(spec, tuple):
        host, guest = Path(spec[0]).resolve(), spec[1]
    else:
        host = Path(spec).resolve()
        guest = str(host)
    if not guest.startswith("/"):
        raise RigError(f"share {spec}: the guest path must be absolute")
    return host, guest


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _copy_new(path: Path, offset: int, sink: IO[str], decoder: codecs.IncrementalDecoder) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return offset
    if data:
        sink.write(decoder.decode(data))
        sink.flush()
    return offset + len(data)


def _reap_stale() -> None:
    """Remove the temporary directories of guests whose process died (SIGKILL)."""
    base = Path(tempfile.gettempdir())
    for d in base.glob(f"{_TMP_PREFIX}*-*"):
        m = re.match(rf"{_TMP_PREFIX}(\d+)-", d.name)
        if m and d.is_dir() and not pid_alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
