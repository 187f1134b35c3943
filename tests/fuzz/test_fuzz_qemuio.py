"""Garbage at ``rig io``'s command parser: generated command lines, driven through the
in-process session against a small memory image.

Lines are made of real command names and aliases (and a few that are not), their option letters
(and some they do not take), and arguments drawn from numbers that broke a parser once (a
5,000-digit offset, ``1E``, Unicode digits, ``--5``, a 400-digit fraction ...) beside ordinary
ones. The contract, as in qemu-io: each command returns a status (0 or a negative errno), or
raises the rig's own error with a one-line message, which ends that command and not the session:
the next line still runs. ``sleep`` is recorded, not waited for (a valid ``sleep`` may be long).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.core.backend import BlockBackend
from rig.core.graph import open_node
from rig.core.options import parse_keyval
from rig.errors import ConfigError, RigError
from rig.qemuio import commands
from rig.qemuio.session import OpenOptions, Session
from tests.fuzz.hostile_configs import NUMBERS
from tests.fuzzing import fuzz, one_line

pytestmark = pytest.mark.fuzz

IMAGE = 64 << 10
#: Made by the module fixture (not at import: xdist imports this in processes that run
#: nothing), removed with everything in it afterwards.
_DIR = Path(tempfile.gettempdir()) / f"rig-fuzz-qemuio-{os.getpid()}"
_SOURCE = _DIR / "source.bin"
#: The only ``-o`` keys the opener takes: a generated ``-o`` must never name a host file.
_OPEN_KEYS = {"file.size", "file.logical-block-size", "file.max-transfer", "read-only",
              "cache.direct", "cache.no-flush", "discard", "node-name", "size", "offset"}


@pytest.fixture(autouse=True, scope="module")
def _scratch() -> Iterator[None]:
    _DIR.mkdir(mode=0o700, exist_ok=True)
    _SOURCE.write_bytes(b"\x11" * 4096)
    yield
    _SOURCE.unlink()
    _DIR.rmdir()


def _opener(path: str | None, o: OpenOptions) -> BlockBackend:
    """A fresh memory image under raw, whatever the path says; ``-o`` options only from
    :data:`_OPEN_KEYS` (they reach the real option parsers)."""
    flat: dict[str, Any] = {"driver": "raw", "file.driver": "memory", "file.size": IMAGE}
    for extra in o.extra:
        for key, value in parse_keyval(extra).items():
            if key not in _OPEN_KEYS:
                raise ConfigError(f"fuzz opener: option {key[:40]!r} is not allowed here")
            flat[key] = value
    return BlockBackend(open_node(flat, defaults={"read-only": o.read_only}),
                        read_only=o.read_only or None, swallow_rmw_read_errors=True)


# ------------------------------------------------------------------------------ generators
_NAMES = sorted({n for c in commands.COMMANDS.values() for n in (c.name, c.altname) if n}
                - {"wait_break",  # blkdebug-only; no blkdebug node here
                   "abort", "sigraise"})  # end the process by design (as in qemu-io): the worker
ordinary = st.sampled_from(["0", "512", "4k", "64k", "0x200", "1.5k", "4096", "65024", "7"])
#: Lengths that are valid and huge would allocate gigabytes (as in qemu-io): left out.
hostile_number = st.sampled_from([
    n for n in NUMBERS if isinstance(n, str)
    and not (n.isascii() and n.isdigit() and len(n) < 20 and 1 << 20 < int(n) <= 1 << 31)
    and n not in ("1.5E",)
])
argument = st.one_of(ordinary, ordinary, hostile_number,
                     st.sampled_from(["-", "--", "-q", "-P", "-P1", "-x", str(_SOURCE),
                                      "/nonexistent", "read_aio", "tag", "\t", "\x00", "ÿ"]),
                     st.text(max_size=12))
option = st.one_of(
    st.sampled_from(["-q", "-C", "-v", "-f", "-z", "-u", "-n", "-i", "-m", "-a", "-b", "-c", "-r",
                     "-U", "-k", "-x", "--", "-qv", "-Cq"]),
    st.tuples(st.sampled_from(["-P", "-s", "-l", "-t", "-d", "-o", "-m", "-f"]),
              st.one_of(st.sampled_from(["1", "0xa5", "255", "256", "-1", "012", "1x", "0x",
                                         "none", "writeback", "unmap", "raw",
                                         str(_SOURCE), "/nonexistent",
                                         "file.size=1E", "file.size=64k", "read-only=on",
                                         "file.logical-block-size=3", "discard=maybe",
                                         "size=1k", "offset=1", "file.filename=/etc/passwd"]),
                        hostile_number)).map(lambda t: " ".join(t)))


@st.composite
def command_line(draw: st.DrawFn) -> str:
    name = draw(st.one_of(st.sampled_from(_NAMES), st.sampled_from(["frobnicate", "", "quit"])))
    words = [name]
    for _ in range(draw(st.integers(0, 2))):
        words.append(draw(option))
    words += draw(st.lists(argument, max_size=4))
    separator = draw(st.sampled_from([" ", " ", "  "]))
    return separator.join(words)


# ------------------------------------------------------------------------------ properties
def _session() -> tuple[Session, list[float]]:
    slept: list[float] = []
    session = Session(opener=_opener, out=io.StringIO(), err=io.StringIO(), sleep=slept.append)
    assert session.open("image") == 0
    return session, slept


@fuzz
@given(lines=st.lists(command_line(), min_size=1, max_size=6))
def test_every_command_line_ends_in_a_status_or_one_line(lines: list[str]) -> None:
    session, slept = _session()
    try:
        for line in [*lines, "read -P 0 1k 1"]:
            try:
                ret, quit_ = commands.run(session, line)
            except RigError as e:  # rig io prints it and goes on to the next command
                one_line(e)
                continue
            assert isinstance(ret, int) and ret <= 0, (line, ret)
            if quit_:
                break
        assert session.reap(wait=True) <= 0
    finally:
        session.close()
    assert all(0 <= s < 1e10 for s in slept)


@fuzz
@given(number=st.one_of(hostile_number, ordinary),
       template=st.sampled_from(["read {} 512", "read 0 {}", "write -P {} 0 512", "sleep {}",
                                 "readv 0 {} 512", "aio_write 0 {}", "discard {} 512",
                                 "truncate {}", "alloc 0 {}", "read -P 1 -s {} 0 1k",
                                 "write -z {} 512", "open -o file.size={}"]))
def test_a_bad_number_fails_its_command_and_the_next_one_runs(number: str, template: str
                                                              ) -> None:
    session, _ = _session()
    try:
        if template.startswith("truncate"):
            commands.run(session, f"truncate {number}")
            commands.run(session, f"truncate {IMAGE}")
        elif template.startswith("open"):
            session.close()
            commands.run(session, template.format(number))
            session.close()  # whatever it opened (or not): the plain image again
            assert session.open("image") == 0
        else:
            commands.run(session, template.format(number))
        session.reap(wait=True)
        # The session is alive and the image still answers.
        out = session.out
        assert isinstance(out, io.StringIO)
        mark = len(out.getvalue())
        ret, _ = commands.run(session, "write -P 0x5a 0 512")
        assert ret == 0, out.getvalue()[mark:]
        ret, _ = commands.run(session, "read -P 0x5a 0 512")
        assert ret == 0, out.getvalue()[mark:]
    finally:
        session.close()
