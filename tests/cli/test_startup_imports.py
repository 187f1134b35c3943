"""Start-up: a command imports what it uses and nothing else (issue 19).

``rig io`` starts hundreds of times in qemu-iotests and in this suite; every module it imports
costs each start. These tests run the real command in a fresh interpreter and check which
modules it loaded (names, never timings): the heavy rooms (qcow2, exports, SCSI, the VM lab,
the fault engines...) and the costly standard modules (dataclasses with inspect, ctypes,
concurrent.futures with logging, importlib.metadata, json, tomllib, argparse) stay out of a
plain read of a raw file, and come in when they are used.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

#: Runs ``rig.cli.main.main(sys.argv[1:])`` and writes the exit status and the loaded modules
#: (a Python literal: the probe itself must not import json) as the last line of stderr.
_PROBE = """
import sys
from rig.cli.main import main
try:
    status = main(sys.argv[1:])
except SystemExit as e:
    status = e.code
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + repr([status, sorted(sys.modules)]) + "\\n")
"""

#: Packages and modules a raw read has no use for.
NOT_FOR_A_RAW_READ = (
    "rig.formats.qcow2", "rig.drivers.export", "rig.drivers.sg", "rig.drivers.vm",
    "rig.drivers.lab", "rig.drivers.kernel", "rig.drivers.ffi", "rig.drivers.nodes.host_device",
    "rig.drivers.nodes.host_cdrom", "rig.drivers.nodes.removable_loop_node", "rig.scsi",
    "rig.faults", "rig.crash", "rig.jobs", "rig.throttle", "rig.testing", "rig.fixtures",
    "rig.filters.blkdebug", "rig.cli.crash_cmd", "rig.cli.vm_cmd", "rig.cli.export_cmd",
    "rig.cli.sg_cmd", "rig.cli.devices_cmd", "hypothesis", "pytest", "mfusepy",
    "dataclasses", "inspect", "ctypes", "concurrent.futures", "logging", "importlib.metadata",
    "json", "tomllib", "subprocess", "argparse", "rig.cli.parser",
)


#: Standard modules a one-command ``rig io`` does without (each costs every start: typing with
#: warnings ~3 ms, signal's enums ~1 ms, ...). Checked against what a bare interpreter of the
#: same environment loads, since a ``.pth`` (an editable install's finder) may load some first.
NOT_AT_START_UP = (
    "typing", "signal", "queue", "heapq", "weakref", "importlib", "warnings", "math",
    "dataclasses", "inspect", "ctypes", "concurrent.futures", "logging", "json", "tomllib",
    "subprocess", "argparse", "tempfile", "shutil", "pathlib", "struct", "select", "selectors",
)


def modules_after(argv: list[str]) -> tuple[int, set[str]]:
    """The exit status of ``rig ARGV`` and every module loaded when it ended."""
    p = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True,
                       timeout=120)
    line = p.stderr.rstrip().splitlines()[-1]
    assert line.startswith("MODULES "), p.stderr
    status, names = ast.literal_eval(line[len("MODULES "):])
    return status, set(names)


def loaded(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names for p in prefixes if n == p or n.startswith(p + "."))


def test_a_raw_read_imports_only_the_read_path(tmp_path: Path) -> None:
    image = tmp_path / "raw.img"
    image.write_bytes(bytes(1 << 20))
    status, names = modules_after(["io", "-f", "raw", "-c", "read 0 4k", str(image)])
    assert status == 0
    assert loaded(names, NOT_FOR_A_RAW_READ) == []
    # What it does use was loaded on demand: the raw format and the file driver.
    assert {"rig.formats.raw", "rig.drivers.nodes.file", "rig.core.backend"} <= names


def bare_modules() -> set[str]:
    """The modules a bare interpreter of this environment has loaded before any code runs."""
    out = subprocess.run([sys.executable, "-c", "import sys; print(repr(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return set(ast.literal_eval(out))


def test_a_one_command_run_leaves_out_costly_standard_modules(tmp_path: Path) -> None:
    """What bench/startup.py times: one read, the format probed (issue 19)."""
    image = tmp_path / "raw.img"
    image.write_bytes(bytes(1 << 20))
    status, names = modules_after(["io", "-c", "read 0 4k", str(image)])
    assert status == 0
    assert loaded(names - bare_modules(), NOT_AT_START_UP) == []
    assert loaded(names, NOT_FOR_A_RAW_READ) == []


_EXIT_PROBE = """
import sys, threading, atexit
from rig.cli.main import exit_now
if sys.argv[1] == "thread":
    threading.Thread(target=threading.Event().wait, args=(0.5,)).start()
elif sys.argv[1] == "atexit":
    atexit.register(print, "atexit ran")
print("flushed", end="")
exit_now(3)
print(" returned")
"""


def test_exit_now_skips_teardown_only_when_it_has_nothing_to_do() -> None:
    """rig io ends with os._exit once its output is flushed (the interpreter's teardown cost a
    one-command run ~6 ms), but not while a thread runs or an atexit handler waits."""
    def probe(case: str) -> tuple[int, str]:
        p = subprocess.run([sys.executable, "-c", _EXIT_PROBE, case], capture_output=True,
                           text=True, timeout=60)
        return p.returncode, p.stdout

    assert probe("none") == (3, "flushed")  # stdout is a pipe: block-buffered, yet flushed
    assert probe("thread") == (0, "flushed returned\n")
    assert probe("atexit") == (0, "flushed returned\natexit ran\n")


def test_what_a_graph_uses_is_loaded_when_it_is_used(tmp_path: Path) -> None:
    """The lazy imports are not lost features: a qcow2 image brings the qcow2 driver, a
    blkdebug graph the blkdebug filter, an aio command concurrent.futures, a JSON filename
    the JSON parser."""
    image = tmp_path / "q.qcow2"
    made = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1M"],
                          capture_output=True)
    if made.returncode == 0:
        status, names = modules_after(["io", "-c", "read 0 4k", str(image)])
        assert status == 0
        assert "rig.formats.qcow2.driver" in names
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(1 << 20))
    spec = json.dumps({"driver": "raw", "file": {"driver": "blkdebug",
                                                 "image": {"driver": "file",
                                                           "filename": str(raw)}}})
    status, names = modules_after(["io", "-c", "aio_read 0 4k", "-c", "aio_flush",
                                   "json:" + spec])
    assert status == 0
    assert {"rig.filters.blkdebug", "concurrent.futures", "json"} <= names


def test_help_and_other_commands_do_not_import_every_command() -> None:
    status, names = modules_after(["--help"])
    assert status == 0
    assert [n for n in names if n.startswith("rig.cli.") and n.endswith("_cmd")] == []
    assert loaded(names, ("rig.core.backend", "rig.drivers.nodes", "rig.qemuio")) == []
    status, names = modules_after(["crash", "--help"])
    assert status == 0
    assert "rig.cli.crash_cmd" in names
    assert loaded(names, ("rig.cli.io_cmd", "rig.cli.vm_cmd", "rig.drivers.vm")) == []


def test_the_registry_imports_one_driver_per_lookup() -> None:
    code = ("import sys; from rig.core.registry import driver_class; "
            "print(driver_class('file').__module__, driver_class('raw').__module__, "
            "'rig.drivers.sg.node' in sys.modules, 'rig.formats.qcow2.driver' in sys.modules, "
            "'importlib.metadata' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["rig.drivers.nodes.file", "rig.formats.raw", "False", "False", "False"]
