"""One blkdebug config, four front ends, the same failures (issue 16 part 1): ``qemu-io -f raw
blkdebug:CONF:IMG``, ``rig io`` on the same line, ``rig run`` and ``rig export`` (dd with
O_DIRECT on the exported device). A rule only qcow2 could trigger warns once, everywhere; the
rules that fire do not."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import RIG, commands, qemu_io, rig_io

pytestmark = [pytest.mark.rig_needs("loop", "fuse", "qemu_utils"), pytest.mark.timeout(120)]

#: A read error at sector 2048 (armed by read_aio), and a state machine: the first write moves
#: the state from 1 to 2, and only then does a write at sector 4096 fail with ENOSPC.
CONF = """\
[inject-error]
event = "read_aio"
sector = "2048"
iotype = "read"
errno = "5"

[set-state]
event = "write_aio"
state = "1"
new_state = "2"

[inject-error]
event = "write_aio"
state = "2"
sector = "4096"
iotype = "write"
errno = "28"

[inject-error]
event = "l2_load"
"""
SIZE = 4 << 20
#: The same three requests, as qemu-io commands and as dd runs with O_DIRECT.
IO_SCRIPT = ["read 1048576 512", "write 4096 4096", "write 2097152 4096"]
DD_SCRIPT = """\
dd if="$RIG_DEV" of=/dev/null bs=512 skip=2048 count=1 iflag=direct 2>&1; echo "status $?"
dd if=/dev/zero of="$RIG_DEV" bs=4k seek=1 count=1 oflag=direct 2>&1; echo "status $?"
dd if=/dev/zero of="$RIG_DEV" bs=4k seek=512 count=1 oflag=direct 2>&1; echo "status $?"
"""
#: (failed?, strerror) for each request, as qemu-io reports them.
EXPECTED = [(True, "Input/output error"), (False, ""), (True, "No space left on device")]


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "rules.conf"
    path.write_text(CONF)
    return str(path)


def _image(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(bytes(SIZE))
    return str(path)


def _io_outcomes(out: str) -> list[tuple[bool, str]]:
    """qemu-io's lines, one per command: ``read failed: ERR`` or ``wrote/read N/N bytes``."""
    lines = [line for line in out.splitlines() if " failed: " in line or "bytes at offset" in line]
    return [(True, line.split(" failed: ")[1]) if " failed: " in line else (False, "")
            for line in lines]


def _dd_outcomes(out: str) -> list[tuple[bool, str]]:
    """Per dd run: its status, and the strerror it printed when it failed."""
    outcomes: list[tuple[bool, str]] = []
    error = ""
    for line in out.splitlines():
        if line.startswith("dd: error"):
            error = line.rsplit(": ", 1)[1]
        elif line.startswith("status "):
            outcomes.append((line != "status 0", error if line != "status 0" else ""))
            error = ""
    return outcomes


def _one_warning(err: str) -> None:
    warnings = [line for line in err.splitlines() if "warning: blkdebug rule" in line]
    assert len(warnings) == 1, err
    assert ":19 [inject-error] can never fire" in warnings[0]
    assert "'l2_load'" in warnings[0]


def test_qemu_io_and_rig_io_fail_the_same_requests(conf: str, tmp_path: Path) -> None:
    results = {}
    for name, tool in (("qemu", qemu_io), ("rig", rig_io)):
        image = _image(tmp_path, f"{name}.img")
        r = tool("-f", "raw", *commands(IO_SCRIPT), f"blkdebug:{conf}:{image}")
        results[name] = (_io_outcomes(r.out), r.rc)
        if name == "rig":
            _one_warning(r.err)
    assert results["qemu"] == results["rig"] == (EXPECTED, 1)


def test_rig_run_fails_the_same_requests_as_qemu_io(conf: str, tmp_path: Path) -> None:
    image = _image(tmp_path, "run.img")
    r = subprocess.run([*RIG, "run", "--faults", conf, image, "--", "sh", "-c", DD_SCRIPT],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert _dd_outcomes(r.stdout) == EXPECTED, r.stdout
    _one_warning(r.stderr)


def test_rig_export_fails_the_same_requests_as_qemu_io(conf: str, tmp_path: Path) -> None:
    image = _image(tmp_path, "export.img")
    exporter = subprocess.Popen([*RIG, "export", "--faults", conf, image],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert exporter.stdout is not None
        device = exporter.stdout.readline().strip()
        assert device.startswith("/dev/loop"), exporter.communicate(timeout=30)
        r = subprocess.run(["sh", "-c", DD_SCRIPT], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "RIG_DEV": device})
    finally:
        exporter.send_signal(signal.SIGTERM)
        _, err = exporter.communicate(timeout=60)
    assert exporter.returncode == 0, err
    assert _dd_outcomes(r.stdout) == EXPECTED, r.stdout
    _one_warning(err)


def test_a_graph_with_a_format_gets_blkdebug_under_it(tmp_path: Path) -> None:
    """GRAPH with a format of its own gets blkdebug between the format and its file."""
    import rig
    from rig.cli.run_cmd import rules_filter
    from rig.core.graph import spec_to_flat

    image, conf = tmp_path / "disk.qcow2", tmp_path / "reads.conf"
    conf.write_text('[inject-error]\nevent = "read_aio"\niotype = "read"\nerrno = "5"\n')
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "4M"], check=True)
    spec = rules_filter(spec_to_flat(f"driver=qcow2,file.filename={image}"), str(conf))
    with rig.open(spec) as blk:
        assert [node.driver_name for node in blk.root.walk()] == ["qcow2", "blkdebug", "file"]
        blk.pwrite(1 << 20, bytes(4096))
        with pytest.raises(OSError) as failed:  # qcow2's read_aio armed the rule
            blk.pread(1 << 20, 4096)
        assert failed.value.errno == errno.EIO

    nested = rules_filter({"driver": "qcow2", "file": {"driver": "file", "filename": "x"}}, "c")
    assert nested == {"driver": "qcow2", "file": {"driver": "blkdebug", "config": "c",
                                                  "image": {"driver": "file", "filename": "x"}}}
    flat = rules_filter({"driver": "raw", "file.driver": "file", "file.filename": "x"}, "c")
    assert flat == {"driver": "raw", "file": {"driver": "blkdebug", "config": "c",
                                              "image": {"driver": "file", "filename": "x"}}}
    plain = rules_filter({"filename": "x"}, "c")
    assert plain == {"driver": "raw", "file": {"driver": "blkdebug", "config": "c",
                                               "image": {"filename": "x"}}}
