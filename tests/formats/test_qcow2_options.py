"""qcow2 runtime options (iotest 103): the cache sizes and their checks, side by side with
qemu-io 7.2 (same messages for bad combinations, the same reads for good ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import normalise, qemu_io, rig_io
from tests.formats.helpers import run

pytestmark = pytest.mark.rig_needs("qemu_utils")

OPTIONS = [
    "cache-size=1.25M,l2-cache-size=1M,refcount-cache-size=0.25M",
    "cache-size=1M,l2-cache-size=2M",
    "cache-size=1M,refcount-cache-size=2M",
    "l2-cache-entry-size=256",
    "l2-cache-entry-size=4242",
    "l2-cache-entry-size=128k",
    "cache-size=0",
    "cache-size=2M,refcount-cache-size=1M",
    "l2-cache-size=1M,refcount-cache-size=0.25M",
    "l2-cache-entry-size=16k,cache-clean-interval=0,lazy-refcounts=on",
    "cache-clean-interval=4294967296",
    "cache-clean-interval=-1",
    "refcount-cache-size=256T",
    "lazy-refcounts=42",
]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    img = tmp_path_factory.mktemp("opts") / "t.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, "64k")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 42 0 64k", img)
    return img


def test_cache_options_as_qemu(image: Path) -> None:
    """Every option set in one session (open, read, close), under both tools."""
    args: list[str] = []
    for options in OPTIONS:
        args += ["-c", f"open -o {options} {image}", "-c", "read -P 42 0 64k", "-c", "close"]
    q = qemu_io(*args)
    r = rig_io(*args, env={"RIG_IO_NAME": "qemu-io"})
    assert (r.rc, normalise(r.out), r.err) == (q.rc, normalise(q.out), q.err)
    assert r.err.count("can't open device") == 10
