"""``rig crash states`` and ``rig crash materialize``: the CLI over the crash-state library."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rig.cli.main import main
from rig.crash.crashstate import CrashState
from rig.crash.logfile import read_log
from rig.crash.states import CrashStates

SIZE = 64 * 1024


def test_states_lists_what_the_library_enumerates(log: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crash", "states", str(log), "--json", "--limit", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    states = CrashStates(read_log(log))
    assert out["states"] == states.count() == len(out["names"])
    assert out["names"] == [str(s) for s in states]
    assert out["exhaustive"] and out["cuts"] == states.cuts()
    assert main(["crash", "states", str(log), "--torn", "--limit", "2"]) == 0
    text = capsys.readouterr().out
    torn = CrashStates(read_log(log), torn=True).count()
    assert f"{torn} crash states (exhaustive, torn)" in text
    assert f"... {torn - 2} more" in text


def test_materialize_writes_exactly_that_state(log: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    states = CrashStates(read_log(log))
    chosen = list(states)[-2]
    image = tmp_path / "disk.img"
    image.write_bytes(b"\xee" * SIZE)
    assert main(["crash", "materialize", str(log), str(chosen), str(image)]) == 0
    assert image.read_bytes() == states.image(CrashState.parse(str(chosen)))
    assert f"wrote {chosen}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["states", "LOG", "--limit", "-1"], "--limit must be >= 0"),
    (["materialize", "LOG", "nonsense", "IMG"], "not a crash state"),
    (["materialize", "LOG", "cut 999", "IMG"], "the log has no cut 999"),
    (["materialize", "LOG", "cut 1", "SMALL"], "but the log is of a 65536-byte device"),
    (["states", "NOTALOG"], "not a rig write log"),
])
def test_bad_input_is_one_line_and_exit_2(log: Path, tmp_path: Path, argv: list[str],
                                          message: str, capsys: pytest.CaptureFixture[str]) -> None:
    img, small, bad = tmp_path / "img", tmp_path / "small", tmp_path / "bad"
    img.write_bytes(bytes(SIZE))
    small.write_bytes(bytes(4096))
    bad.write_bytes(b"x" * 100)
    paths = {"LOG": str(log), "IMG": str(img), "SMALL": str(small), "NOTALOG": str(bad)}
    assert main(["crash", *[paths.get(a, a) for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rig crash: ") and message in err[0], err
    assert img.read_bytes() == bytes(SIZE) and small.read_bytes() == bytes(4096)


@pytest.mark.rig_needs("loop", "fuse")
def test_record_logs_a_real_programs_io(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """dd with O_DIRECT and fsync on the exported device: 8 writes, then a flush covering them."""
    log = tmp_path / "dd.rwlog"
    status = main(["crash", "record", "--log", str(log), "--size", "1M", "--",
                   "sh", "-c", "dd if=/dev/zero of=$RIG_DEV bs=4k count=8 oflag=direct "
                   "conv=fsync status=none && exit 3"])
    assert status == 3  # the command's own status
    records = read_log(log).records
    writes = [r for r in records if r.kind.name == "WRITE"]
    assert sorted(r.offset for r in writes) == [i * 4096 for i in range(8)]
    flushes = [r for r in records if r.kind.name == "FLUSH"]
    last_write = max(r.seq for r in writes)
    assert flushes and flushes[-1].seq > last_write and flushes[-1].covers >= last_write
    assert CrashStates(read_log(log)).count() >= 2 ** 8  # the 8 writes before the flush
    assert "records in" in capsys.readouterr().err
    assert main(["crash", "record", "--log", str(log), "--size", "1M", "--", "true"]) == 2
    assert "already exists; remove it or name a new file" in capsys.readouterr().err
