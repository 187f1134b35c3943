"""The scripts the host writes onto the control share for one boot.

``boot.sh`` is sourced by the initramfs ``/init`` (busybox sh): it mounts the host's ``/`` (9p,
read-only) under a tmpfs overlay, loads the device modules, waits for the devices, records their
names in ``guest.env`` and chroots into the overlay to run ``loop.sh`` there (the host's
``/bin/sh``). ``loop.sh`` runs ``cmd/1``, ``cmd/2``, ... as the host drops them in, writing
``out/N.out``, ``out/N.err`` and finally ``out/N.rc``, until the host creates ``stop``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Mount point of the control share inside the guest's root.
GUEST_CONTROL_DIR = "/run/blockrig-vm"
ROOT_TAG = "hostroot"


@dataclass(frozen=True)
class BootPlan:
    """What ``boot.sh`` sets up. Paths are host paths (the guest sees the host's tree)."""

    kver: str
    modules_dir: str
    nonce: str
    modprobe: Sequence[tuple[str, str]] = ()  # (module, options)
    disk_targets: Sequence[int] = ()  # SCSI target ids of the virtio-scsi disks, in order
    cdrom: bool = False
    scsi_debug_disks: int = 0  # how many /dev/sdX scsi_debug adds
    null_blk_devices: int = 0
    shares: Sequence[tuple[str, str]] = ()  # (9p tag, guest mount point)
    env: Mapping[str, str] = field(default_factory=dict)
    device_wait_s: int = 60
    setup_lines: Sequence[str] = ()  # busybox sh run after the devices, before the chroot
    udev: bool = False  # start systemd-udevd and fill its database before the first command


def boot_script(plan: BootPlan) -> str:
    q = shlex.quote
    lines = [
        "# Written by rig.drivers.vm for one boot; sourced by /init (busybox sh).",
        f"KVER={q(plan.kver)}",
        f"MODDIR={q(plan.modules_dir)}",
        f"mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 {ROOT_TAG} /lower"
        " || die 'cannot mount the host root (9p)'",
        "mount -t tmpfs -o mode=0755 rw /rw && mkdir -p /rw/upper /rw/work || die 'tmpfs'",
        "mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /newroot"
        " || die 'cannot mount the overlay root'",
        "mount -t proc proc /newroot/proc && mount -t sysfs sys /newroot/sys"
        " && mount -t devtmpfs dev /newroot/dev || die 'cannot mount proc, sys, dev'",
        "mkdir -p /newroot/dev/pts /newroot/dev/shm",
        "mount -t devpts devpts /newroot/dev/pts && mount -t tmpfs shm /newroot/dev/shm",
        f"mount -t tmpfs run /newroot/run && mkdir -p /newroot{GUEST_CONTROL_DIR}"
        f" && mount --bind /ctl /newroot{GUEST_CONTROL_DIR} || die 'cannot bind the control share'",
        # Modules: the kernel's request_module and busybox modprobe look in the initramfs root;
        # the host's kmod modprobe (after the chroot) in the overlay.
        'ln -sfn "/newroot$MODDIR" "/lib/modules/$KVER"',
        'rm -rf "/newroot/lib/modules/$KVER"; mkdir -p /newroot/lib/modules'
        ' && ln -sfn "$MODDIR" "/newroot/lib/modules/$KVER"',
    ]
    for tag, mountpoint in plan.shares:
        lines.append(
            f"mkdir -p /newroot{q(mountpoint)} && mount -t 9p -o trans=virtio,version=9p2000.L,"
            f"msize=262144 {q(tag)} /newroot{q(mountpoint)} || die {q('cannot mount ' + tag)}"
        )
    for module, options in plan.modprobe:
        opts = " ".join(q(o) for o in shlex.split(options))
        lines.append(f"modprobe {q(module)} {opts} || die {q('modprobe ' + module + ' failed')}")
    lines += _device_waits(plan)
    lines += plan.setup_lines
    lines += [
        f"cat > /ctl/guest.env <<'EOF_ENV'\n{_env_text(plan)}EOF_ENV",
        'echo "RIG_VM_DISKS=\'$disks\'" >> /ctl/guest.env',
        'echo "RIG_VM_SCSI_DEBUG=\'$sdebug\'" >> /ctl/guest.env',
        # bash, where the host has it, can nap without forking (read -t on a FIFO).
        "shell=/bin/sh; [ -x /newroot/bin/bash ] && shell=/bin/bash",
        *(_udev_start() if plan.udev else []),
        f"chroot /newroot $shell {GUEST_CONTROL_DIR}/loop.sh",
        "sync",
        f"echo BLOCKRIG-VM-POWEROFF-{plan.nonce} >/dev/console",
        "poweroff -f",
        "sleep 10",
    ]
    return "\n".join(lines) + "\n"


def _device_waits(plan: BootPlan) -> list[str]:
    """Shell that waits until every expected device node exists and sets ``$disks`` (the
    virtio-scsi disks in order) and ``$sdebug`` (scsi_debug's disks)."""
    tries = plan.device_wait_s * 20
    lines = [
        "sdfind() {  # $1: a case pattern for the device's sysfs path",
        "    for b in /sys/block/sd*; do",
        '        [ -e "$b" ] || continue',
        '        case "$(readlink -f "$b/device")" in $1) echo "/dev/${b##*/}";; esac',
        "    done",
        "}",
        "waitfor() {  # $1: a shell test; $2: what is missing",
        "    i=0",
        '    until eval "$1"; do',
        "        i=$((i + 1))",
        f'        [ $i -gt {tries} ] && die "timed out waiting for $2"',
        "        sleep 0.05",
        "    done",
        "}",
        "disks=",
    ]
    for n, target in enumerate(plan.disk_targets):
        pattern = f"*/virtio*/target*:0:{target}/*:0:{target}:0"
        lines += [
            f'waitfor \'[ -n "$(sdfind "{pattern}")" ]\' "disk {n} (scsi target {target})"',
            f'd=$(sdfind "{pattern}"); waitfor "[ -b $d ]" "$d"; disks="${{disks:+$disks }}$d"',
        ]
    lines.append("sdebug=")
    if plan.scsi_debug_disks:
        want = plan.scsi_debug_disks
        lines += [
            f"waitfor '[ $(sdfind \"*/adapter*/host*\" | wc -w) -ge {want} ]' "
            f'"{want} scsi_debug disk(s)"',
            'sdebug=$(sdfind "*/adapter*/host*" | tr "\\n" " ")',
            "for d in $sdebug; do waitfor \"[ -b $d ]\" \"$d\"; done",
            'sdebug=${sdebug% }',
        ]
    if plan.cdrom:
        lines.append("waitfor '[ -b /dev/sr0 ]' /dev/sr0")
    for i in range(plan.null_blk_devices):
        lines.append(f"waitfor '[ -b /dev/nullb{i} ]' /dev/nullb{i}")
    return lines


#: systemd-udevd and udevadm refuse to act in a chroot (the guest runs chrooted into the host's
#: root) unless this is set.
_IGNORE_CHROOT = "SYSTEMD_IGNORE_CHROOT=1"


#: udev rules masked in the guest (in its tmpfs overlay, never on the host): 60-block.rules turns
#: on a 2 s media poll and a watch that rescans a disk each time a writer closes it; cdrom_id
#: locks the tray and ejects on an eject request. The guest's other tests expect the devices as
#: they are without udev; identity comes from 60-persistent-storage.rules, which stays.
MASKED_RULES = ("60-block.rules", "60-cdrom_id.rules")


def _udev_start() -> list[str]:
    """Shell that starts udevd in the guest's root and waits until it has processed every
    block device (its database in /run/udev/data, the /dev/disk links)."""
    udevd = "/lib/systemd/systemd-udevd"
    rules = "/newroot/etc/udev/rules.d"
    return [
        f"chroot /newroot test -x {udevd} || die 'no {udevd}: apt-get install udev on the host'",
        f"mkdir -p {rules} || die 'cannot mask udev rules'",
        *(f"ln -sf /dev/null {rules}/{name}" for name in MASKED_RULES),
        f"chroot /newroot /bin/sh -c '{_IGNORE_CHROOT} {udevd} --daemon"
        f" && {_IGNORE_CHROOT} udevadm trigger --action=add --subsystem-match=block"
        f" && {_IGNORE_CHROOT} udevadm settle -t 30' >/dev/null 2>&1"
        " || die 'systemd-udevd did not start or settle'",
    ]


def _env_text(plan: BootPlan) -> str:
    env = {
        "RIG_VM": "1",
        "DM_DISABLE_UDEV": "1",  # no udev in the guest: dmsetup must make its own nodes
        "RIG_VM_CDROM": "/dev/sr0" if plan.cdrom else "",
        "RIG_VM_NULLB": " ".join(f"/dev/nullb{i}" for i in range(plan.null_blk_devices)),
        **({"SYSTEMD_IGNORE_CHROOT": "1"} if plan.udev else {}),
        **plan.env,
    }
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


LOOP_SCRIPT = f"""# Written by rig.drivers.vm; runs in the guest's root (host's bash, else /bin/sh).
cd {GUEST_CONTROL_DIR} || exit 1
set -a
. ./guest.env
set +a
mkdir -p out
if [ -n "${{BASH_VERSION:-}}" ] && mkfifo /run/blockrig-vm-nap.fifo; then
    exec 3<>/run/blockrig-vm-nap.fifo
    nap() {{ read -r -t 0.05 -u 3 _; }}
else
    nap() {{ sleep 0.05; }}
fi
cat /proc/uptime > ready.tmp && mv ready.tmp ready
n=1
while :; do
    if [ -e cmd/$n ]; then
        (cd / && exec /bin/sh {GUEST_CONTROL_DIR}/cmd/$n) </dev/null >out/$n.out 2>out/$n.err 3>&-
        rc=$?
        echo $rc > out/$n.rc.tmp && mv out/$n.rc.tmp out/$n.rc
        echo "BLOCKRIG-VM-EXIT-@NONCE@ $n $rc" >/dev/console
        n=$((n + 1))
    elif [ -e stop ]; then
        break
    else
        nap
    fi
done
"""


def loop_script(nonce: str) -> str:
    return LOOP_SCRIPT.replace("@NONCE@", nonce)


def command_script(cmd: str | Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    """The script for one command: ``cmd`` is shell text (a str) or an argv (a sequence)."""
    q = shlex.quote
    body = cmd if isinstance(cmd, str) else "exec " + shlex.join(cmd)
    exports = "".join(f"export {k}={q(v)}\n" for k, v in env.items())
    return f"{exports}cd {q(cwd)} || exit 125\n{body}\n"
