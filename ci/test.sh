#!/usr/bin/env bash
# The test command: set up (idempotent), lint, type-check, then the test suite on real loop
# devices. Extra arguments go to pytest (e.g. ci/test.sh -k loop -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
.venv/bin/ruff check .
bash ci/typecheck.sh
exec .venv/bin/python -m pytest -n "${RIG_TEST_WORKERS:-2}" "$@"
