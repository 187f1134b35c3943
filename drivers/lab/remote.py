"""Run pytest on a lab host over ssh, and bring each test's outcome back.

The host is reached as its place's ``NetworkService`` says (address, port, username). One ssh
session per place and run: it writes the inventory that names the place's disk (by the
identity in the place's tags) to a temporary directory on the host, runs
``PYTHON -m pytest --rig-lab INVENTORY --rig-vm-report REPORT NODEIDS`` in the project
directory there, then prints the report (one JSON object per test, the format the VM lab's
guest writes: :mod:`rig.fixtures.vm_report`) after a marker line on stdout. pytest's own output
goes to stderr, which the caller keeps as the log.

Nothing is left on the host: the ssh client dies with this process (``PR_SET_PDEATHSIG``, as
QEMU does), and on the host the tests run in a process group that is SIGKILLed when the ssh
session's stdin closes (the client died, or was killed) before they end.
"""

from __future__ import annotations

import base64
import contextlib
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rig.drivers.lab.places import SshTarget
from rig.drivers.vm.process import spawn

#: The line after which the host prints the report.
REPORT_MARK = "----- blockrig lab report -----"


@dataclass(frozen=True)
class RemoteRun:
    """What to run on one host."""

    target: SshTarget
    python: str  # the interpreter on the host
    directory: str  # the project checkout on the host
    nodeids: Sequence[str]
    inventory: str  # TOML text
    pytest_args: Sequence[str] = ()
    ssh_key: str | None = None
    known_hosts: str | None = None  # None: the user's; a file: accept a new host key into it


def ssh_argv(target: SshTarget, key: str | None, known_hosts: str | None) -> list[str]:
    argv = ["ssh", "-p", str(target.port), "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=15"]
    if key:
        argv += ["-i", key, "-o", "IdentitiesOnly=yes"]
    if known_hosts:
        argv += ["-o", f"UserKnownHostsFile={known_hosts}",
                 "-o", "StrictHostKeyChecking=accept-new"]
    return [*argv, f"{target.username}@{target.address}"]


def remote_script(run: RemoteRun) -> str:
    """The shell the host runs (through the user's login shell)."""
    q = shlex.quote
    inventory = base64.b64encode(run.inventory.encode()).decode()
    pytest = (shlex.join([run.python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"])
              + ' --rig-lab "$d/lab.toml" --rig-vm-report "$d/report.jsonl" '
              + shlex.join([*run.pytest_args, *run.nodeids]))
    return "\n".join([
        "exec 3<&0",
        "trap '' PIPE",  # a client gone: the report's echo fails, the EXIT trap still runs
        'd=$(mktemp -d /tmp/blockrig-lab.XXXXXX) || exit 125',
        'trap \'rm -rf "$d"\' EXIT',
        f'echo {inventory} | base64 -d > "$d/lab.toml" || exit 125',
        f"cd {q(run.directory)} || exit 125",
        # The tests in a session of their own (setsid: not a group leader here, so it does not
        # fork and $! is the group), SIGKILLed if our stdin closes first (the client is gone).
        # Their stdout goes to our stderr: stdout carries only the report.
        f"setsid {pytest} </dev/null 3<&- 1>&2 &",
        "p=$!",
        # (No "--" for kill: dash's kill takes "-PID" as a group without it, and not with it.)
        '{ cat >/dev/null; kill -9 "-$p"; } <&3 >/dev/null 2>&1 &',
        "exec 3<&-",
        'wait "$p"; rc=$?',
        f"echo {q(REPORT_MARK)}",
        'cat "$d/report.jsonl" 2>/dev/null',
        "exit $rc",
    ]) + "\n"


@dataclass(frozen=True)
class RemoteResult:
    status: int
    report: str  # JSON lines
    log: str  # pytest's output and ssh's errors


def start(run: RemoteRun, log: Path) -> subprocess.Popen[bytes]:
    """Start the run; its stdout (the report after :data:`REPORT_MARK`) and stderr go to
    ``log``. Keep the returned process's stdin open until it ends (:func:`finish`)."""
    argv = [*ssh_argv(run.target, run.ssh_key, run.known_hosts), remote_script(run)]
    return spawn(argv, log, stdin=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], log: Path, timeout: float | None) -> RemoteResult:
    """Wait for a run from :func:`start` and split its output."""
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        from rig.drivers.vm.process import kill_group

        kill_group(proc)
        status = 125
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    text = log.read_text(errors="replace")
    before, mark, after = text.partition(REPORT_MARK + "\n")
    if not mark:
        return RemoteResult(status if status != 0 else 125, "", text)
    report = "".join(line + "\n" for line in after.splitlines() if line.startswith("{"))
    rest = "".join(line + "\n" for line in after.splitlines() if not line.startswith("{"))
    return RemoteResult(status, report, before + rest)


def inventory_text(name: str, identity: Mapping[str, str], destructive: bool) -> str:
    """The host's inventory: one disk, named after its place, matched by its identity."""
    from rig.drivers.lab.inventory import DISK_KEYS

    lines = ['lease_dir = "/tmp/blockrig-lab-leases"', "", "[[disk]]", f"name = {_toml(name)}"]
    lines += [f"{k} = {_toml(v)}" for k, v in identity.items() if k in DISK_KEYS]
    lines.append(f"destructive = {'true' if destructive else 'false'}")
    return "\n".join(lines) + "\n"


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
