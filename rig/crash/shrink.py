"""Shrinking a failing crash state to the fewest dropped writes that still break the checker.

A state at cut ``c`` drops some of the in-flight units there (whole records, or sectors of them
with ``torn``): :meth:`CrashStates.dropped <rig.crash.states.CrashStates.dropped>`. Shrinking
keeps more of them, never fewer, and never changes the cut: it looks, delta-debugging style, for
a subset of the dropped units that still fails and is *1-minimal*: putting back any single one
of its units makes the checker pass.

* First the state that drops nothing at that cut is tried: when it fails too, the crash is not
  needed to break the checker, and the answer is that state.
* Then chunks of the dropped units are put back, halves first, then quarters and so on down to
  single units, each kept back if the state still fails. The single-unit pass is repeated until
  it puts nothing back, which is the 1-minimal set. (This is ddmin's "complement" step on a
  shrinking list; ddmin's "subset" step costs more calls for the same answer when a few units
  matter: 45 calls instead of 72 for 2 culprits among 2048 units, 63 instead of 154 for 3.)

The search is deterministic (units in log order, chunks in order), calls the predicate at most
once per distinct dropped set (the original one is known to fail and is not called unless
``verify``), and stops after ``budget`` calls with the smallest failing set found so far
(``minimal`` is then False). Units of one record are neighbours in the list, so a chunk is
mostly whole records at first and single sectors at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rig.crash.crashstate import CrashState
from rig.crash.states import CrashStates, Unit

__all__ = ["ShrinkResult", "ShrinkStep", "shrink"]


@dataclass(frozen=True)
class ShrinkStep:
    """One predicate call, for ``on_step`` (progress): the state tried and the best so far."""

    call: int
    """1 for the first call."""
    tried: CrashState
    dropped: int
    """How many units ``tried`` drops."""
    failed: bool
    best: CrashState
    best_dropped: int


@dataclass(frozen=True)
class ShrinkResult:
    """The outcome of :func:`shrink`."""

    original: CrashState
    state: CrashState
    """The shrunk state: same cut, keeps everything ``original`` kept and more."""
    dropped: tuple[Unit, ...]
    """The units ``state`` drops, in log order (a subset of ``original``'s)."""
    original_dropped: int
    calls: int
    """Predicate calls made (repeated sets are answered from memory and not counted)."""
    minimal: bool
    """True when ``dropped`` is 1-minimal; False when the budget ran out first."""

    def __str__(self) -> str:
        how = "1-minimal" if self.minimal else "budget spent, not minimal"
        return (f"{self.state}: drops {len(self.dropped)} of the {self.original_dropped} "
                f"units that {self.original} drops ({self.calls} checks, {how})")


class _BudgetSpent(Exception):
    pass


class _Search:
    """The memo, the budget and the best failing set so far."""

    def __init__(self, states: CrashStates, cut: int, best: list[Unit],
                 fails: Callable[[CrashState], bool], budget: int | None,
                 on_step: Callable[[ShrinkStep], None] | None) -> None:
        self.states = states
        self.cut = cut
        self.fails = fails
        self.budget = budget
        self.on_step = on_step
        self.calls = 0
        self.best = best
        self.memo: dict[frozenset[Unit], bool] = {frozenset(best): True}

    def state(self, dropped: Sequence[Unit]) -> CrashState:
        return self.states.with_dropped(self.cut, dropped)

    def test(self, dropped: list[Unit]) -> bool:
        """Does the state dropping ``dropped`` fail? Records it as the best when smaller."""
        key = frozenset(dropped)
        known = self.memo.get(key)
        if known is not None:
            return known
        if self.budget is not None and self.calls >= self.budget:
            raise _BudgetSpent
        self.calls += 1
        tried = self.state(dropped)
        failed = bool(self.fails(tried))
        self.memo[key] = failed
        if failed and len(dropped) < len(self.best):
            self.best = dropped
        if self.on_step is not None:
            self.on_step(ShrinkStep(self.calls, tried, len(dropped), failed,
                                    self.state(self.best), len(self.best)))
        return failed


def _remove_chunks(search: _Search, units: list[Unit]) -> list[Unit]:
    """Put back chunks of ``units`` (halves, then quarters ... then single units) while the
    state still fails; repeat the single-unit pass until none can be put back (1-minimal)."""
    size = max(1, len(units) // 2)
    while True:
        changed = False
        i = 0
        while i < len(units):
            rest = units[:i] + units[i + size:]
            if search.test(rest):
                units, changed = rest, True
            else:
                i += size
        if size == 1 and not changed:
            return units
        size = max(1, size // 2)


def shrink(states: CrashStates, state: CrashState, fails: Callable[[CrashState], bool], *,
           budget: int | None = None, on_step: Callable[[ShrinkStep], None] | None = None,
           verify: bool = False) -> ShrinkResult:
    """Shrink the failing ``state`` to a 1-minimal set of dropped units at the same cut.

    ``fails(s)`` runs the checker on the state ``s`` (of ``states``) and says whether it broke;
    it should be deterministic. ``state`` is taken as failing without a call, unless ``verify``
    (then a ``ValueError`` if it passes; that call counts in ``budget``). ``budget`` caps the
    calls; ``on_step`` sees each one.
    An exception from ``fails`` ends the search and is raised.
    """
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    original = states.dropped(state)
    search = _Search(states, state.cut, original, fails, budget, on_step)
    minimal = True
    try:
        if verify:
            search.memo.clear()
            if not search.test(original):
                raise ValueError(f"state {state} does not fail (a flaky checker?)")
        if original and not search.test([]):
            _remove_chunks(search, original)
    except _BudgetSpent:
        minimal = False
    best = search.best
    shrunk = state if len(best) == len(original) else search.state(best)
    return ShrinkResult(original=state, state=shrunk, dropped=tuple(best),
                        original_dropped=len(original), calls=search.calls, minimal=minimal)
