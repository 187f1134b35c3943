#!/usr/bin/env bash
# mypy cannot follow setuptools' package-dir mapping (drivers/ -> rig.drivers, fixtures/ ->
# rig.fixtures, cli/ -> rig.cli) through an editable install. So we type-check the package as
# it is installed: a tree of symlinks with that layout, built fresh each time under
# build/typecheck/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
stage=build/typecheck
rm -rf "$stage"
mkdir -p "$stage/rig"
for entry in rig/*; do
    ln -s "../../../$entry" "$stage/rig/$(basename "$entry")"
done
ln -s ../../../drivers "$stage/rig/drivers"
ln -s ../../../fixtures "$stage/rig/fixtures"
ln -s ../../../cli "$stage/rig/cli"
cd "$stage"
exec "../../$PY" -m mypy --config-file ../../pyproject.toml -p rig "$@"
