#!/usr/bin/env bash
# The test command: set up (idempotent), lint, type-check, then the test suite on real loop
# devices and, for what needs kernel modules, in the VM lab's guest. Extra arguments go to
# pytest (e.g. ci/test.sh -k loop -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
.venv/bin/ruff check .
bash ci/typecheck.sh
# --rig-vm: tests needing sg, a CD-ROM, scsi_debug, dm or null_blk run in one VM lab guest
# (on one worker while the other runs the host's tests); RIG_REQUIRE_VM=1 makes a VM lab
# that cannot boot a failure here.
export RIG_REQUIRE_VM="${RIG_REQUIRE_VM-1}"
# --dist worksteal: the worker that runs the guest holds no tests the other cannot steal.
exec .venv/bin/python -m pytest -n "${RIG_TEST_WORKERS:-2}" --dist worksteal --rig-vm "$@"
