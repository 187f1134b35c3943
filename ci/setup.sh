#!/usr/bin/env bash
# Set up everything blockrig needs on a Debian machine, as root: the system tools it drives and
# compares against (qemu-utils for qemu-io, qemu-system-common for qemu-storage-daemon, fio,
# e2fsprogs and util-linux for the mount tests, fuse3 and libfuse3-3 for exports),
# and the Python package in ./.venv (editable, with the test and lint tools). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "ci/setup.sh: run as root (apt-get, and loop devices need root)" >&2
    exit 1
fi

need=()
# sshd and ssh: a VM lab guest plays a second lab host in tests/lab (docs/lab.md).
for tool in qemu-io:qemu-utils qemu-storage-daemon:qemu-system-common fio:fio mkfs.ext4:e2fsprogs losetup:util-linux fusermount3:fuse3 sg_inq:sg3-utils sshd:openssh-server ssh:openssh-client; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
# Exports (rig run / rig.drivers.export) serve a FUSE file through libfuse3's low-level API (ctypes).
ldconfig -p | grep 'libfuse3\.so\.3 ' >/dev/null || need+=(libfuse3-3)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# pip's warnings go to a log; it is shown only when the install fails.
if ! .venv/bin/python -m pip install -q -e '.[dev]' > .venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    exit 1
fi
# The VM lab (rig vm, pytest --rig-vm, tests/vm): QEMU, busybox-static, kmod, dmsetup and the
# guest kernel (downloaded and unpacked, never installed over the host's packages).
bash ci/vm-setup.sh
echo "ci/setup.sh: ready ($(.venv/bin/rig --version), $(qemu-io --version | head -1))"
