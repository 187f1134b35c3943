"""``rig io -o rerror=...,werror=...``: the backend's error policy from rig io (issue 16).

``report`` and ``ignore`` act on the same blkdebug failure qemu-io reports; ``stop`` and
``enospc`` need a control channel to resume, so rig io refuses them in one line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.cli.io_cmd import error_policy
from rig.errors import ConfigError
from tests.fuzzing import fuzz, one_line

CONF = '[inject-error]\nevent = "write_aio"\nerrno = "5"\n'


def rig_io(tmp_path: Path, option: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "fail-writes.conf"
    conf.write_text(CONF)
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(65536))
    return subprocess.run(
        [sys.executable, "-m", "rig", "io", "-f", "raw", "-o", option, "-c", "write 0 4k",
         "-c", "read 0 4k", f"blkdebug:{conf}:{image}"],
        capture_output=True, text=True, timeout=60)


def test_werror_ignore_makes_the_failed_write_succeed(tmp_path: Path) -> None:
    done = rig_io(tmp_path, "werror=ignore")
    assert "wrote 4096/4096 bytes at offset 0" in done.stdout, done
    assert "write failed" not in done.stdout


def test_werror_report_is_qemu_ios_failure(tmp_path: Path) -> None:
    done = rig_io(tmp_path, "werror=report")
    assert "write failed: Input/output error" in done.stdout, done


def test_rerror_ignore_makes_the_failed_read_succeed(tmp_path: Path) -> None:
    done = rig_io(tmp_path, "rerror=ignore")
    assert "write failed: Input/output error" in done.stdout, done
    assert "read 4096/4096 bytes at offset 0" in done.stdout


@pytest.mark.parametrize("option", ["werror=stop", "rerror=enospc", "werror=bogus"])
def test_a_policy_rig_io_cannot_serve_is_one_line(tmp_path: Path, option: str) -> None:
    done = rig_io(tmp_path, option)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and option.split("=")[0] in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.fuzz
@given(key=st.sampled_from(["rerror", "werror"]),
       value=st.one_of(st.text(), st.integers(), st.none(), st.booleans()))
@fuzz
def test_any_policy_value_is_taken_or_refused_in_one_line(key: str, value: object) -> None:
    flat: dict[str, object] = {key: value, "driver": "raw"}
    try:
        policy = error_policy(flat)
    except ConfigError as e:
        one_line(e)
        return
    assert value in ("report", "ignore")
    assert list(policy.values()) == [value] and flat == {"driver": "raw"}
