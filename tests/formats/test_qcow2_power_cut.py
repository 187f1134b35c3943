"""Power cuts under the qcow2 driver: a ``writecache`` node (a disk with a volatile cache)
between the image and its file loses a random subset of what was not flushed. The cut strikes at
a random write reaching the disk, so also in the middle of the driver's metadata flush. The image
must stay consistent for ``qemu-img check`` (leaks allowed: exit 0 or 3), and every byte QEMU
reads must be one a power cut could leave (the durable value or one written since the last
flush)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import rig
from rig.filters.writecache import WriteCacheFilter
from rig.formats.qcow2 import create
from rig.testing.model import DiskModel
from rig.testing.ops import pattern
from tests.formats.helpers import convert_raw, run

pytestmark = pytest.mark.rig_needs("qemu_utils")

SIZE = 512 * 1024


class Cut(Exception):
    """The power went out (raised out of the request that was being written)."""


@pytest.mark.parametrize("seed", range(16))
def test_power_cut_leaves_consistent_image(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    cluster = rnd.choice([4096, 65536])
    version = rnd.choice([2, 3])
    img = tmp_path / "p.qcow2"
    create(img, SIZE, cluster_size=cluster, version=version)
    blk = rig.open({"driver": "qcow2", "file": {
        "driver": "writecache", "wce": True, "policy": "random", "seed": seed,
        "file": {"driver": "file", "filename": str(img)}}})
    qcow2 = blk.root
    wc = qcow2.children["file"]
    assert isinstance(wc, WriteCacheFilter)
    model = DiskModel(SIZE)
    ops = rnd.randint(5, 40)
    cut_at = rnd.randint(1, ops * 6)
    writes = 0
    real_pwritev = wc._pwritev

    def pwritev(*args: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == cut_at:
            wc.power_cut("random", seed=seed)
            raise Cut()
        real_pwritev(*args)

    wc._pwritev = pwritev  # type: ignore[method-assign,assignment]
    try:
        for i in range(ops):
            off = rnd.randrange(0, SIZE - 1)
            n = min(rnd.randint(1, 3 * cluster), SIZE - off)
            what = rnd.random()
            if what < 0.55:
                data = pattern(i + seed * 100, n)
                model.write(off, data)  # before: a cut inside the write may keep any part
                blk.pwrite(off, data)
            elif what < 0.7:
                model.zero(off, n)
                blk.write_zeroes(off, n)
            elif what < 0.8 and version == 3:
                off -= off % cluster
                if off + cluster <= SIZE:
                    model.discard(off, cluster)
                    blk.discard(off, cluster)
            else:
                blk.flush()
                model.flush()
        blk.flush()
        model.flush()
        wc.power_cut("random", seed=seed)
    except Cut:
        pass
    # the process "dies": drop the qcow2 node's memory without writing it
    qcow2.closed = True
    wc.child.close()
    proc = run("qemu-img", "check", img, check=False)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    observed = convert_raw(img, tmp_path)
    violations = model.power_cut_violations(0, observed)
    assert not violations, f"{len(violations)} bytes impossible after a cut: {violations[0]}"
