"""The VM lab (``rig vm``): a QEMU guest with real SCSI disks, a CD-ROM whose medium the host
changes over QMP, scsi_debug, null_blk and device-mapper targets, sharing the host's root file
system so it runs the same Python and project. See ``docs/vm-lab.md``.

Modules: :mod:`.kernel` (the Debian kernel, fetched and pruned into a cache), :mod:`.cpio` and
:mod:`.initramfs` (busybox first stage), :mod:`.guestscript` (per-boot scripts), :mod:`.qemu`
(the command line), :mod:`.accel` (KVM or TCG), :mod:`.process` (QEMU dies with us), :mod:`.qmp`
(the monitor), :mod:`.machine` (``Guest``) and :mod:`.cmd` (the CLI).
"""

from rig.drivers.vm.machine import LOST, Guest, Job, RunResult

__all__ = ["LOST", "Guest", "Job", "RunResult"]
