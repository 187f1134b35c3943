#!/usr/bin/env bash
# Set up the VM lab (rig vm, tests/vm) on a Debian machine, as root: QEMU, a static busybox, kmod,
# dmsetup and udev from apt; qemu.qmp in ./.venv; then the guest kernel, downloaded with apt-get
# download (never installed), pruned into $RIG_VM_CACHE (default ~/.cache/blockrig/vm), with its
# initramfs and the KVM-or-TCG verdict. Safe to re-run; fast when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "ci/vm-setup.sh: run as root (apt-get)" >&2
    exit 1
fi

# apt may be busy (unattended upgrades, another setup): wait for its locks, up to 5 minutes.
apt_wait() {
    local i
    command -v fuser >/dev/null 2>&1 || return 0  # psmisc missing: rely on DPkg::Lock::Timeout
    for i in $(seq 1 300); do
        if ! fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock \
                >/dev/null 2>&1; then
            return 0
        fi
        [ "$i" -eq 1 ] && echo "ci/vm-setup.sh: waiting for the apt lock" >&2
        sleep 1
    done
    echo "ci/vm-setup.sh: the apt lock is still held after 5 minutes" >&2
    return 1
}

apt_retry() {  # apt-get with a lock wait and three tries (a lock can be taken between)
    local try
    for try in 1 2 3; do
        apt_wait
        if apt-get -o DPkg::Lock::Timeout=120 "$@"; then
            return 0
        fi
        echo "ci/vm-setup.sh: apt-get $1 failed (try $try)" >&2
        sleep 5
    done
    return 1
}

export DEBIAN_FRONTEND=noninteractive
need=()
# udev: the guest runs the host's systemd-udevd for the lab's identity tests (ID_WWN, by-id).
for tool in qemu-system-x86_64:qemu-system-x86 depmod:kmod dmsetup:dmsetup udevadm:udev; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
# The initramfs needs a statically linked busybox (Debian's busybox package is dynamic).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
    || need+=(busybox-static)
updated=0
if [ ${#need[@]} -gt 0 ]; then
    apt_retry update -qq
    updated=1
    apt_retry install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    echo "ci/vm-setup.sh: no .venv: run ci/setup.sh first" >&2
    exit 1
fi
if ! "$PY" -c 'import qemu.qmp' 2>/dev/null; then
    "$PY" -m pip install -q 'qemu.qmp>=0.0.3' > .venv/pip-vm.log 2>&1 \
        || { cat .venv/pip-vm.log >&2; exit 1; }
fi

# The kernel: only when the cache has none (rig vm fetch itself is idempotent, but resolving
# the package needs fresh apt lists).
if ! "$PY" -c 'import sys; from rig.drivers.vm.kernel import find_kernel
sys.exit(find_kernel() is None)'; then
    [ "$updated" -eq 1 ] || apt_retry update -qq
    apt_wait
fi
.venv/bin/rig vm fetch
