"""``rig devices`` and the pyudev inventory, on real loop devices."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rig.cli import devices_cmd
from rig.cli.devices_cmd import human_size
from rig.cli.main import build_parser
from rig.drivers.loop import scratch_loop
from rig.drivers.safety import AllowList
from rig.drivers.udev import list_block_devices

pyudev = pytest.importorskip("pyudev", reason="needs pyudev (pip install pyudev)")


MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_env_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AllowList.ENV, raising=False)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rig devices")
    devices_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert devices_cmd.run(_args("--json", *argv)) == 0
    out: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return out


def _entry(devices: list[dict[str, Any]], path: str) -> dict[str, Any]:
    matches = [d for d in devices if d["path"] == path]
    assert len(matches) == 1, f"{path} not listed once in {[d['path'] for d in devices]}"
    return matches[0]


def test_human_size() -> None:
    assert human_size(0) == "0B"
    assert human_size(512) == "512B"
    assert human_size(64 * MiB) == "64M"
    assert human_size(1536 * MiB) == "1.5G"
    assert human_size(256 * 1024**3) == "256G"


def test_rig_devices_is_a_command() -> None:
    assert build_parser().parse_args(["devices", "--json"]).run is devices_cmd.run


@pytest.mark.rig_needs("loop")
class TestListing:
    def test_json_lists_scratch_loop(self, capsys: pytest.CaptureFixture[str]) -> None:
        with scratch_loop(64 * MiB, block_size=4096) as dev:
            entry = _entry(_run_json(capsys), dev.path)
        assert entry["name"] == f"loop{dev.index}"
        assert entry["size"] == 64 * MiB
        assert entry["logical_block_size"] == 4096
        assert entry["physical_block_size"] == 4096
        assert entry["loop_backing_file"] == dev.backing_file
        assert entry["read_only"] is False
        assert entry["mountpoints"] == [] and entry["holders"] == []
        assert entry["writable_by_rig"] is True and entry["why_not"] == ""

    def test_table(self, capsys: pytest.CaptureFixture[str]) -> None:
        with scratch_loop(64 * MiB) as dev:
            assert devices_cmd.run(_args()) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [
            "NAME", "SIZE", "LBS", "PBS", "ROT", "RM", "RO", "MOUNTED/HOLDERS", "WWN", "SERIAL",
            "BY-ID", "BY-PATH", "MODEL", "LAB", "RIG-WRITABLE",
        ]
        row = next(line for line in lines if line.split()[0] == f"loop{dev.index}")
        assert row.split()[1:4] == ["64M", "512", "512"]
        assert row.split()[-1] == "yes"
        # columns line up: SIZE is right-aligned, RIG-WRITABLE starts at the same offset everywhere
        last = lines[0].index("RIG-WRITABLE")
        assert all(line[last - 2 : last] == "  " and line[last] != " " for line in lines)
        size_end = lines[0].index("SIZE") + len("SIZE")
        assert row[size_end - 3 : size_end] == "64M"

    def test_lab_entries_and_identity_columns(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--lab shows the entry each device is; a refused entry is marked ``!`` with its
        reason in JSON; an entry that finds nothing is one line on stderr."""
        with scratch_loop(4 * MiB) as a, scratch_loop(4 * MiB) as b:
            lab = tmp_path / "lab.toml"
            lab.write_text(f'[[disk]]\nname = "good"\npath = "{a.path}"\n'
                           f'[[disk]]\nname = "bad"\npath = "{b.path}"\nserial = "S1"\n'
                           '[[disk]]\nname = "gone"\nwwn = "0x5000c500a1b2c3d4"\n')
            assert devices_cmd.run(_args("--json", "--lab", str(lab))) == 0
            out = capsys.readouterr()
            rows, err = json.loads(out.out), out.err
            assert devices_cmd.run(_args("--lab", str(lab))) == 0
            table = capsys.readouterr().out.splitlines()
        good, bad = _entry(rows, a.path), _entry(rows, b.path)
        assert (good["lab_entry"], good["lab_problem"]) == ("good", None)
        assert bad["lab_entry"] == "bad"
        assert bad["lab_problem"] == (f"lab disk 'bad': serial: expected S1, found none at "
                                      f"{b.path} (disks renumber: check which disk this is "
                                      "and fix the inventory)")
        for row in (good, bad):  # a loop device has no WWN, serial or model
            assert (row["wwn"], row["serial"], row["model"]) == (None, None, None)
        assert [line.split()[13] for line in table
                if line.split()[0] in (f"loop{a.index}", f"loop{b.index}")] == ["good", "!bad"]
        assert ("rig devices: lab disk 'gone': no device with wwn 0x5000c500a1b2c3d4 is "
                "present") in err

    def test_foreign_loop_needs_allow(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        if shutil.which("losetup") is None:
            pytest.skip("needs losetup (util-linux)")
        backing = tmp_path / "foreign.img"
        with open(backing, "wb") as f:
            f.truncate(4 * MiB)
        dev = subprocess.run(
            ["losetup", "-f", "--show", str(backing)], check=True, capture_output=True, text=True
        ).stdout.strip()
        try:
            entry = _entry(_run_json(capsys), dev)
            assert entry["writable_by_rig"] is False
            assert "did not create" in entry["why_not"]
            assert _entry(_run_json(capsys, "--allow", dev), dev)["writable_by_rig"] is True
        finally:
            subprocess.run(["losetup", "-d", dev], check=False)

    def test_mounted_device_shows_mountpoint(self, tmp_path: Path) -> None:
        if shutil.which("mkfs.ext4") is None:
            pytest.skip("needs mkfs.ext4 (e2fsprogs)")
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        with scratch_loop(64 * MiB) as dev:
            subprocess.run(["mkfs.ext4", "-q", "-F", dev.path], check=True, capture_output=True)
            subprocess.run(["mount", dev.path, str(mnt)], check=True, capture_output=True)
            try:
                info = next(d for d in list_block_devices() if d.path == dev.path)
            finally:
                subprocess.run(["umount", str(mnt)], check=False)
        assert info.mountpoints == [str(mnt)]
        assert not info.writable_by_rig
        assert info.why_not.startswith(f"it is mounted at {mnt}")

    def test_unbound_loops_only_with_all(self) -> None:
        for d in list_block_devices():
            if d.name.startswith("loop"):
                assert d.loop_backing_file is not None, d
        everything = list_block_devices(include_unbound=True)
        unbound = [d for d in everything if d.name.startswith("loop") and not d.loop_backing_file]
        for d in unbound:
            assert d.size == 0
            assert not d.writable_by_rig
