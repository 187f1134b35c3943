"""The labgrid client side without a lab: selectors, addresses, labgrid's error lines, the
inventory and the script a host runs, the guest NIC's QEMU arguments, and the one-line errors a
client gets for a coordinator that is not there (a real ``labgrid-client`` and a real refused
connection, no mock)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.drivers.lab import remote
from rig.drivers.lab.labhost import SshService, exporter_config
from rig.drivers.lab.places import (
    Coordinator,
    CoordinatorError,
    Place,
    PlaceError,
    Resource,
    SshTarget,
    error_line,
    parse_address,
    parse_selector,
)
from rig.drivers.vm.network import Forward, Network, free_port
from rig.errors import ConfigError, RigError
from tests.fuzzing import fuzz, one_line

HAVE_LABGRID = shutil.which("labgrid-client", path=str(Path(sys.executable).parent)) is not None
needs_labgrid = pytest.mark.skipif(not HAVE_LABGRID,
                                   reason="labgrid is not installed: pip install -e '.[lab]'")


def test_a_selector_is_a_name_or_tags() -> None:
    assert parse_selector("rack1-sdb") == "rack1-sdb"
    assert parse_selector(" wwn=0x5000c500a1b2c3d4 , serial=Z1 ") == {
        "wwn": "0x5000c500a1b2c3d4", "serial": "Z1"}
    for bad in ("", "a b", "wwn=", "=x", "wwn=0x1,", "wwn=a b"):
        with pytest.raises(ConfigError):
            parse_selector(bad)


def test_an_address_is_host_and_port() -> None:
    assert parse_address("127.0.0.1:20408") == "127.0.0.1:20408"
    assert parse_address("lab.example:1") == "lab.example:1"
    for bad in ("", "host", "host:", ":20408", "host:0", "host:70000", "a b:1"):
        with pytest.raises(ConfigError):
            parse_address(bad)


@given(st.text(max_size=80))
@fuzz
def test_garbage_selectors_and_addresses_are_one_line_errors(text: str) -> None:
    for parse in (parse_selector, parse_address):
        try:
            parse(text)
        except RigError as e:
            one_line(e)


@given(st.text(max_size=400))
@fuzz
def test_any_labgrid_output_gives_one_line(text: str) -> None:
    line = error_line(text)
    assert line and "\n" not in line


def test_labgrids_refusal_names_the_holder(tmp_path: Path) -> None:
    """A fake labgrid-client (labelled so) prints labgrid 26's refusal text; the error names
    the holder. The real refusal is in test_two_hosts.py."""
    from rig.drivers.lab import places

    err = ("labgrid-client: Error: Place d1 is already acquired by vm/root.rig7. To work "
           "simultaneously, root.rig7 can execute 'labgrid-client -p d1 allow h/u' on vm.")
    assert places._HOLDER.search(err) is not None
    assert places._HOLDER.search(err).group(1) == "vm/root.rig7"  # type: ignore[union-attr]


def test_labgrids_error_line_is_found() -> None:
    err = ("ERROR root: something\nlabgrid-client: Error: place pattern nope matches nothing\n")
    assert error_line(err) == "place pattern nope matches nothing"


def test_a_place_matches_by_identity_in_any_spelling() -> None:
    svc = Resource("hosta/disk0/NetworkService/NetworkService", "NetworkService", True, "",
                   {"address": "127.0.0.1", "port": 2222, "username": "root"})
    p = Place("hosta-disk0", {"wwn": "0x5000c500a1b2c3d4", "serial": "Z1", "x": "y"}, "",
              (svc,))
    assert p.matches({"wwn": "naa.5000C500A1B2C3D4"})
    assert p.matches({"serial": " z1 ", "x": "y"})
    assert not p.matches({"wwn": "0x5000c500a1b2c3d5"})
    assert p.identity() == {"wwn": "0x5000c500a1b2c3d4", "serial": "Z1"}
    assert p.ssh() == SshTarget("hosta", "127.0.0.1", 2222, "root")
    with pytest.raises(PlaceError, match="no NetworkService"):
        Place("bare", {}, "").ssh()


def test_the_hosts_inventory_names_the_disk_by_identity() -> None:
    text = remote.inventory_text('a"b', {"wwn": "0x5000c500a1b2c3d4", "nonsense": "x"},
                                 destructive=True)
    data = tomllib.loads(text)
    assert data["disk"] == [{"name": 'a"b', "wwn": "0x5000c500a1b2c3d4", "destructive": True}]


def test_the_host_script_runs_pytest_in_its_own_group_and_prints_the_report(
        tmp_path: Path) -> None:
    """The script, run by a local sh as ssh would run it: the report comes after the mark."""
    (tmp_path / "test_x.py").write_text("def test_ok():\n    pass\n")
    run = remote.RemoteRun(SshTarget("h", "127.0.0.1", 22, "root"), sys.executable,
                           str(tmp_path), ["test_x.py"],
                           remote.inventory_text("d", {"serial": "x"}, False),
                           ["-p", "no:randomly"])
    r, w = os.pipe()  # stdin stays open while it runs, as the ssh session's does
    try:
        p = subprocess.run(["sh", "-c", remote.remote_script(run)], capture_output=True,
                           text=True, stdin=r, timeout=120)
    finally:
        os.close(r)
        os.close(w)
    out = p.stdout.split(remote.REPORT_MARK + "\n")
    assert p.returncode == 0, p.stderr
    assert '"outcome": "passed"' in out[1]


def test_the_host_script_kills_the_tests_when_the_client_goes(tmp_path: Path) -> None:
    """Its stdin closing (the ssh session of a dead client) SIGKILLs the tests' session."""
    (tmp_path / "test_s.py").write_text("import time\ndef test_s():\n    time.sleep(300)\n")
    run = remote.RemoteRun(SshTarget("h", "127.0.0.1", 22, "root"), sys.executable,
                           str(tmp_path), ["test_s.py"],
                           remote.inventory_text("d", {"serial": "x"}, False),
                           ["-p", "no:randomly"])
    p = subprocess.Popen(["sh", "-c", remote.remote_script(run)], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _running(tmp_path / "test_s.py"):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.2)
        assert p.stdin is not None
        p.stdin.close()
        assert p.wait(timeout=60) != 0
        deadline = time.monotonic() + 30
        while _running(tmp_path / "test_s.py"):
            assert time.monotonic() < deadline, "the tests outlived their client"
            time.sleep(0.2)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _running(path: Path) -> bool:
    """A pytest process whose argv names ``path``'s file (and is not a shell)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pytest" in argv and path.name.encode() in argv:
            return True
    return False


def test_exporter_config_has_one_group_per_disk() -> None:
    text = exporter_config({"sdb": SshService("10.0.0.5", "lab", 2200)})
    assert "sdb:\n  NetworkService:\n" in text and "port: 2200" in text


def test_guest_network_arguments() -> None:
    net = Network([Forward(2222, 22)], hostname="hosta")
    assert net.qemu_args() == ["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22",
                               "-device", "virtio-net-pci,netdev=net0"]
    assert any("10.0.2.2" in line for line in net.boot_lines())
    with pytest.raises(ConfigError):
        Forward(0, 22)
    with pytest.raises(ConfigError):
        Network(hostname="-bad name")


@needs_labgrid
def test_no_coordinator_is_one_line() -> None:
    c = Coordinator(f"127.0.0.1:{free_port()}")
    with pytest.raises(CoordinatorError) as e:
        c.places()
    one_line(e.value)
    assert "unavailable" in str(e.value) or "connect" in str(e.value)


@needs_labgrid
def test_pytest_with_no_coordinator_says_so_in_one_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(rig_lab_disk):\n    pass\n")
    result = pytester.runpytest_subprocess(
        f"--rig-lab-coordinator=127.0.0.1:{free_port()}", "--rig-lab-place=wwn=0x5000c500a1b2c3d4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1 and "coordinator" in errors[0] and "unavailable" in errors[0], errors
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_pytest_without_coordinator_is_unchanged(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(rig_lab_disk):\n    pass\n")
    result = pytester.runpytest("--rig-lab-place=x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
