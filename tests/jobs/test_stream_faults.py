"""Streams under injected faults (blkdebug under any layer above the base) and cancels at any
pause point: the image is never corrupt (``qemu-img check``), the chain shows the same content
as before, the backing file changes only when the job succeeded, and the outcome follows QEMU's
on-error rules (report ends the job with the error; ignore runs to the end and fails; stop
pauses with the io-status set and a resume retries; enospc stops on ENOSPC, reports the rest)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import rig
from rig.jobs import StreamJob
from rig.testing import profiles
from tests.formats.helpers import check_clean, run, spec
from tests.jobs.chains import Chain, Layer, Op, backing_file, build, chains, content
from tests.jobs.faults import SIMPLE, blkdebug_name, write_rules
from tests.jobs.runner import follow, outcome

pytestmark = [pytest.mark.rig_needs("qemu_utils"), pytest.mark.timeout(120)]
POLICIES = ("report", "ignore", "stop", "enospc")


class CancellingStream(StreamJob):
    """Cancels itself at its ``cancel_at``-th pause point (0: never), as a user's cancel
    arriving while the job sleeps between chunks."""

    def __init__(self, *args: Any, cancel_at: int = 0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.cancel_at = cancel_at
        self.pause_points = 0

    def sleep(self, delay_ns: int) -> None:
        self.pause_points += 1
        if self.pause_points == self.cancel_at:
            self.cancel(force=True)
        super().sleep(delay_ns)


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    chain = draw(chains(min_layers=2, max_layers=4))
    n = len(chain.layers)
    base = draw(st.one_of(st.none(), st.integers(0, n - 2)))
    lowest = 0 if base is None else base + 1
    fault = draw(st.integers(lowest, n - 2)) if lowest <= n - 2 else None
    layers = list(chain.layers)
    rules: dict[str, object] = {}
    if fault is not None:
        layer = layers[fault]
        layers[fault] = Layer(layer.fmt, layer.size, layer.cluster_size,
                              (*layer.ops, Op(0, layer.size, 0x5A)))
        rules = {"errno": draw(st.sampled_from((errno.EIO, errno.ENOSPC))),
                 "once": draw(st.sampled_from(("on", "off"))),
                 "sector": draw(st.integers(0, layer.size // 512 - 1))}
    return {"chain": Chain(tuple(layers), chain.maker), "base": base, "fault": fault,
            "rules": rules, "on_error": draw(st.sampled_from(POLICIES)),
            "cancel_at": draw(st.sampled_from((0, 0, 1, 2, 3, 5)))}


@given(case=cases())
@settings(profiles.selected(), max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_faults_and_cancels_never_corrupt(tmp_path_factory: pytest.TempPathFactory,
                                         case: dict[str, Any]) -> None:
    chain: Chain = case["chain"]
    tmp = tmp_path_factory.mktemp("faults")
    try:
        conf = tmp / "rules.conf"
        conf.write_text("")
        names = {}
        if case["fault"] is not None:
            f = case["fault"]
            names[f + 1] = blkdebug_name(conf, tmp / f"L{f}.{chain.layers[f].fmt}")
        paths = build(chain, tmp, backing_names=names)
        top = paths[-1]
        want = content(top, tmp)
        before = backing_file(top)
        if case["rules"]:
            write_rules(conf, SIMPLE, **case["rules"])
        base = None if case["base"] is None else str(paths[case["base"]])
        with rig.open(spec(top)) as blk:
            job = CancellingStream(blk, base=base, on_error=case["on_error"],
                                   cancel_at=case["cancel_at"])
            job.start()
            stopped = follow(job, max_stops=2)
        got = outcome(job, stopped)
        event(f"{case['on_error']}: actions={sorted(set(got.error_actions))} "
              f"cancelled={not got.completed} error={got.error is not None}")
        _check_rules(case, got, stopped)
        check_clean(top)
        succeeded = got.completed and got.error is None
        if not succeeded:
            assert backing_file(top) == before
        else:
            assert backing_file(top) == (None if base is None else Path(base).name)
        conf.write_text("")  # disarm, then read the chain back
        assert content(top, tmp) == want
        run("qemu-img", "check", top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_rules(case: dict[str, Any], got: Any, stopped: list[dict[str, Any]]) -> None:
    policy, err = case["on_error"], case["rules"].get("errno")
    expected_action = {"report": "report", "ignore": "ignore", "stop": "stop",
                       "enospc": "stop" if err == errno.ENOSPC else "report"}[policy]
    assert set(got.error_actions) <= {expected_action}
    if not got.error_actions:
        assert got.error is None
        if got.completed:
            assert got.offset == got.len
        return
    if expected_action == "report":
        assert got.error_actions == ["report"]
        assert got.completed and got.error is not None and got.offset < got.len
    elif expected_action == "ignore":
        if got.completed:  # (a cancel after an ignored error is still a cancel)
            assert got.error is not None and got.offset == got.len
    else:
        # each stop is seen paused, unless a cancel came at that very pause point
        assert len(stopped) == len(got.error_actions) or (
            not got.completed and len(stopped) == len(got.error_actions) - 1)
        want_io = "nospace" if err == errno.ENOSPC else "failed"
        assert all(s["status"] == "paused" and s["io-status"] == want_io for s in stopped)
        if got.completed:
            assert got.error is None and got.offset == got.len
