"""``rig bench throttle`` runs and reports (a smoke test: benchmarks are never timed assertions)."""

from __future__ import annotations

from tests.cli.helpers import RIG, run


def test_rig_bench_throttle_reports_a_row_per_limit() -> None:
    r = run([*RIG, "bench", "throttle", "--seconds", "0.3", "--only", "iops-write",
             "--only", "bps-read"])
    assert r.rc == 0, r.err
    rows = {line.split()[0] for line in r.out.splitlines()[1:] if line.strip()}
    assert rows == {"iops-write", "bps-read"}


def test_rig_bench_needs_a_kind() -> None:
    r = run([*RIG, "bench"])
    assert r.rc == 2
    assert "KIND" in r.err and "Traceback" not in r.err
