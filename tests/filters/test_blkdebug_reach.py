"""A blkdebug rule no node of its graph can trigger is a one-line warning when the graph opens;
a rule that can fire is not (rig/filters/blkdebug_reach.py, issue 16 part 1)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.core.registry import drivers
from rig.filters.blkdebug import find_debug_node
from rig.filters.blkdebug_events import EVENT_SET, QEMU_EMITTERS, declared_events

CONF = """\
[inject-error]
event = "read_aio"
sector = "4"
errno = "5"

[inject-error]
event = "l2_load"

[set-state]
event = "flush_to_disk"
new_state = "2"
"""


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(64 * 1024))
    return str(path)


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "rules.conf"
    path.write_text(CONF)
    return str(path)


def _blkdebug(conf: str, image: str, **extra: Any) -> dict[str, Any]:
    return {"driver": "blkdebug", "config": conf, **extra,
            "image": {"driver": "file", "filename": image}}


def test_every_declared_event_is_a_blkdebug_event() -> None:
    declared = {name: declared_events(cls) for name, cls in drivers().items()}
    assert declared["raw"] == {"read_aio", "write_aio"}
    for name, events in declared.items():
        assert events <= EVENT_SET, (name, events - EVENT_SET)
    assert set(QEMU_EMITTERS) == EVENT_SET


def test_without_a_format_above_the_read_and_flush_rules_warn(
        conf: str, image: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rig.open(_blkdebug(conf, image)) as blk:
        lines = capsys.readouterr().err.splitlines()
        head = f"rig: warning: blkdebug rule {conf}:"
        tail = "can never fire: no node of this graph emits its event"
        assert [line.split(" (emitted by ")[0] for line in lines] == [
            f"{head}1 [inject-error] {tail} 'read_aio'",
            f"{head}6 [inject-error] {tail} 'l2_load'",
            f"{head}9 [set-state] {tail} 'flush_to_disk'",
        ]
        emitted = [line.split(" (emitted by ")[1] for line in lines]
        assert "raw" in emitted[0] and "qcow2" in emitted[1]
        assert emitted[2] == "the flush of a node above it, such as a raw format node)"
        blk.pread(2048, 512)  # the warning told the truth: the read_aio rule does not fire
        node = find_debug_node(blk.root)
        assert node is not None and [f"rig: {line}" for line in node.unreachable] == lines


def test_under_a_raw_node_only_the_qcow2_rule_warns_and_the_read_rule_fires(
        conf: str, image: str, capsys: pytest.CaptureFixture[str]) -> None:
    with rig.open({"driver": "raw", "file": _blkdebug(conf, image)}) as blk:
        err = capsys.readouterr().err
        assert "'read_aio'" not in err and "'flush_to_disk'" not in err
        assert err.count("\n") == 1 and f"{conf}:6 [inject-error]" in err
        with pytest.raises(OSError) as failed:
            blk.pread(2048, 512)
        assert failed.value.errno == errno.EIO


def test_options_rules_are_named_by_index(image: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"driver": "blkdebug", "image": {"driver": "file", "filename": image},
            "inject-error": [{"event": "pwritev"}, {"event": "write_aio"},
                             {"event": "pwritev_rmw_head"}]}
    with rig.open(spec):
        lines = capsys.readouterr().err.splitlines()
    assert [line.split(" can never")[0] for line in lines] == [
        "rig: warning: blkdebug rule inject-error.1",
        "rig: warning: blkdebug rule inject-error.2"]
    assert lines[1].endswith("(emitted by the read-modify-write of a write that misses "
                             "blkdebug's 'align')")


def test_rmw_events_reach_a_blkdebug_with_align(image: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = {"driver": "blkdebug", "align": 4096, "image": {"driver": "file", "filename": image},
            "inject-error": [{"event": "pwritev_rmw_head", "iotype": "read", "once": True}]}
    with rig.open(spec) as blk:
        assert capsys.readouterr().err == ""
        with pytest.raises(OSError):
            blk.pwrite(512, b"x" * 512)  # the head read is padding: the rule fires there
