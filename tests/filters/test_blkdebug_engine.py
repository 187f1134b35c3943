"""blkdebug from Python: the engine's rules, and breakpoints used to reproduce a race."""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.core.backend import BlockBackend
from rig.errors import ConfigError
from rig.filters.blkdebug import BlkdebugFilter, find_debug_node
from rig.filters.blkdebug_config import parse_config_text


def open_debug(path: Path, **extra: Any) -> tuple[BlockBackend, BlkdebugFilter]:
    spec = {"driver": "raw", "file": {"driver": "blkdebug",
                                      "image": {"driver": "file", "filename": str(path)},
                                      **extra}}
    blk = rig.open(spec)
    node = find_debug_node(blk.root)
    assert node is not None
    node.say = lambda line: None
    return blk, node


@pytest.fixture
def img(tmp_path: Path) -> Path:
    path = tmp_path / "d.img"
    path.write_bytes(bytes(1 << 20))
    return path


def test_breakpoint_parks_a_write_until_resumed(img: Path) -> None:
    """The race tool: park a write at write_aio, read old data meanwhile, then let it land."""
    blk, dbg = open_debug(img)
    dbg.set_breakpoint("write_aio", "w")
    fut = blk.submit(blk.pwrite, 0, b"\x42" * 512)
    assert dbg.wait_break("w", timeout=5)
    assert not fut.done()
    assert blk.pread(0, 512) == bytes(512)  # the write has not been issued yet
    assert dbg.resume("w")
    fut.result(timeout=5)
    assert blk.pread(0, 512) == b"\x42" * 512
    assert not dbg.resume("w")  # one-shot: nothing parked any more
    blk.close()


def test_remove_break_resumes_everything_and_reports_enoent_after_a_hit(img: Path) -> None:
    blk, dbg = open_debug(img)
    dbg.set_breakpoint("read_aio", "r")
    fut = blk.submit(blk.pread, 0, 512)
    assert dbg.wait_break("r", timeout=5)
    with pytest.raises(OSError) as e:  # QEMU 7.2: the hit consumed the rule, so ENOENT...
        dbg.remove_breakpoint("r")
    assert e.value.errno == errno.ENOENT
    assert fut.result(timeout=5) == bytes(512)  # ...but the request was resumed anyway
    dbg.set_breakpoint("read_aio", "r2")
    dbg.remove_breakpoint("r2")  # not hit yet: removed cleanly
    assert blk.pread(0, 16) == bytes(16)
    blk.close()


def test_wait_break_times_out_when_nothing_arrives(img: Path) -> None:
    blk, dbg = open_debug(img)
    dbg.set_breakpoint("write_aio", "never")
    assert dbg.wait_break("never", timeout=0.05) is False
    blk.close()


def test_unknown_event_breakpoint_is_enoent(img: Path) -> None:
    blk, dbg = open_debug(img)
    with pytest.raises(OSError) as e:
        dbg.set_breakpoint("nonsense", "x")
    assert e.value.errno == errno.ENOENT
    blk.close()


def test_state_condition_uses_the_state_before_the_event(img: Path) -> None:
    blk, _ = open_debug(img, **{
        "set-state": [{"event": "read_aio", "state": 1, "new_state": 2}],
        "inject-error": [{"event": "read_aio", "state": 2, "errno": 28}],
    })
    blk.pread(0, 512)  # moves 1 -> 2, but the inject rule saw state 1
    with pytest.raises(OSError) as e:
        blk.pread(0, 512)
    assert e.value.errno == errno.ENOSPC
    blk.close()


def test_failed_request_is_not_forwarded_and_once_deletes(img: Path) -> None:
    blk, dbg = open_debug(img, **{"inject-error": [
        {"event": "write_aio", "iotype": "write", "once": True, "errno": 5}]})
    with pytest.raises(OSError):
        blk.pwrite(0, b"\x01" * 512)
    assert img.read_bytes()[:512] == bytes(512)
    blk.pwrite(0, b"\x01" * 512)
    assert img.read_bytes()[:512] == b"\x01" * 512
    assert dbg.rules() == []
    blk.close()


def test_sector_rule_matches_only_requests_covering_it(img: Path) -> None:
    blk, _ = open_debug(img, **{"inject-error": [
        {"event": "none", "sector": 8, "iotype": "read"}]})
    blk.pread(0, 4096)
    blk.pread(4608, 512)
    for off, n in ((4096, 512), (0, 8192), (4096 - 1, 2)):
        with pytest.raises(OSError):
            blk.pread(off, n)
    blk.flush()  # a sector rule never fails a flush
    blk.close()


def test_align_option_makes_the_chokepoint_pad(img: Path) -> None:
    blk, _ = open_debug(img, align=4096, **{"max-transfer": 65536})
    assert blk.limits.request_alignment == 4096
    assert blk.limits.max_transfer == 65536
    blk.pwrite(100, b"x" * 10)
    assert blk.pread(96, 16) == bytes(4) + b"x" * 10 + bytes(2)
    blk.close()


def test_parser_quirks_are_qemus() -> None:
    [s] = parse_config_text('[inject-error "id"]\n  event   =   "read_aio"\nsector = "0x10"\n')
    assert s.values == {"event": "read_aio", "sector": 16}
    with pytest.raises(ConfigError, match="expects a number"):
        parse_config_text('[inject-error]\nerrno = 5\n')  # unquoted: read as ""


def test_rules_from_file_and_options_combine(tmp_path: Path, img: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text('[inject-error]\nevent = "read_aio"\niotype = "read"\nonce = "on"\n')
    blk, dbg = open_debug(img, config=str(conf), **{"inject-error": [
        {"event": "write_aio", "iotype": "write", "once": True}]})
    assert {r.event for r in dbg.rules()} == {"read_aio", "write_aio"}
    for op in (lambda: blk.pread(0, 1), lambda: blk.pwrite(0, b"y")):
        with pytest.raises(OSError):
            op()
    blk.pread(0, 1)
    blk.close()


def test_breakpoint_holds_one_thread_while_others_run(img: Path) -> None:
    blk, dbg = open_debug(img)
    dbg.set_breakpoint("write_aio", "slow")
    t = threading.Thread(target=blk.pwrite, args=(0, b"\x07" * 4096))
    t.start()
    assert dbg.wait_break("slow", timeout=5)
    blk.pwrite(8192, b"\x08" * 4096)  # another writer is not held up
    assert dbg.is_suspended("slow")
    dbg.resume("slow")
    t.join(5)
    assert blk.pread(0, 4096) == b"\x07" * 4096
    blk.close()


@pytest.mark.parametrize("value", ["2147483648", "-1", "4096", "99999999999999999999999",
                                   "1" * 5000])
def test_errno_out_of_range_is_refused_at_open_not_at_the_first_request(img: Path,
                                                                         value: str) -> None:
    """QEMU injects 2147483648 truncated to 32 bits and -1 as success; the rig refuses both at
    open (it used to accept them and raise OverflowError from os.strerror at the first read)."""
    with pytest.raises(ConfigError, match="'errno'"):
        parse_config_text(f'[inject-error]\nevent = "read_aio"\nerrno = "{value}"\n')
    with pytest.raises(ConfigError, match="'errno'"):
        open_debug(img, **{"inject-error": [{"event": "read_aio", "errno": value}]})


def test_unicode_digit_rule_index_is_an_unknown_parameter(img: Path) -> None:
    with pytest.raises(ConfigError, match="Invalid parameter"):
        open_debug(img, **{"inject-error.².event": "read_aio"})


def test_suspend_lines_go_to_stderr_outside_rig_io(img: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """Under rig run/export (no qemu-io session) the breakpoint lines must not mix with the
    program's or the export's stdout."""
    blk = rig.open({"driver": "raw", "file": {"driver": "blkdebug", "image": {
        "driver": "file", "filename": str(img)}}})
    dbg = find_debug_node(blk.root)  # its own ``say``, as rig run/export leave it
    assert dbg is not None
    dbg.set_breakpoint("write_aio", "w")
    fut = blk.submit(blk.pwrite, 0, b"\x42" * 512)
    assert dbg.wait_break("w", timeout=5)
    assert dbg.resume("w")
    fut.result(timeout=5)
    blk.close()
    out, err = capfd.readouterr()
    assert out == ""
    assert "blkdebug: Suspended request 'w'" in err and "blkdebug: Resuming request 'w'" in err
