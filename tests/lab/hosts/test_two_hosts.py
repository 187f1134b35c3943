"""Two lab hosts, reserved through labgrid (``conftest.py`` builds them): a client pytest here
runs lab tests on each disk's host, chosen by WWN, and gets their pass, fail and skip back; a
second client is refused a held place; a client killed with SIGKILL leaves no place acquired
and no process behind, here or on the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from rig.drivers.identity import norm_wwn
from rig.drivers.lab.places import Hold
from rig.fixtures import lab_remote
from tests.lab.hosts.conftest import World

pytestmark = [pytest.mark.rig_needs("vm"), pytest.mark.timeout(900)]

CASES = "tests/lab/hosts/remote_cases/case_disk.py"
ROOT = Path(__file__).resolve().parents[3]


def test_two_hosts(world: World, tmp_path: Path) -> None:
    """One test, so that one xdist worker builds the two hosts (each boot and exporter start
    costs tens of seconds under TCG; pytest-xdist's loadgroup does not group with pytest 9
    here). Each check says what failed."""
    check_lab_tests_run_on_the_disks_hosts_and_report_back(world, tmp_path)
    check_a_held_place_is_refused_to_a_second_client(world)
    check_a_place_that_does_not_exist_is_one_line(world)
    check_a_killed_client_leaves_no_place_held_and_no_process(world)


def client(world: World, *args: str, junit: Path | None = None,
           **kw: object) -> subprocess.Popen[str]:
    """A client pytest run (a process of its own, as a CI job would be)."""
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
            "-p", "no:randomly", "-q", "-rA", *world.client_args(), *args]
    if junit is not None:
        argv.append(f"--junitxml={junit}")
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)  # type: ignore[call-overload]


def outcomes(junit: Path) -> dict[str, tuple[str, str, dict[str, list[str]]]]:
    """{test name: (outcome, message, {property: [values]})} from a JUnit XML file."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        props: dict[str, list[str]] = {}
        for p in case.iter("property"):
            props.setdefault(p.get("name", ""), []).append(p.get("value", ""))
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "failed" if tag != "skipped" else "skipped"
                message = (el.get("message") or "") + (el.text or "")
        out[case.get("name", "")] = (outcome, message, props)
    return out


def check_lab_tests_run_on_the_disks_hosts_and_report_back(world: World, tmp_path: Path) -> None:
    a, b = world.hosts
    junit = tmp_path / "junit.xml"
    p = client(world, f"--rig-lab-place=wwn={a.wwn}", f"--rig-lab-place=wwn={b.wwn}",
               "--rig-allow-destructive", "-k", "not sleeps", CASES, junit=junit)
    out, _ = p.communicate(timeout=500)
    assert p.returncode == 1, out  # one test fails on purpose
    got = outcomes(junit)
    outcome, _, props = got["test_writes_the_disk_it_was_given"]
    assert outcome == "passed", out
    places = props["rig_lab_place"]
    assert sorted(places) == [f"{a.place} {a.name} passed", f"{b.place} {b.name} passed"]
    # Each host wrote the disk whose WWN its place carries (hostb: its second disk).
    assert sorted(props["lab_host"]) == [f"hosta (on hosta (place {a.place}))",
                                         f"hostb (on hostb (place {b.place}))"]
    disks = {v.split("(on ")[1]: norm_wwn(v.split()[1]) for v in props["lab_disk"]}
    assert disks == {f"hosta (place {a.place}))": norm_wwn(a.wwn),
                     f"hostb (place {b.place}))": norm_wwn(b.wwn)}, props["lab_disk"]
    outcome, message, _ = got["test_fails_on_purpose"]
    assert outcome == "failed"
    assert "deliberate failure on hosta" in message and "deliberate failure on hostb" in message
    outcome, message, _ = got["test_skips_on_purpose"]
    assert outcome == "skipped"
    assert "deliberate skip on hosta" in message and "deliberate skip on hostb" in message
    # Both places are free again.
    assert {p.name: p.acquired for p in world.coordinator.places()} == {
        a.place: "", b.place: ""}


def check_a_held_place_is_refused_to_a_second_client(world: World) -> None:
    a = world.hosts[0]
    with Hold(world.coordinator, [a.place]):
        holder = world.coordinator.who
        p = client(world, f"--rig-lab-place={a.place}", "--rig-lease-timeout=0",
                   "-k", "writes", CASES)
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
        assert f"no lab place: place {a.place} is held by {holder} (waited 0 s)" in out, out
        assert "1 skipped" in out
        assert "Traceback" not in out
        assert [p.acquired for p in world.coordinator.places() if p.name == a.place] == [holder]
    assert [p.acquired for p in world.coordinator.places() if p.name == a.place] == [""]


def check_a_place_that_does_not_exist_is_one_line(world: World) -> None:
    p = client(world, "--rig-lab-place=wwn=0x5000c500deadbeef", CASES)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == pytest.ExitCode.USAGE_ERROR, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "no place" in lines[0] and "wwn=0x5000c500deadbeef" in lines[0]


def check_a_killed_client_leaves_no_place_held_and_no_process(world: World) -> None:
    b = world.hosts[1]
    p = client(world, f"--rig-lab-place={b.place}", "-k", "sleeps", CASES,
               start_new_session=True)
    try:
        # Wait until the place is held and the tests run on the host.
        deadline = time.monotonic() + 300
        while True:
            held = [x.acquired for x in world.coordinator.places() if x.name == b.place]
            # The host's pytest has started (its argv names the cases).
            started = b.guest.run("pgrep -f 'case_disk.py' || true", timeout=60).stdout.split()
            if held != [""] and started:
                break
            assert p.poll() is None, p.communicate()[0]
            assert time.monotonic() < deadline, "the client never got to the host"
            time.sleep(1)
        pid = p.pid
        os.kill(pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    deadline = time.monotonic() + 60
    while True:
        held = [x.acquired for x in world.coordinator.places() if x.name == b.place]
        left_here = _processes_of(pid, b.ssh_port)
        left_there = b.guest.run("pgrep -f 'case_disk.py' || true", timeout=60).stdout.split()
        if held == [""] and not left_here and not left_there:
            break
        assert time.monotonic() < deadline, (held, left_here, left_there)
        time.sleep(1)
    # Its run directory is removed by the next run (it cannot remove it itself).
    leftover = list(Path(tempfile.gettempdir()).glob(f"blockrig-lab-run-{pid}-*"))
    assert leftover
    lab_remote._reap_stale()
    assert not any(d.exists() for d in leftover)


def _processes_of(pid: int, port: int) -> list[str]:
    """Processes here that belong to the killed client: its children (ssh to the host's port,
    labgrid-client) or anything still naming the host's port."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid or (f"-p {port} " in cmd and cmd.startswith("ssh")):
            found.append(f"{entry.name}: {cmd}")
    return found
