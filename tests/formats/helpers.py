"""Helpers for the qcow2 tests: run Debian's qemu-img / qemu-io, open images through the rig."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import rig
from rig.core.backend import BlockBackend


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc


def qemu_io(image: Path, *cmds: str, fmt: str = "qcow2") -> str:
    args: list[str | Path] = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    out = run(*args, image).stdout
    assert "failed" not in out, out
    return out


def check_clean(image: Path) -> None:
    """``qemu-img check`` finds no errors and no leaks."""
    proc = run("qemu-img", "check", "-f", "qcow2", image, check=False)
    assert proc.returncode == 0, f"qemu-img check {image}:\n{proc.stdout}{proc.stderr}"
    assert "No errors were found" in proc.stdout, proc.stdout


def compare_raw(image: Path, expected: bytes, tmp: Path) -> None:
    """``qemu-img compare`` of the image (the whole chain) against raw ``expected`` content."""
    raw = tmp / f"expected-{image.name}.raw"
    raw.write_bytes(expected)
    proc = run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, raw, check=False)
    assert proc.returncode == 0, f"qemu-img compare: {proc.stdout}{proc.stderr}"


def convert_raw(image: Path, tmp: Path) -> bytes:
    """What QEMU reads from the image (the whole chain), via qemu-img convert."""
    out = tmp / f"converted-{image.name}.raw"
    run("qemu-img", "convert", "-O", "raw", image, out)
    return out.read_bytes()


def spec(image: Path, **extra: Any) -> dict[str, Any]:
    return {"driver": "qcow2", "file": {"driver": "file", "filename": str(image)}, **extra}


def open_qcow2(image: Path, **kw: Any) -> BlockBackend:
    read_only = kw.pop("read_only", False)
    return rig.open(spec(image, **kw), read_only=read_only)


def assert_same(got: bytes, want: bytes, what: str = "content") -> None:
    """Equal bytes, or an assertion naming the first difference (not a megabyte diff)."""
    if got == want:
        return
    if len(got) != len(want):
        raise AssertionError(f"{what}: {len(got)} bytes, expected {len(want)}")
    pos = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
    raise AssertionError(f"{what} differs at byte {pos}: got {got[pos:pos + 16].hex()}, "
                         f"expected {want[pos:pos + 16].hex()}")
