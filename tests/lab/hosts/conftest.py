"""Two lab hosts on one machine: a labgrid coordinator here, and two VM lab guests, each with
its own kernel, SCSI disks, sshd and labgrid exporter (connected out to the coordinator through
QEMU's user network). Guest ``hosta`` offers its disk 0 as place ``hosta-disk0``; guest ``hostb``
has two disks and offers only disk 1 as ``hostb-disk1``, so each place's WWN is its own and a
host must pick its disk by WWN. One test uses it (``test_two_hosts.py``), so one xdist worker
builds it. Everything it starts dies with this process: the coordinator and QEMU
through ``PR_SET_PDEATHSIG``, and the exporters and sshds inside the guests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rig.drivers.lab.labhost import SshService, guest_log, start_guest_host
from rig.drivers.lab.places import Coordinator
from rig.drivers.vm.machine import Guest
from rig.drivers.vm.network import Forward, Network, free_port
from rig.drivers.vm.process import kill_group, spawn
from rig.drivers.vm.qemu import disk_wwn
from rig.errors import RigError
from tests.vm.conftest import booted

BIN = Path(sys.executable).parent
REGISTER_TIMEOUT_S = 240.0


@dataclass
class Host:
    name: str
    guest: Guest
    ssh_port: int
    place: str
    wwn: str


@dataclass
class World:
    coordinator: Coordinator
    hosts: list[Host]
    key: Path
    known_hosts: Path
    directory: Path

    def client_args(self) -> list[str]:
        # The cases need neither Hypothesis nor xdist: their plugins' imports cost a TCG
        # guest seconds.
        return [f"--rig-lab-coordinator={self.coordinator.address}",
                f"--rig-lab-ssh-key={self.key}", f"--rig-lab-known-hosts={self.known_hosts}",
                "--rig-lab-remote-arg=-pno:hypothesispytest", "--rig-lab-remote-arg=-pno:xdist"]


def missing() -> str | None:
    """Why the two-host world cannot be built here (None: it can)."""
    for tool, fix in (("labgrid-coordinator", "pip install -e '.[lab]'"),):
        if not (BIN / tool).exists():
            return f"{tool} not found: {fix}"
    for tool in ("sshd", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} not found: apt-get install openssh-server openssh-client"
    return None


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    why = missing()
    if why:
        if os.environ.get("RIG_REQUIRE_VM"):
            pytest.fail(f"the two-host lab cannot run: {why}", pytrace=False)
        pytest.skip(why)
    d = tmp_path_factory.mktemp("labhosts")
    key = d / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    cport = free_port()
    # The coordinator keeps its places in places.yaml in its working directory.
    coord = spawn([str(BIN / "labgrid-coordinator"), "-l", f"127.0.0.1:{cport}"],
                  d / "coordinator.log", cwd=d)
    guests: list[Guest] = []
    try:
        specs = [("hosta", ["16M"], 0), ("hostb", ["16M", "16M"], 1)]
        hosts = []
        for name, disks, index in specs:
            port = free_port()
            guest = booted(Guest(disks=disks, smp=1, network=Network([Forward(port, 22)],
                                                                      hostname=name)))
            guests.append(guest)
            _mark(f"{name} booted in {guest.boot_seconds or 0:.1f} s")
            start_guest_host(guest, name=name, coordinator_port=cport,
                             groups={f"disk{index}": SshService("127.0.0.1", "root", port)},
                             public_key=(d / "id.pub").read_text().strip())
            hosts.append(Host(name, guest, port, f"{name}-disk{index}", disk_wwn(index)))
        coordinator = Coordinator(f"127.0.0.1:{cport}")
        _mark("hosts started")
        _wait_registered(coordinator, hosts)
        _mark("exporters registered")
        for h in hosts:
            index = h.place.removeprefix(f"{h.name}-disk")
            coordinator.create(h.place, f"{h.name}/disk{index}/*",
                               {"wwn": h.wwn, "serial": f"rig-disk{index}", "host": h.name,
                                "destructive": "true"})
        yield World(coordinator, hosts, key, d / "known_hosts", d)
    finally:
        for g in guests:
            g.close()
        kill_group(coord)


def _mark(what: str) -> None:
    with open(os.environ.get("RIG_LAB_TIMES", os.devnull), "a") as f:
        f.write(f"{time.time():.1f} {what}\n")


def _wait_registered(coordinator: Coordinator, hosts: list[Host]) -> None:
    """Until every guest's exporter has announced its NetworkService."""
    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    want = {h.name for h in hosts}
    while True:
        listed = subprocess.run([str(BIN / "labgrid-client"), "-x", coordinator.address,
                                 "resources"], capture_output=True, text=True, check=False)
        have = {line.split("/", 1)[0] for line in listed.stdout.splitlines() if "/" in line}
        if want <= have:
            return
        if time.monotonic() > deadline:
            logs = "; ".join(f"{h.name}: {guest_log(h.guest)[-500:]}" for h in hosts
                             if h.name not in have)
            raise RigError(f"exporters {sorted(want - have)} did not register within "
                           f"{REGISTER_TIMEOUT_S:g} s: {logs}")
        time.sleep(1.0)
