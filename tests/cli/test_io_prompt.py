"""``rig io`` reading commands from standard input (``rig.cli.io_input``): prompts that only go
out when somebody could tell still give qemu-io's output byte for byte, standard error merged
in; a program that waits for each prompt before it answers is never left waiting; a garbage
line is a command not found."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli.helpers import RIG, normalise

pytestmark = pytest.mark.rig_needs("qemu_utils")

# Commands that print nothing, to stdout, to stderr, and both, in turn (the output's order on one
# pipe depends on where each prompt was flushed).
SCRIPT = """\
write -q -P 0x11 0 4k
read -q -P 0x11 0 4k
foo
read -q -P 0x22 0 512
read -q 0 512
bar
read -q -P 0x22 512 512
write -q 0 1
open -o driver=nonesuch x
read -q 0 512\r
read -q 0 512"""


def _merged(argv: list[str], stdin: bytes) -> tuple[int, str]:
    p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    return p.returncode, p.stdout.decode()


@pytest.mark.parametrize("script", [SCRIPT, SCRIPT + "\n", "", "\n\n"])
def test_merged_output_is_qemu_ios(tmp_path: Path, script: str) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(65536))
    qemu = _merged(["qemu-io", "-f", "raw", str(img)], script.encode())
    img.write_bytes(bytes(65536))
    rig = _merged([*RIG, "io", "-f", "raw", str(img)], script.encode())
    assert normalise(rig[1].replace("rig io", "qemu-io")) == normalise(qemu[1])
    assert rig[0] == qemu[0]
    lines = script.count("\n") + (1 if script and not script.endswith("\n") else 0)
    assert rig[1].count("qemu-io> ") == lines + 1  # one before each line, one before the end


def test_a_driver_that_waits_for_each_prompt_is_answered(tmp_path: Path) -> None:
    """As qemu-iotests' QemuIoInteractive: send a command only after the prompt came."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(65536))
    p = subprocess.Popen([*RIG, "io", "-f", "raw", str(img)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdin is not None and p.stdout is not None
    try:
        seen = b""
        for cmd in (b"write -q -P 0x5 0 4k\n", b"read -P 0x5 0 4k\n", b"read -q 0 4k\n"):
            seen = _until_prompt(p.stdout.fileno(), seen)
            p.stdin.write(cmd)
            p.stdin.flush()
        seen = _until_prompt(p.stdout.fileno(), seen)
        assert b"read 4096/4096 bytes at offset 0" in seen
        p.stdin.close()
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _until_prompt(fd: int, seen: bytes) -> bytes:
    """Read until one more prompt than ``seen`` holds has come (10 s at most)."""
    want = seen.count(b"qemu-io> ") + 1
    deadline = time.monotonic() + 10
    while seen.count(b"qemu-io> ") < want:
        left = deadline - time.monotonic()
        assert left > 0, f"no prompt within 10 s; output so far: {seen!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"output ended; so far: {seen!r}"
            seen += chunk
    return seen


def test_a_line_that_is_not_text_is_a_command_not_found(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(65536))
    rc, out = _merged([*RIG, "io", "-f", "raw", str(img)], b"\xff\xfe read\nread -q 0 512\n")
    assert "Traceback" not in out
    assert 'command "\ufffd\ufffd" not found' in out
    assert out.count("qemu-io> ") == 3
    assert rc == 1
