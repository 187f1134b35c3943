"""A reproducible bundle of ``rig crash check``'s failures: a directory that holds everything
needed to see each failure again, on any machine with the rig.

::

    BUNDLE/
      write.log        a copy of the write log
      failures.json    the run's settings and each failing state (shrunk, when it was)
      repro.sh         re-runs the checker on each failing state: rig crash check --state ...
      outputs/N.txt    what the checker printed on failure N (its tail)
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Literal, overload

from rig.core.outputs import make_output_dir, open_output
from rig.crash.check import Outcome

LOG_NAME = "write.log"


@dataclass(frozen=True)
class Failure:
    """A failing state, and the smaller failing state shrinking found (if it ran)."""

    outcome: Outcome
    shrunk: Outcome | None = None
    dropped: tuple[str, ...] = ()
    """The shrunk state's dropped units, as text (``#7`` or ``#7 sector 2``)."""
    shrink_calls: int = 0
    minimal: bool = False

    @property
    def smallest(self) -> Outcome:
        return self.shrunk if self.shrunk is not None else self.outcome


@dataclass(frozen=True)
class RunSettings:
    """What ``rig crash check`` was told: enough to enumerate the same states again."""

    check: str
    torn: bool
    seed: int
    samples: int
    timeout: float
    max_exhaustive: int = 12

    def state_args(self, state: str) -> list[str]:
        args = ["--state", state, "--check", self.check, "--timeout", f"{self.timeout:g}"]
        if self.torn:
            args.append("--torn")
        if self.seed:
            args += ["--seed", str(self.seed)]
        if self.samples != 256:
            args += ["--samples", str(self.samples)]
        if self.max_exhaustive != 12:
            args += ["--max-exhaustive", str(self.max_exhaustive)]
        return args


def failure_json(f: Failure, output: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {"state": str(f.outcome.state), "reason": f.outcome.reason(),
                              "status": f.outcome.status}
    if f.shrunk is not None:
        out["shrunk"] = {"state": str(f.shrunk.state), "reason": f.shrunk.reason(),
                         "dropped": list(f.dropped), "checks": f.shrink_calls,
                         "minimal": f.minimal}
    if output is not None:
        out["output"] = output
    return out


@overload
def _new(directory: str, name: str, *, binary: Literal[True]) -> IO[bytes]: ...


@overload
def _new(directory: str, name: str, *, binary: Literal[False] = False) -> IO[str]: ...


def _new(directory: str, name: str, *, binary: bool = False) -> IO[bytes] | IO[str]:
    """A new file of the bundle (the directory was empty, so nothing is replaced)."""
    path = os.path.join(directory, name)
    if binary:
        return open_output(path, f"the bundle's {name}", replace=False, binary=True)
    return open_output(path, f"the bundle's {name}", replace=False)


def write_bundle(directory: str, log_path: str, settings: RunSettings,
                 failures: Sequence[Failure], option: str = "the bundle") -> str:
    """Write the bundle into ``directory`` (created; it must not exist or be empty; never a
    device: :mod:`rig.core.outputs`)."""
    make_output_dir(directory, option, must_be_empty=True)
    make_output_dir(os.path.join(directory, "outputs"), option, must_be_empty=True)
    with open(log_path, "rb") as src, _new(directory, LOG_NAME, binary=True) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    entries = []
    lines = ["#!/bin/sh", "# Re-run the checker on each failing crash state of this bundle.",
             "# Exit status 1 means a state still fails. RIG names the rig command to use.",
             'cd "$(dirname "$0")" || exit 2', 'RIG="${RIG:-rig}"', "status=0"]
    seen: set[str] = set()
    for n, f in enumerate(failures, 1):
        name = f"outputs/{n}.txt"
        with _new(directory, name, binary=True) as out:
            out.write(f.smallest.output)
        entries.append(failure_json(f, name))
        state = str(f.smallest.state)
        if state in seen:
            continue
        seen.add(state)
        cmd = shlex.join(["crash", "check", LOG_NAME, *settings.state_args(state)])
        lines.append(f'"$RIG" {cmd} || status=1')
    lines.append("exit $status")
    doc = {"log": LOG_NAME, "original_log": os.path.abspath(log_path), "check": settings.check,
           "torn": settings.torn, "seed": settings.seed, "samples": settings.samples,
           "timeout": settings.timeout, "max_exhaustive": settings.max_exhaustive,
           "failures": entries}
    with _new(directory, "failures.json") as out:
        json.dump(doc, out, indent=2)
        out.write("\n")
    script = os.path.join(directory, "repro.sh")
    with _new(directory, "repro.sh") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(script, 0o755)
    return directory
