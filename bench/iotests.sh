#!/bin/bash
# QEMU 7.2's qemu-iotests against `rig io` (issue 19); docs/iotests.md says what it does.
#   bench/iotests.sh                 the whole reference set, raw and qcow2
#   bench/iotests.sh -qcow2 026      one test (any test, in or out of the reference set)
#   bench/iotests.sh --qemu-io       the same pairs with the system's qemu-io
#   bench/iotests.sh --list          the reference set (built once with the system's qemu-io)
# A benchmark run by hand, not part of CI. Needs apt-get, dpkg-source and qemu-utils 7.2.
cd "$(dirname "$0")/.." || exit 2
exec python3 bench/iotests.py "$@"
