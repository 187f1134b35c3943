"""Checking crash states with a real program: each state on one exported device, in turn.

A :class:`StateChecker` owns an ``overlay`` node over a ``memory`` node, exported as a real
block device (``/dev/loopN``) by the caller. For a state it

1. writes the durable image of the state's cut into the memory node, when the cut changed
   (one copy per cut, not per state);
2. resets the overlay and lays the state's in-flight pieces into it (only the bytes the state
   keeps beyond the durable image, so a state costs what it changes, not the device's size);
3. drops the device's page cache, so the checker reads the new state and nothing older;
4. runs the checker command through ``sh -c`` with ``RIG_DEV`` and the state's names in its
   environment, in a session of its own, killed with its whole process group when it exits or
   at the timeout; it also carries the caller's ``owner`` entries (``RIG_OWNER``, from
   ``rig.drivers.procs.owner_env``), so that the export's reaper kills it and whatever it
   started if this process is killed;
5. unmounts whatever the checker left mounted (that state then fails: a checker that leaves the
   device mounted would see the next state through a stale filesystem), and drops the page cache
   again, which writes back into *this* state's overlay whatever the checker left dirty.

The checker's exit status is the verdict: 0 passes, anything else (or the timeout) fails.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from rig.core.node import ReqFlags
from rig.crash.crashstate import CrashState
from rig.crash.records import Kind
from rig.crash.states import CrashStates
from rig.filters.overlay import OverlayFilter

#: Bytes of a checker's output kept for the report (its tail).
OUTPUT_TAIL = 64 * 1024
_CHUNK = 1 << 20


class CheckTarget(Protocol):
    """The exported device a checker runs against (``rig.drivers.export.Export``)."""

    @property
    def path(self) -> str: ...

    def drop_cache(self) -> None: ...

    def mountpoints(self) -> list[str]: ...

    def unmount(self, mountpoint: str) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """What the checker said about one state."""

    state: CrashState
    status: int | None
    """The checker's exit status; None when it was killed at the timeout."""
    seconds: float
    output: bytes = b""
    """The tail of its stdout and stderr, interleaved."""
    left_mounted: tuple[str, ...] = ()
    """Mountpoints of the device the checker did not unmount (the rig unmounted them)."""

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.left_mounted

    def reason(self) -> str:
        """``exit status 1``, ``timed out``, ``left the device mounted at /mnt``, or ``passed``."""
        if self.left_mounted:
            return "left the device mounted at " + ", ".join(self.left_mounted)
        if self.status is None:
            return f"timed out after {self.seconds:.1f} s"
        if self.status < 0:
            return f"killed by signal {-self.status}"
        return "passed" if self.status == 0 else f"exit status {self.status}"


@dataclass
class CheckStats:
    """How many states a run checked, and since when."""

    states: int = 0
    started: float = field(default_factory=time.monotonic)

    def rate_per_minute(self) -> float:
        elapsed = time.monotonic() - self.started
        return 60.0 * self.states / elapsed if elapsed > 0 else 0.0


def user_marks(states: CrashStates) -> list[tuple[int, str]]:
    """The log's user marks, ``(seq, text)`` in log order (system marks left out)."""
    return [(r.seq, r.text) for r in states.log.records if r.kind is Kind.MARK and not r.system]


def last_mark(marks: list[tuple[int, str]], cut: int) -> tuple[int, str]:
    """The last of ``marks`` at or before record ``cut``: ``(seq, text)``, or ``(0, "")``."""
    i = bisect.bisect_right(marks, cut, key=lambda m: m[0])
    return marks[i - 1] if i else (0, "")


class StateChecker:
    """Materializes states on ``overlay`` (exported as ``target``) and runs ``command``.

    ``owner`` is added to the checker's environment (``env``, default ours): the marker that
    lets the reaper of ``target``'s export kill the checker if this process dies
    (``rig.drivers.procs.owner_env()``).
    """

    def __init__(self, states: CrashStates, overlay: OverlayFilter, target: CheckTarget,
                 command: str, *, owner: Mapping[str, str], timeout: float = 60.0,
                 env: Mapping[str, str] | None = None) -> None:
        if overlay.getlength() != states.log.header.device_size:
            raise ValueError(f"the overlay has {overlay.getlength()} bytes, the log's device "
                             f"{states.log.header.device_size}")
        self.states = states
        self.overlay = overlay
        self.target = target
        self.command = command
        self.timeout = timeout
        self.env = {**(os.environ if env is None else env), **owner}
        self.stats = CheckStats()
        self._cut: int | None = None
        self._marks = user_marks(states)

    # ----------------------------------------------------------------- materializing
    def _load_cut(self, cut: int) -> None:
        if cut == self._cut:
            return
        self._cut = None
        # Written out at once, so the walk's own image serves (no copy of the device).
        image = memoryview(self.states.durable.at(cut))
        base = self.overlay.child
        for pos in range(0, len(image), _CHUNK):
            piece = image[pos:pos + _CHUNK]
            base.pwritev(pos, len(piece), [piece], ReqFlags.NONE)
        self._cut = cut

    def materialize(self, state: CrashState) -> None:
        """Make the exported device hold ``state`` (and nothing a checker wrote before)."""
        self._load_cut(state.cut)
        self.overlay.reset()
        for offset, data in self.states.pieces(state):
            self.overlay.put(offset, data)
        self.target.drop_cache()

    # ----------------------------------------------------------------------- running
    def _environment(self, state: CrashState) -> dict[str, str]:
        seq, text = last_mark(self._marks, state.cut)
        return {**self.env, "RIG_DEV": self.target.path, "RIG_STATE": str(state),
                "RIG_CUT": str(state.cut), "RIG_MARK": text.replace("\0", "\\0"),
                "RIG_MARK_SEQ": str(seq)}  # an environment value holds no NUL byte

    def _run(self, state: CrashState) -> tuple[int | None, bytes, float]:
        with tempfile.TemporaryFile() as out:
            start = time.monotonic()
            proc = subprocess.Popen(["sh", "-c", self.command], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    env=self._environment(state), start_new_session=True)
            status: int | None = None
            try:
                status = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                pass
            finally:
                # Nothing the checker started may outlive its state (nor a Ctrl-C of ours:
                # the checker's own session does not get the terminal's SIGINT).
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                if status is None:
                    proc.wait()
            seconds = time.monotonic() - start
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - OUTPUT_TAIL))
            return status, out.read(), seconds

    def check(self, state: CrashState) -> Outcome:
        """Materialize ``state``, run the checker on it, and clean up after it."""
        self.materialize(state)
        status, output, seconds = self._run(state)
        left = tuple(self.target.mountpoints())
        for mountpoint in left:
            self.target.unmount(mountpoint)
        self.target.drop_cache()
        outcome = Outcome(state, status, seconds, output, left)
        self.stats.states += 1
        return outcome

    def fails(self, state: CrashState) -> bool:
        """The predicate shrinking needs: does the checker fail on ``state``?"""
        return not self.check(state).ok
