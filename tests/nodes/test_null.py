"""The ``null-co`` driver (rig/nodes/null.py) against QEMU 7.2's, through qemu-io and rig io:
the same script prints the same (reads leave qemu-io's buffer pattern or read zeroes, writes
vanish, ``map`` says not allocated or allocated zeroes, ``info`` prints only the format name
twice, iotest 133's ``reopen`` with non-string options), and bad options fail alike."""

from __future__ import annotations

import pytest

from tests.cli.helpers import commands, normalise, qemu_io, rig_io

pytestmark = pytest.mark.rig_needs("qemu_utils")

ENV = {"RIG_IO_NAME": "qemu-io"}


@pytest.mark.parametrize("spec", [
    "json:{'driver': 'null-co', 'size': 65536}",
    "json:{'driver': 'null-co', 'read-zeroes': true, 'latency-ns': 1000, 'size': '1M'}",
    "json:{'driver': 'null-co', 'filename': 'x'}",
    "json:{'driver': 'null-co', 'latency-ns': -1}",
])
def test_null_co_as_qemu(spec: str) -> None:
    script = commands(["reopen", "info", "read -v 0 16", "write -P 7 0 512", "read -v 0 16",
                       "write -z 0 4k", "discard 0 4k", "flush", "map", "length"])
    q = qemu_io("-f", "null-co", *script, spec)
    r = rig_io("-f", "null-co", *script, spec, env=ENV)
    assert (normalise(r.out), r.err) == (normalise(q.out), q.err)
