"""What a rule source tells the ``faults`` filter to do with one request.

A *rule source* is the :class:`~rig.faults.engine.FaultEngine` (live rules) or a
:class:`~rig.faults.fault_replay.Replayer` (a saved log); the filter asks it about each request and
acts on the :class:`Verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rig.faults.log import FaultEventLog

FORWARD = "forward"
FAIL = "fail"
CORRUPT = "corrupt"
TORN = "torn"
DROP = "drop"
LIE = "lie"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the filter does with a request.

    ``kind``: ``forward`` (pass it on), ``fail`` (raise ``errno``), ``corrupt`` (forward, then flip
    ``bits``), ``torn`` (forward the first ``landed`` bytes, then fail with ``errno`` or succeed if
    it is 0), ``drop`` (succeed without forwarding), ``lie`` (a flush that succeeds, forwarded
    nowhere). Delays were already slept by the source.
    """

    kind: str = FORWARD
    errno: int = 0
    bits: tuple[int, ...] = ()
    landed: int = 0


PASS = Verdict()


class RuleSource(Protocol):
    """What the filter asks about each request: a FaultEngine or a Replayer."""

    armed: frozenset[str]
    """Ops (:class:`~rig.faults.rules.Op` values) for which :meth:`decide` may return something
    other than :data:`PASS`; the filter skips ``decide`` for the others (its fast path)."""

    @property
    def gone(self) -> int | None:
        """The errno every request fails with since a ``gone`` fired, else None."""

    log: FaultEventLog

    def decide(self, seq: int, op: str, offset: int, length: int) -> Verdict:
        """The verdict for request number ``seq``; logs and counts what fired."""

    def counters(self) -> dict[str, int]:
        """``{rule name: times fired}``."""

    def close(self) -> None:
        """Close the log's file, if it streams to one."""
