"""Repro bundles: ops serialize, a failing machine writes one bundle for its shrunk example, and
replay (the function and ``rig replay``) reproduces it on the recorded graphs, not on good ones.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

import rig
from rig.cli.main import main
from rig.core.backend import BlockBackend
from rig.core.node import Iov, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter
from rig.testing import bundle as repro
from rig.testing.bundle_replay import INITIAL, replay
from rig.testing.machines import BlockDeviceMachine, LockstepMachine
from rig.testing.ops import Discard, Flush, Read, Write, WriteZeroes, op_from_dict, op_to_dict

SIZE = 64 * 1024
MEMORY = {"driver": "memory", "size": SIZE}
#: derandomize is set explicitly: Hypothesis's ``ci`` profile (chosen when $CI is set) turns it on.
SHRINK = settings(max_examples=50, stateful_step_count=6, deadline=None, database=None,
                  report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
                  derandomize=False)
#: No shrinking: the final run (which writes the bundle) replays the first failure found.
DETECT = settings(SHRINK, phases=[Phase.generate])


@register_driver("test-bundle-lose-second-write")
class LoseSecondWrite(Filter):
    """Drops the second write it sees: a broken device."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.writes = 0

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.writes += 1
        if self.writes != 2:
            super()._pwritev(offset, length, iov, flags)


BROKEN = {"driver": "test-bundle-lose-second-write", "file": MEMORY}


@pytest.fixture
def repro_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(repro.DIR_ENV, str(tmp_path / "repro"))
    monkeypatch.delenv(repro.ENABLE_ENV, raising=False)
    return tmp_path / "repro"


def test_ops_round_trip_and_bad_ops_are_named() -> None:
    ops = [Read(1, 2), Write(0, 512, 7, True), WriteZeroes(8, 4, True, False), Discard(0, 512),
           Flush()]
    assert [op_from_dict(json.loads(json.dumps(op_to_dict(op)))) for op in ops] == ops
    with pytest.raises(ValueError, match="unknown operation 'trim'"):
        op_from_dict({"op": "trim"})
    with pytest.raises(ValueError, match="write: fua must be bool"):
        op_from_dict({"op": "write", "offset": 0, "length": 1, "seed": 0, "fua": 1})
    with pytest.raises(ValueError, match="read: unknown field 'len'"):
        op_from_dict({"op": "read", "offset": 0, "len": 1})


def test_load_names_the_file_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json: invalid JSON at line 1"):
        repro.load(bad)
    bad.write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="not a repro bundle"):
        repro.load(bad)
    bad.write_text(json.dumps({"format": repro.FORMAT, "version": 1, "ops": []}))
    with pytest.raises(ConfigError, match="missing key 'backends'"):
        repro.load(bad)


class Broken(LockstepMachine):
    def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
        return [self.open_graph(MEMORY), self.open_graph(BROKEN)]


def _only_bundle(directory: Path) -> repro.Bundle:
    files = list(directory.glob("*.json"))
    assert len(files) == 1, files
    return repro.load(files[0])


def test_a_failing_machine_writes_its_shrunk_example(repro_dir: Path) -> None:
    with pytest.raises(AssertionError) as exc:
        run_state_machine_as_test(Broken, settings=SHRINK)
    assert "repro bundle:" in "\n".join(getattr(exc.value, "__notes__", []))
    b = _only_bundle(repro_dir)
    assert b.machine.endswith("Broken")
    assert [r.graph for r in b.backends] == [MEMORY, BROKEN]
    assert b.zero_on_start and b.size == SIZE
    writes = [op for op in b.ops if isinstance(op, Write)]
    # Shrunk: the lost write needs two; the shrinker may stop at a local minimum of three (one
    # CI run of 2026-12-07 on a slow machine), never at the dozens an unshrunk example has.
    assert 2 <= len(writes) <= 3, b.ops
    assert b.failure["kind"] in ("mismatch", "disagreement")
    assert b.failure["op_index"] == len(b.ops) - (b.failure["kind"] == "disagreement")
    assert b.seed is not None and not b.derandomize
    assert (b.reproduce_failure or "").startswith("@reproduce_failure(")
    assert b.driver_sources == {"test-bundle-lose-second-write": str(Path(__file__).resolve())}

    with rig.open(MEMORY) as good, rig.open(BROKEN) as bad:
        result = replay(b.ops, [good, bad], size=b.size, zero_on_start=True)
    assert result.reproduced and result.divergence is not None
    assert result.divergence.backend == 1
    assert result.divergence.op_index == b.failure["op_index"]
    with rig.open(MEMORY) as good:
        assert not replay(b.ops, [good], size=b.size).reproduced


def test_a_derandomized_run_says_so_instead_of_a_seed(repro_dir: Path) -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(Broken, settings=settings(DETECT, derandomize=True))
    b = _only_bundle(repro_dir)
    assert b.derandomize and b.seed is None
    assert repro.load(next(repro_dir.glob("*.json"))).derandomize


def test_rig_replay_exit_status(repro_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(Broken, settings=DETECT)
    path = str(next(repro_dir.glob("*.json")))
    assert main(["replay", path]) == 1
    out = capsys.readouterr().out
    assert "reproduced at " in out and "backend 1" in out
    assert main(["replay", "--graph", json.dumps(MEMORY), path]) == 0
    assert "not reproduced" in capsys.readouterr().out
    assert main(["replay", "--graph", json.dumps({**MEMORY, "size": 4096}), path]) == 2
    assert f"the bundle needs {SIZE}" in capsys.readouterr().err


def test_an_erroring_backend_is_a_failure_too(repro_dir: Path) -> None:
    faulty = {"driver": "raw", "file": {"driver": "blkdebug", "image": MEMORY,
                                        "inject-error": [{"event": "write_aio", "errno": 28}]}}

    class Full(BlockDeviceMachine):
        def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
            return [self.open_graph(faulty)]

    with pytest.raises(OSError):
        run_state_machine_as_test(Full, settings=DETECT)
    b = _only_bundle(repro_dir)
    assert b.failure["kind"] == "error" and "No space left" in b.failure["message"]
    assert b.rules == [{"backend": 0, "node": "file",
                        "inject-error": [{"event": "write_aio", "errno": 28}]}]
    with rig.open(faulty) as blk:
        d = replay(b.ops, [blk], size=SIZE).divergence
    assert d is not None and d.op_index == len(b.ops) - 1
    assert d.message.startswith("failed: OSError") and str(errno.ENOSPC) in d.message


def test_hand_built_backends_need_a_graph(repro_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    class ByHand(BlockDeviceMachine):
        def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
            return [rig.open(BROKEN)]

    with pytest.raises(AssertionError):
        run_state_machine_as_test(ByHand, settings=DETECT)
    b = _only_bundle(repro_dir)
    assert b.backends[0].graph is None and "memory" in b.backends[0].description
    assert main(["replay", str(next(repro_dir.glob("*.json")))]) == 2
    assert "replay with --graph or --device" in capsys.readouterr().err


def test_bundles_can_be_turned_off(repro_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(repro.ENABLE_ENV, "0")
    with pytest.raises(AssertionError):
        run_state_machine_as_test(Broken, settings=DETECT)
    assert not repro_dir.exists()


def test_replay_checks_initial_content_and_discards() -> None:
    with rig.open(MEMORY) as a, rig.open(MEMORY) as b:
        b.pwrite(10, b"x")
        d = replay([], [a, b], size=SIZE).divergence
        assert d is not None and d.op_index == INITIAL and d.offset == 10
        assert str(d).startswith("initial content: backend 1")
        assert not replay([Write(0, 4096, 1), Discard(0, 4096), Read(0, 4096)], [b],
                          size=SIZE).reproduced
    # A discard the target cannot take (partial block) is zeroed there instead, as if kept.
    with rig.open({**MEMORY, "logical-block-size": 512}) as blocks:
        result = replay([Write(0, 1024, 3), Discard(100, 300), Read(0, 1024)], [blocks],
                        size=SIZE)
        assert not result.reproduced and result.skipped_discards == {0: 1}
        assert blocks.pread(0, 512) == Write(0, 100, 3).data + bytes(300) + \
            Write(0, 512, 3).data[400:]
