"""``rig vm run [DEVICES] [--] CMD ARGS...``: run a command in a QEMU guest that has real SCSI
disks, a CD-ROM, scsi_debug or null_blk, and the host's tree; ``rig vm fetch``: get the guest
kernel into the cache beforehand.

``rig vm run`` exits with CMD's status, 125 when the guest lost it (timeout, panic); with a
one-line message, 2 for bad input and 1 for a missing piece of the lab (``rig.cli.status``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from rig.errors import ConfigError

_PROG = "rig vm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="vm_command", metavar="ACTION", parser_class=type(parser))
    run_p = sub.add_parser("run", help="boot a guest with the devices asked for and run CMD in it",
                           description="Boot a QEMU guest that sees the host's / (read-only, "
                           "writes go to a tmpfs), load the device modules, run CMD in the "
                           "current directory and exit with its status (125: the guest lost it).")
    run_p.add_argument("--disk", action="append", default=[], metavar="SIZE|IMAGE",
                       help="a virtio-scsi disk: a sparse scratch disk of SIZE (e.g. 64M) or a "
                       "raw IMAGE; repeatable; the guest lists them in $RIG_VM_DISKS")
    run_p.add_argument("--cdrom", metavar="IMAGE", help="a SCSI CD-ROM (/dev/sr0) with IMAGE in it")
    run_p.add_argument("--scsi-debug", metavar="OPTS", help="load scsi_debug with OPTS "
                       "(e.g. 'sector_size=4096 dev_size_mb=64'; '' for the defaults)")
    run_p.add_argument("--null-blk", action="store_true", help="load null_blk (/dev/nullb0)")
    run_p.add_argument("--null-blk-options", metavar="OPTS",
                       help="load null_blk with OPTS (e.g. 'nr_devices=2 gb=1')")
    run_p.add_argument("--module", action="append", default=[], metavar="'NAME [OPTS]'",
                       help="load another module (e.g. dm-flakey); repeatable")
    run_p.add_argument("--share", action="append", default=[], metavar="DIR[:GUESTDIR]",
                       help="let the guest write to host DIR (at the same path, or GUESTDIR)")
    run_p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                       help="give up (status 125) after S seconds, boot included (default 600)")
    run_p.add_argument("--memory", default="1G", help="guest memory (default 1G)")
    run_p.add_argument("--smp", type=int, default=2, help="guest CPUs (default 2)")
    run_p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default=None,
                       help="KVM or TCG (default: auto, or $RIG_VM_ACCEL)")
    run_p.add_argument("--console", action="store_true",
                       help="print the guest's serial console to stderr at the end")
    run_p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="[--] CMD ARGS",
                       help="the command (an argv; use sh -c '...' for shell text)")
    sub.add_parser("fetch", help="download and prune the guest kernel into the cache",
                   description="Download Debian's generic kernel package (never installed), "
                   "keep the kernel and the lab's modules in $RIG_VM_CACHE (default "
                   "~/.cache/blockrig/vm), build the initramfs and choose KVM or TCG.")


def run(args: argparse.Namespace) -> int:
    """Run a command in a QEMU guest with real SCSI disks, CD-ROM, scsi_debug, null_blk."""
    if args.vm_command == "run":
        return _run(args)
    if args.vm_command == "fetch":
        return _fetch()
    raise ConfigError("say what to do: rig vm run ... -- CMD, or rig vm fetch")


def _run(args: argparse.Namespace) -> int:
    from rig.drivers.vm.machine import Guest

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("no command: rig vm run [--disk SIZE]... [--cdrom IMAGE] -- CMD ARGS")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout:g}: must be positive")
    null_blk = args.null_blk_options
    if null_blk is None and args.null_blk:
        null_blk = ""
    shares: list[str | tuple[str, str]] = []
    for spec in args.share:
        host, sep, guest = spec.partition(":")
        shares.append((host, guest) if sep else host)
    # SIGTERM ends the run like Ctrl-C does: through the cleanup (QEMU killed, temp dir gone).
    # The caller's handler comes back at the end (main may run inside another program).
    old = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        guest = Guest(disks=args.disk, cdrom=args.cdrom, scsi_debug=args.scsi_debug,
                      null_blk=null_blk, modules=args.module, shares=shares,
                      memory=args.memory, smp=args.smp, accel=args.accel,
                      boot_timeout=args.timeout, fetch=True)
        with guest as g:
            result = g.run(cmd, timeout=args.timeout, echo=True)
            if args.console:
                sys.stderr.write(result.console)
    finally:
        signal.signal(signal.SIGTERM, old)
    if result.lost:
        print(f"{_PROG}: {result.message}", file=sys.stderr)
    return result.status


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _fetch() -> int:
    from rig.drivers.vm import accel
    from rig.drivers.vm.initramfs import initramfs
    from rig.drivers.vm.kernel import fetch_kernel
    from rig.drivers.vm.machine import probe_kvm

    kernel = fetch_kernel()
    initrd = initramfs(kernel)
    chosen = accel.choose(kernel, None, lambda: probe_kvm(kernel))
    print(f"{_PROG}: kernel {kernel.kver} in {kernel.root} (initramfs {initrd.name}); "
          f"accelerator: {chosen}")
    return 0

