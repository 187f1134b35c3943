"""``rig devices DEV``: a device's queue limits, write cache and host_device limits, or a
graph's limits, as text and JSON (issue 16 parts 4 and 5)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rig.cli.device_detail import report_for
from rig.cli.main import main
from rig.drivers.loop import LoopDevice
from rig.errors import RigError
from tests.fuzzing import fuzz, one_line


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def rig_devices(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    def run(*args: str) -> Ran:
        rc = main(["devices", *args])
        out, err = capsys.readouterr()
        return Ran(rc, out, err)

    return run


@pytest.mark.rig_needs("loop")
def test_a_loop_device_shows_its_queue_write_cache_and_limits(
        rig_loop: Callable[..., LoopDevice], rig_devices: Callable[..., Ran]) -> None:
    dev = rig_loop(size=1 << 20, block_size=4096)
    dev.set_max_sectors_kb(256)
    queue = Path(dev.sysfs_dir) / "queue"
    r = rig_devices("--json", dev.path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["device"] == dev.path
    assert report["write_cache"] == (queue / "write_cache").read_text().strip()
    assert report["volatile_write_cache"] == (report["write_cache"] == "write back")
    assert report["queue"]["logical_block_size"] == 4096
    assert report["queue"]["max_sectors"] == 256 * 1024
    assert report["queue"]["max_segments"] == int((queue / "max_segments").read_text())
    assert report["limits"]["request_alignment"] == 4096
    assert report["limits"]["max_hw_transfer"] == 256 * 1024
    text = rig_devices(dev.path)
    assert text.returncode == 0, text.stderr
    assert f"  write cache: {report['write_cache']} (" in text.stdout
    assert "    max_sectors_kb           256\n" in text.stdout
    assert "    max hw transfer          256K (262144)\n" in text.stdout


def test_a_graph_shows_its_merged_limits(tmp_path: Path,
                                         rig_devices: Callable[..., Ran]) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    spec = ('json:{"driver":"blkdebug","align":4096,"max-transfer":65536,'
            f'"image":{{"driver":"file","filename":"{image}"}}}}')
    r = rig_devices("--json", spec)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [node["driver"] for node in report["nodes"]] == ["blkdebug", "file"]
    assert report["limits"]["request_alignment"] == 4096
    assert report["limits"]["max_transfer"] == 65536


def test_a_missing_or_character_device_is_one_line_and_exit_2(
        tmp_path: Path, rig_devices: Callable[..., Ran]) -> None:
    for dev, words in ((str(tmp_path / "nope"), "no such device or image"),
                       ("/dev/null", "a character device, not a block device")):
        r = rig_devices(dev)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.count("\n") == 1 and words in r.stderr


@given(dev=st.text(max_size=60))
@fuzz
def test_garbage_dev_is_a_report_or_a_one_line_error(dev: str) -> None:
    assume("\0" in dev or not os.path.exists(dev))  # garbage, not the host's own files
    try:
        report_for(dev)
    except RigError as e:
        one_line(e)
