"""A lab host's side: the labgrid exporter's configuration, and a VM lab guest set up as a lab
host (its own sshd and labgrid exporter), so one machine can show a lab of several hosts.

A real lab host runs ``labgrid-exporter -c COORDINATOR -n HOSTNAME exporter.yaml`` as a
service, with one group per disk (:func:`exporter_config`), and an sshd the clients reach.
:func:`start_guest_host` does the same in a running :class:`~rig.drivers.vm.machine.Guest`
that has a :class:`~rig.drivers.vm.network.Network` forwarding a host port to its port 22:
the guest's sshd takes the given public key for root, and its exporter connects out to the
coordinator on the host (``10.0.2.2``, QEMU's user network). Everything runs inside the guest,
so it ends when the guest does.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rig.errors import RigError

if TYPE_CHECKING:
    from rig.drivers.vm.machine import Guest

_GUEST_DIR = "/run/blockrig-lab"


@dataclass(frozen=True)
class SshService:
    """A group's ``NetworkService``: where clients ssh to reach the host."""

    address: str
    username: str
    port: int = 22


def exporter_config(groups: Mapping[str, SshService]) -> str:
    """The exporter's YAML: one group per disk (its name is the second part of the place's
    match, ``HOST/GROUP/*``), each with the ``NetworkService`` of the host."""
    out = []
    for group, svc in groups.items():
        out += [f"{group}:", "  NetworkService:", f"    address: {_yaml(svc.address)}",
                f"    username: {_yaml(svc.username)}", f"    port: {int(svc.port)}"]
    return "\n".join(out) + "\n"


def _yaml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def guest_host_script(*, name: str, coordinator_port: int, groups: Mapping[str, SshService],
                      public_key: str, exporter: str) -> str:
    """Shell run in the guest: sshd (fresh host key; root, by key only, logs in with
    ``/bin/sh`` so the host's shell start-up files do not run), then the exporter, in the
    background; it returns once both have started."""
    q = shlex.quote
    d = _GUEST_DIR
    return "\n".join([
        "set -e",
        f"mkdir -p {d} /run/sshd && chmod 700 {d}",
        # root's login shell: sh (the guest's /etc is a tmpfs overlay; the host's is untouched)
        "sed -i 's#^root:\\(.*\\):[^:]*$#root:\\1:/bin/sh#' /etc/passwd",
        f"ssh-keygen -q -t ed25519 -N '' -f {d}/host_key",
        f"printf '%s\\n' {q(public_key)} > {d}/authorized_keys",
        f"/usr/sbin/sshd -f /dev/null -h {d}/host_key -o AuthorizedKeysFile={d}/authorized_keys"
        f" -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o StrictModes=no"
        f" -o PidFile={d}/sshd.pid -E {d}/sshd.log",
        f"printf '%s' {q(exporter_config(groups))} > {d}/exporter.yaml",
        f"setsid {q(exporter)} -c 10.0.2.2:{coordinator_port} -n {q(name)} {d}/exporter.yaml"
        f" </dev/null >{d}/exporter.log 2>&1 &",
        f"echo $! > {d}/exporter.pid",
    ]) + "\n"


def start_guest_host(guest: Guest, *, name: str, coordinator_port: int,
                     groups: Mapping[str, SshService], public_key: str,
                     timeout: float = 120.0) -> None:
    """Start sshd and the exporter in ``guest`` (see :func:`guest_host_script`)."""
    exporter = str(_beside_python("labgrid-exporter"))
    script = guest_host_script(name=name, coordinator_port=coordinator_port, groups=groups,
                               public_key=public_key, exporter=exporter)
    r = guest.run(script, timeout=timeout)
    if r.status != 0:
        raise RigError(f"lab host {name}: setup failed (status {r.status}): "
                       f"{(r.stderr.strip() or r.message).splitlines()[-1:] or ['no message']}")


def guest_log(guest: Guest, what: str = "exporter") -> str:
    """The guest's exporter (or sshd) log, for failure messages."""
    return guest.run(f"cat {_GUEST_DIR}/{what}.log 2>&1 | tail -20", timeout=30).stdout


def _beside_python(tool: str) -> str:
    from pathlib import Path

    path = Path(sys.executable).parent / tool
    if not path.exists():
        raise RigError(f"{tool} not found beside {sys.executable}: pip install 'blockrig[lab]'")
    return str(path)
