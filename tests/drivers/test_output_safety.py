"""Every path the rig writes that the user names (graph nodes, logs, bundles, repro files, images
it creates, plots, materialize targets) is refused when it names a mounted block device, through
every front end that takes it: the device's bytes stay the same and its filesystem stays clean.

Needs root, a loop device and mkfs.ext4: one 32 MiB ext4 loop device, mounted, is shared by the
whole module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rig.cli.main import main
from rig.core.outputs import check_output, make_output_dir, open_output
from rig.errors import ConfigError, RigError, UnsafeDeviceError

pytestmark = pytest.mark.rig_needs("root", "loop", "mkfs")

MiB = 1 << 20


def _digest(dev: str) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A mounted ext4 loop device; after the module, its bytes are unchanged and fsck is clean."""
    from rig.drivers.loop import scratch_loop

    mnt = tmp_path_factory.mktemp("mnt")
    with scratch_loop(32 * MiB) as dev:
        subprocess.run(["mkfs.ext4", "-q", "-F", dev.path], check=True, capture_output=True)
        res = subprocess.run(["mount", dev.path, str(mnt)], capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount ext4 here: {res.stderr.strip()}")
        try:
            (mnt / "data").write_bytes(b"precious" * 1000)
            # Frozen: the filesystem itself writes nothing more (no lazy init, no journal
            # commit), so any change to the device's bytes is the rig's.
            subprocess.run(["fsfreeze", "-f", str(mnt)], check=True)
            try:
                before = _digest(dev.path)
                yield dev.path
                assert _digest(dev.path) == before, "the mounted device was written"
            finally:
                subprocess.run(["fsfreeze", "-u", str(mnt)], check=False)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
        fsck = subprocess.run(["fsck.ext4", "-fn", dev.path], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr


@pytest.fixture
def unchanged(mounted: str) -> Iterator[str]:
    """The mounted device, checked byte for byte after each test."""
    before = _digest(mounted)
    yield mounted
    assert _digest(mounted) == before, "the mounted device was written"


def _refused(status: int, err: str, dev: str) -> None:
    assert status != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "refusing to write" in lines[0] and dev in lines[0], lines[0]


@pytest.fixture
def write_log(tmp_path: Path) -> Path:
    """A small write log recorded through the rig (for crash check and materialize)."""
    import rig

    log = tmp_path / "w.wlog"
    with rig.open({"driver": "recorder", "log": str(log),
                   "file": {"driver": "memory", "size": MiB}}) as blk:
        blk.pwrite(0, b"x" * 4096)
        blk.flush()
        blk.pwrite(4096, b"y" * 4096)
    return log


# ------------------------------------------------------------------------ command lines
def _io_graphs(dev: str, link: str) -> dict[str, list[str]]:
    mem = "file.driver=memory,file.size=1M"
    return {
        "faults-log": ["--image-opts", f"driver=faults,log={dev},{mem}"],
        "recorder-log": ["--image-opts", f"driver=recorder,log={dev},{mem}"],
        "symlink": ["--image-opts", f"driver=faults,log={link},{mem}"],
        "nested-recorder": ["--image-opts", f"driver=raw,file.driver=recorder,file.log={dev},"
                                            "file.file.driver=memory,file.file.size=1M"],
        "json-graph": ["json:" + json.dumps({"driver": "raw", "file": {
            "driver": "faults", "log": dev, "file": {"driver": "memory", "size": MiB}}})],
    }


@pytest.mark.parametrize("case", sorted(_io_graphs("d", "l")))
def test_rig_io_graph_logs(unchanged: str, tmp_path: Path, case: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "innocent.log"
    link.symlink_to(unchanged)
    argv = _io_graphs(unchanged, str(link))[case]
    status = main(["io", "-c", "write -P 1 0 4k", "-c", "flush", *argv])
    err = capsys.readouterr().err
    _refused(status, err, str(link) if case == "symlink" else unchanged)


def test_crash_record_log(unchanged: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["crash", "record", "--log", unchanged, "--size", "1M", "--", "true"])
    _refused(status, capsys.readouterr().err, unchanged)


def test_crash_check_bundle(unchanged: str, write_log: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["crash", "check", str(write_log), "--check", "false",
                   "--bundle", unchanged])
    _refused(status, capsys.readouterr().err, unchanged)


def test_crash_materialize_target(unchanged: str, write_log: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A materialize target is a graph node: refused by the device guard, as mounted."""
    status = main(["crash", "materialize", str(write_log), "cut 1", unchanged])
    err = capsys.readouterr().err
    assert status != 0 and "Traceback" not in err
    assert f"refusing to write to {unchanged}: it is mounted at" in err, err


def test_bench_plot(unchanged: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before minutes of measuring."""
    status = main(["bench", "throttle", "--quick", "--only", "iops-total", "--plot", unchanged])
    _refused(status, capsys.readouterr().err, unchanged)


# ------------------------------------------------------------------------ the device as a node
def _node_argvs(dev: str, link: str) -> dict[str, list[str]]:
    w = ["-c", "write -P 1 0 4k"]
    return {
        "path": ["io", *w, dev],
        "raw-path": ["io", "-f", "raw", *w, dev],
        "symlink": ["io", *w, link],
        "host_device-prefix": ["io", *w, f"host_device:{dev}"],
        "blkdebug-prefix": ["io", *w, f"blkdebug::{dev}"],
        "image-opts": ["io", "--image-opts", *w,
                       f"driver=raw,file.driver=host_device,file.filename={dev}"],
        "json": ["io", *w, "json:" + json.dumps(
            {"driver": "raw", "file": {"driver": "host_device", "filename": dev}})],
        "allowed": ["io", "--allow", dev, *w, dev],
        "run": ["run", dev, "--", "true"],
    }


@pytest.mark.parametrize("name", sorted(_node_argvs("d", "l")))
def test_device_as_a_node(unchanged: str, tmp_path: Path, name: str,
                          monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """Allowing a mounted device (--allow, RIG_ALLOW_DEVICES) does not make it writable."""
    link = tmp_path / "scratch-disk"
    link.symlink_to(unchanged)
    monkeypatch.setenv("RIG_ALLOW_DEVICES", unchanged)
    status = main(_node_argvs(unchanged, str(link))[name])
    err = capsys.readouterr().err
    assert status != 0 and "Traceback" not in err
    needle = "not a regular file" if name == "run" else "it is mounted at"
    # The error is one line (after qemu-io's own probing warning, where it prints one).
    errors = [line for line in err.splitlines() if line.startswith("rig")]
    assert len(errors) == 1 and needle in errors[0], err


def test_rig_export(unchanged: str) -> None:
    """In its own process: an export that wrongly started would serve until killed."""
    from tests.cli.helpers import RIG, run

    r = run([*RIG, "export", unchanged], timeout=30)
    assert r.rc != 0 and "Traceback" not in r.err
    assert "it is mounted at" in r.err and r.out == "", r.err


# ------------------------------------------------------------------------ library calls
LIBRARY: dict[str, Callable[[str], object]] = {}


def _library(fn: Callable[[str], object]) -> Callable[[str], object]:
    LIBRARY[fn.__name__] = fn
    return fn


@_library
def fault_log_save(dev: str) -> object:
    from rig.faults.log import FaultEventLog

    FaultEventLog(seed=1).save(dev)
    return None


@_library
def qcow2_create(dev: str) -> object:
    from rig.formats.qcow2 import create

    return create(dev, size=MiB)


@_library
def repro_bundle_dir(dev: str) -> object:
    from rig.testing.bundle import Bundle, write

    return write(Bundle(machine="m", size=MiB, backends=[], ops=[]), dev)


@_library
def repro_bundle_env(dev: str) -> object:
    from rig.testing.bundle import Bundle, write

    os.environ["RIG_REPRO_DIR"] = dev
    return write(Bundle(machine="m", size=MiB, backends=[], ops=[]))


@_library
def crash_bundle(dev: str) -> object:
    from rig.crash.bundle import RunSettings, write_bundle

    settings = RunSettings(check="true", torn=False, seed=0, samples=1, timeout=1.0)
    return write_bundle(dev, "/dev/null", settings, [])


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_outputs(unchanged: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RIG_REPRO_DIR", raising=False)
    with pytest.raises(UnsafeDeviceError, match="refusing to write") as exc:
        LIBRARY[name](unchanged)
    assert "\n" not in str(exc.value) and unchanged in str(exc.value)


# ------------------------------------------------------------------------ the opener itself
def test_character_devices_refused_but_null(tmp_path: Path) -> None:
    with pytest.raises(UnsafeDeviceError, match="it is a character device"):
        open_output("/dev/full", "the log", replace=True)
    with open_output("/dev/null", "the log", replace=True) as f:
        f.write("thrown away\n")


def test_files_replaced_only_where_the_option_says(tmp_path: Path) -> None:
    old = tmp_path / "old.log"
    old.write_text("old\n")
    with pytest.raises(ConfigError, match="already exists; remove it"):
        open_output(old, "--log", replace=False)
    assert old.read_text() == "old\n"
    with open_output(old, "--log", replace=True) as f:
        f.write("new\n")
    assert old.read_text() == "new\n"
    with pytest.raises(ConfigError, match="is a directory"):
        check_output(tmp_path, "--log", replace=True)
    with pytest.raises(ConfigError, match="is a file; name a directory"):
        make_output_dir(old, "--bundle", must_be_empty=False)
    with pytest.raises(ConfigError, match="not empty"):
        make_output_dir(tmp_path, "--bundle", must_be_empty=True)


def test_the_opened_descriptor_is_checked_too(unchanged: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A path that is a file when checked and a device when opened (a swapped symlink) is
    still refused: the descriptor is checked after open, before anything is written."""
    import rig.core.outputs as outputs

    link = tmp_path / "swap.log"
    real = outputs.check_output

    def check_then_swap(path: str | os.PathLike[str], option: str, *, replace: bool) -> None:
        real(path, option, replace=replace)
        link.symlink_to(unchanged)

    monkeypatch.setattr(outputs, "check_output", check_then_swap)
    with pytest.raises(UnsafeDeviceError, match="it is a block device"):
        outputs.open_output(link, "the log", replace=True)


def test_rig_errors_are_rig_errors() -> None:
    assert issubclass(UnsafeDeviceError, RigError)
