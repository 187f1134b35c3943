"""Running ``rig io`` and qemu-io the same way, and comparing what they print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

# qemu-iotests' own normalisation of the timing line, plus the -C machine format.
_TIMING = re.compile(
    r"[0-9]* ops; [0-9/:. sec]* \([0-9/.inf]* [EPTGMKiBbytes]*/sec and [0-9/.inf]* ops/sec\)"
)
_CSV = re.compile(r"^((?:qemu-io> )?[0-9]+,[0-9]+),[^,]*,[^,]*,.*$", re.M)

RIG = [sys.executable, "-m", "rig"]


@dataclass
class Result:
    rc: int
    out: str
    err: str


def normalise(text: str) -> str:
    text = _TIMING.sub("X ops; TIME", text)
    return _CSV.sub(r"\1,TIME", text)


def run(argv: list[str], stdin: str | None = None, timeout: float = 60,
        env: dict[str, str] | None = None) -> Result:
    full_env = {**os.environ, **env} if env else None
    p = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                       env=full_env)
    return Result(p.returncode, p.stdout, p.stderr)


def rig_io(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return run([*RIG, "io", *args], stdin, env=env)


def qemu_io(*args: str, stdin: str | None = None) -> Result:
    return run(["qemu-io", *args], stdin)


def commands(script: list[str]) -> list[str]:
    out: list[str] = []
    for line in script:
        out += ["-c", line]
    return out
