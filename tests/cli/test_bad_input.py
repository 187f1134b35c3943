"""Bad input gets one clear line on stderr, a non-zero exit, no traceback, and no data touched."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import RIG, rig_io, run


def one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_image() -> None:
    r = rig_io("-f", "raw", "-c", "read 0 512", "/nonexistent/disk.img")
    assert r.rc == 1
    one_line_error(r.err, "Could not open '/nonexistent/disk.img'", "No such file or directory")


def test_missing_device() -> None:
    r = rig_io("-f", "raw", "-c", "read 0 512", "host_device:/dev/rig-no-such-dev")
    assert r.rc == 1
    one_line_error(r.err, "/dev/rig-no-such-dev", "No such file or directory")


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ('json:{"driver": "raw", ', "Could not parse the JSON options"),
        ('json:["raw"]', "expected an object"),
        ('json:{"driver": "raw", "file": {"driver": "file", "filename": "IMG", "foo": 1}}',
         "doesn't support the option 'file.foo'"),
        ('json:{"driver": "nosuch", "file": "IMG"}', "Unknown driver 'nosuch'"),
        ('json:{"driver": "raw", "file": {"driver": "file", "filename": "IMG", '
         '"cache": {"direct": "maybe"}}}', "'file.cache.direct' expects 'on' or 'off'"),
        ('json:{"driver": "raw", "file": {"driver": "file"}}', "requires a file name"),
    ],
)
def test_bad_graph(rig_image: Callable[..., Path], spec: str, needle: str) -> None:
    img = rig_image()
    before = img.read_bytes()
    r = rig_io("-c", "write 0 512", spec.replace("IMG", str(img)))
    assert r.rc == 1
    one_line_error(r.err, needle)
    assert img.read_bytes() == before


def test_bad_image_opts(rig_image: Callable[..., Path]) -> None:
    img = rig_image()
    r = rig_io("--image-opts", "-c", "write 0 512",
               f"driver=raw,file.driver=file,file.filename={img},bogus=1")
    assert r.rc == 1
    one_line_error(r.err, "Block format 'raw' does not support the option 'bogus'")


def test_bad_commands_keep_going_and_fail(rig_image: Callable[..., Path]) -> None:
    img = rig_image()
    r = rig_io("-f", "raw", "-c", "frobnicate", "-c", "write -P 7 0 512", str(img))
    assert r.rc == 1
    assert 'command "frobnicate" not found' in r.err
    assert img.read_bytes()[:512] == b"\x07" * 512


def test_offset_past_end_fails_without_writing(rig_image: Callable[..., Path]) -> None:
    img = rig_image(1 << 20)
    r = rig_io("-f", "raw", "-c", "write 1020k 8k", "-c", "read 1M 1", str(img))
    assert r.rc == 1
    assert r.out == "write failed: Input/output error\nread failed: Input/output error\n"
    assert img.read_bytes() == bytes(1 << 20)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--loop", "12q"], "--loop: not a size"),
        (["--loop", "1000", "--loop-block-size", "4096"], "positive multiple of the block"),
        (["-t", "sometimes", "IMG"], "Invalid cache option: sometimes"),
        (["--loop", "1M", "IMG"], "do not also give IMAGE"),
        (["--frobnicate"], "unrecognized option '--frobnicate'"),  # qemu-io's getopt words
        ([], "no file open, try 'help open'"),
    ],
)
def test_bad_arguments(rig_image: Callable[..., Path], args: list[str], needle: str) -> None:
    img = str(rig_image())
    r = rig_io(*[img if a == "IMG" else a for a in args], "-c", "read 0 512")
    assert r.rc != 0
    one_line_error(r.err, needle)


def test_python_m_rig_version() -> None:
    r = run([*RIG, "--version"])
    assert r.rc == 0
    assert r.out.startswith("rig ")


@pytest.fixture
def mounted_loop(rig_loop: Callable[..., Any]) -> Iterator[Any]:
    dev = rig_loop(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", dev.path], check=True, capture_output=True)
    mnt = tempfile.mkdtemp(prefix="rig-mnt-")
    # Read-only: a read-write ext4 mount rewrites its superblock on its own (commit, lazy
    # init), which the test would take for a write by the rig.
    subprocess.run(["mount", "-o", "ro", dev.path, mnt], check=True, capture_output=True)
    try:
        yield dev
    finally:
        subprocess.run(["umount", mnt], check=False)
        os.rmdir(mnt)


@pytest.mark.rig_needs("loop", "mkfs")
def test_mounted_device_is_refused_even_when_allowed(mounted_loop: Any) -> None:
    with open(mounted_loop.path, "rb") as f:
        before = f.read(1 << 20)
    r = rig_io("-f", "raw", "--allow", mounted_loop.path, "-c", "write -P 1 0 4k",
               mounted_loop.path)
    assert r.rc == 1
    one_line_error(r.err, mounted_loop.path, "mounted")
    with open(mounted_loop.path, "rb") as f:
        assert f.read(1 << 20) == before


@pytest.mark.rig_needs("loop")
def test_device_rig_did_not_create_is_refused_then_allowed(rig_loop: Callable[..., Any]
                                                          ) -> None:
    dev = rig_loop(4 << 20)  # made by this test process, not by the rig io process
    r = rig_io("-f", "raw", "-c", "write -P 1 0 4k", dev.path)
    assert r.rc == 1
    one_line_error(r.err, "did not create", "--allow")
    r = rig_io("-f", "raw", "--allow", dev.path, "-c", "write -P 1 0 4k", dev.path)
    assert r.rc == 0, r.err
    r = rig_io("-f", "raw", "-r", "-c", "read -P 1 0 4k", dev.path)
    assert r.rc == 0, r.err


def _loops_backed_by(directory: Path) -> list[str]:
    """Loop devices whose backing file is (or was, before it was unlinked) in ``directory``."""
    found = []
    for name in os.listdir("/sys/block"):
        try:
            backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
        except OSError:
            continue
        if backing.startswith(f"{directory}/"):
            found.append(f"/dev/{name}")
    return found


@pytest.mark.rig_needs("loop")
def test_loop_main_job_leaves_nothing_behind(tmp_path: Path) -> None:
    seen: list[str] = []
    r = rig_io("--loop", "16M", "--loop-block-size", "4096", "--loop-direct-io", "-t", "none",
               "-c", "write -P 0xa5 0 1M", "-c", "read -P 0xa5 0 1M", "-c", "read -P 0 1M 1k",
               env={"RIG_SCRATCH_DIR": str(tmp_path)})
    assert r.rc == 0, r.err
    assert "read 1048576/1048576 bytes at offset 0" in r.out
    seen += _loops_backed_by(tmp_path)
    assert seen == []
    assert list(tmp_path.iterdir()) == []  # the scratch backing file is gone too


@pytest.mark.rig_needs("loop")
def test_killed_rig_io_leaves_no_loop_device(tmp_path: Path) -> None:
    proc = subprocess.Popen([*RIG, "io", "--loop", "8M", "-c", "sleep 60000"],
                            env={**os.environ, "RIG_SCRATCH_DIR": str(tmp_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # wait until its loop device is bound
            if _loops_backed_by(tmp_path):
                break
            time.sleep(0.05)
        assert _loops_backed_by(tmp_path), "rig io did not attach a loop device"
    finally:
        proc.kill()
        proc.wait()
    for _ in range(100):  # autoclear detaches once the killed process's fds are closed
        if not _loops_backed_by(tmp_path):
            break
        time.sleep(0.05)
    assert _loops_backed_by(tmp_path) == []


# ------------------------------------------------------- issue 18: tracebacks found by fuzzing
@pytest.mark.parametrize(("command", "line"), [
    ("sleep 1E", "1E is not a valid number"),                      # OverflowError
    ("sleep -1", "-1 is not a valid number"),                      # was getopt's usage line
    ("read " + "1" * 5000 + " 512", "Parsing error: argument too large -- 1111"),
    ("read " + "1" * 400 + ".5k 512", "Parsing error: non-numeric argument"),
    ("read ² 512", "Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ²"),
    ("write -P ٣ 0 512", "٣ is not a valid pattern byte"),
])
def test_a_bad_number_ends_its_command_not_the_session(rig_image: Callable[..., Path],
                                                       command: str, line: str) -> None:
    """As qemu-io 7.2 (checked on this machine): the command prints one line and fails, the
    next -c command still runs, the exit status is 1."""
    img = rig_image()
    r = rig_io("-f", "raw", "-c", command, "-c", "write -P 7 0 512", str(img))
    assert r.rc == 1, r.err
    assert "Traceback" not in r.err + r.out
    assert r.out.splitlines()[0].startswith(line), r.out
    assert "wrote 512/512 bytes at offset 0" in r.out
    assert img.read_bytes()[:512] == b"\x07" * 512


@pytest.mark.parametrize(("spec", "needle"), [
    ("driver=memory,size=1E", "cannot allocate 1E"),                          # MemoryError
    ('json:{"driver": "raw", "file": ' + "[" * 1000 + "]" * 1000 + "}", "nested more than"),
    ("driver=faults,file.driver=memory,file.size=64k,rules.².action=error", "rules.N.KEY"),
    ("driver=faults,file.driver=memory,file.size=64k,rules.0.action=delay,"
     "rules.0.seconds=1e300", "'seconds'"),
])
def test_bad_graph_values_are_refused_at_open(spec: str, needle: str) -> None:
    r = rig_io("--image-opts" if not spec.startswith("json:") else "-U", "-c", "read 0 512",
               spec)
    assert r.rc == 1
    one_line_error(r.err, needle)


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e300"])
def test_rig_sg_timeout_must_be_a_finite_number(timeout: str) -> None:
    r = run([*RIG, "sg", "turs", "--timeout", timeout, "/dev/rig-no-such-sg"])
    assert r.rc == 2
    one_line_error(r.err, "--timeout", repr(timeout))


@pytest.mark.parametrize(("name", "text", "needle"), [
    ("rules.toml", '[[rules]]\naction = "delay"\nseconds = 1e300\n', "'seconds'"),
    ("rules.json", '{"rules": [{"action": "error", "errno": "ENOSUCH"}]}', "'errno'"),
    ("rules.toml", "rules = " + "[" * 1000 + "]" * 1000 + "\n", "nested more than"),
    ("blkdebug.conf", '[inject-error]\nevent = "read_aio"\nerrno = "2147483648"\n', "'errno'"),
])
def test_rig_run_refuses_bad_faults_before_exporting(tmp_path: Path, name: str, text: str,
                                                     needle: str) -> None:
    """Once, such a value loaded, the device was exported, and the first request crashed in
    the FUSE layer (a traceback, EINVAL to the program). Now: exit 2, one line, nothing run."""
    rules = tmp_path / name
    rules.write_text(text)
    marker = tmp_path / "ran"
    r = run([*RIG, "run", "--faults", str(rules), "--size", "1M", "--", "touch", str(marker)],
            timeout=60)
    assert r.rc == 2, r.err
    one_line_error(r.err, "rig run: ", needle)
    assert not marker.exists()
