"""``rig stream``: bad input is one line and exit 2, a failed job exit 1, success 0 with the
backing file rewritten; ``--json`` and the progress bar; ``rig io`` probes qcow2 images."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from rig.cli.main import main
from tests.formats.helpers import run
from tests.jobs.chains import backing_file, content
from tests.jobs.faults import IOTEST_030, blkdebug_name, write_rules

pytestmark = [pytest.mark.rig_needs("qemu_utils"), pytest.mark.timeout(60)]
MiB = 1 << 20


def _chain(tmp: Path) -> tuple[Path, Path, Path]:
    base = tmp / "base.raw"
    base.write_bytes(b"\x01" * MiB)
    mid = tmp / "mid.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "raw", mid)
    run("qemu-io", "-c", "write -P 2 512k 512", mid)
    top = tmp / "top.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid.name, "-F", "qcow2", top)
    return base, mid, top


def test_stream_whole_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, top = _chain(tmp_path)
    want = content(top, tmp_path)
    assert main(["stream", str(top)]) == 0
    out = capsys.readouterr()
    assert "done" in out.out and "backing file: none" in out.out
    assert out.err == ""  # no progress bar when stderr is not a terminal
    assert backing_file(top) is None
    assert content(top, tmp_path) == want


def test_stream_to_base_json_and_progress(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    base, _, top = _chain(tmp_path)
    assert main(["stream", "--base", str(base), "--speed", "100M", "--json", "--progress",
                 str(top)]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["status"] == "completed" and result["backing-file"] == "base.raw"
    assert result["speed"] == 100 * MiB and result["offset"] == result["len"] == MiB
    assert [e["event"] for e in result["events"]].count("BLOCK_JOB_COMPLETED") == 1
    assert "streaming [" in out.err and "100.0%" in out.err
    assert backing_file(top) == "base.raw"


@pytest.mark.parametrize(("argv", "message"), [
    (["--base", "nowhere.img"], "Can't find 'nowhere.img' in the backing chain"),
    (["--speed", "fast"], "--speed: not a size: 'fast'"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               argv: list[str], message: str) -> None:
    _, _, top = _chain(tmp_path)
    assert main(["stream", *argv, str(top)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rig stream: error: ") and message in err
    assert err.count("\n") == 1
    assert backing_file(top) == "mid.qcow2"


def test_missing_and_non_qcow2_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stream", str(tmp_path / "nope.qcow2")]) == 2
    assert "No such file" in capsys.readouterr().err
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(4096))
    assert main(["stream", str(raw)]) == 2
    err = capsys.readouterr().err
    assert "is not a qcow2 image" in err and err.count("\n") == 1


def test_bad_on_error_is_an_argparse_error(tmp_path: Path) -> None:
    _, _, top = _chain(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["stream", "--on-error", "panic", str(top)])
    assert exc.value.code == 2


def test_failed_job_exits_1_and_keeps_the_backing(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\x05" * (2 * MiB))
    conf = write_rules(tmp_path / "rules.conf", IOTEST_030, errno=errno.EIO, sector=1024)
    top = tmp_path / "test.qcow2"
    name = blkdebug_name(conf, backing)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", name, "-F", "raw", top, "2M")
    assert main(["stream", str(top)]) == 1
    err = capsys.readouterr().err
    assert "failed: Input/output error at offset 524288 of 2097152" in err
    assert backing_file(top) == name
    run("qemu-img", "check", top)


def test_stop_without_a_terminal_cancels(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\x05" * (2 * MiB))
    conf = write_rules(tmp_path / "rules.conf", IOTEST_030, errno=errno.EIO, sector=1024)
    top = tmp_path / "test.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", blkdebug_name(conf, backing),
        "-F", "raw", top, "2M")
    assert main(["stream", "--on-error", "stop", str(top)]) == 1
    err = capsys.readouterr().err
    assert "stopped at offset 524288 (io-status failed)" in err and "cancelled" in err


def test_rig_io_probes_qcow2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, top = _chain(tmp_path)
    assert main(["io", "-c", "read -P 2 512k 512", str(top)]) == 0
    out = capsys.readouterr()
    assert "read 512/512 bytes at offset 524288" in out.out
    assert "WARNING" not in out.err  # qemu-io warns only when it guessed raw
