"""What a state machine remembers for its repro bundle: the graphs it opened, the operations it
ran, and how the example failed (:mod:`rig.testing.bundle` writes it)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rig.core.backend import BlockBackend
from rig.core.graph import GraphSpec, spec_to_flat
from rig.core.registry import driver_class
from rig.testing import bundle as repro
from rig.testing.ops import Op


def _jsonable(spec: GraphSpec) -> dict[str, Any]:
    """A graph spec as plain JSON data (a string spec becomes its flat options)."""
    tree: Any = spec if isinstance(spec, Mapping) else spec_to_flat(spec)
    result: dict[str, Any] = json.loads(json.dumps(tree, default=str))
    return result


def _driver_sources(graph: Mapping[str, Any]) -> dict[str, str]:
    """Drivers in ``graph`` registered outside the rig (a test's own filter), with the file
    that registers them, so ``rig replay`` can say what to ``--import``."""
    out: dict[str, str] = {}
    for key, value in graph.items():
        if isinstance(value, Mapping):
            out.update(_driver_sources(value))
        elif key.rsplit(".", 1)[-1] == "driver" and isinstance(value, str):
            with contextlib.suppress(Exception):
                module = sys.modules.get(driver_class(value).__module__)
                source = getattr(module, "__file__", None)
                if module is not None and not module.__name__.startswith("rig.") and source:
                    out[value] = os.path.abspath(source)
    return out


class Recorder:
    """Collects one example's history; :meth:`write` turns it into a bundle file."""

    def __init__(self, machine: str) -> None:
        self.machine = machine
        self.ops: list[Op] = []
        self.backends: list[repro.BackendRecord] = []
        self.failure: dict[str, Any] = {}
        self.exception: BaseException | None = None
        self._opened: dict[int, repro.BackendRecord] = {}
        self._at_end = False
        self.driver_sources: dict[str, str] = {}
        """Drivers the graphs use that are not the rig's own: name -> the file defining it."""
        self.path: Path | None = None

    def opened(self, blk: BlockBackend, spec: GraphSpec, cache: str, read_only: bool) -> None:
        """``blk`` was opened from ``spec`` (so a replay can open it again)."""
        graph = _jsonable(spec)
        self._opened[id(blk)] = repro.BackendRecord(graph, cache, read_only)
        self.driver_sources.update(_driver_sources(graph))

    def ready(self, backends: Sequence[BlockBackend], describe: Callable[[int], str]) -> None:
        """The example's backends, in order (those not opened from a spec get no graph)."""
        self.backends = []
        for i, blk in enumerate(backends):
            rec = self._opened.get(id(blk)) or repro.BackendRecord(None)
            self.backends.append(repro.BackendRecord(rec.graph, rec.cache, rec.read_only,
                                                     describe(i)))
        self._opened.clear()

    def op(self, op: Op) -> None:
        self.ops.append(op)

    def finishing(self) -> None:
        """The operations are over; a failure now is in the final comparison."""
        self._at_end = True

    def fail(self, kind: str, message: str, **details: Any) -> None:
        """Record the first failure of the example (later ones are consequences)."""
        if not self.failure:
            index = len(self.ops) if self._at_end else len(self.ops) - 1
            self.failure = {"kind": kind, "op_index": index, "message": message, **details}

    def raised(self, exc: BaseException) -> None:
        """A step raised ``exc``: an assertion was recorded by :meth:`fail` already, anything
        else (an OSError from a backend) is the failure itself."""
        self.exception = self.exception or exc
        self.fail("error", f"{type(exc).__name__}: {exc}")

    def write(self, size: int, zero_on_start: bool) -> Path | None:
        """Write the bundle if this is Hypothesis's final (shrunk) run of the failing example;
        note its path on the exception and in Hypothesis's report. Never raises."""
        origin = repro.hypothesis_origin()
        if not origin.is_final or not repro.enabled() or not self.backends:
            return None
        bundle = repro.Bundle(machine=self.machine, size=size, backends=self.backends,
                              ops=list(self.ops), failure=self.failure or {"kind": "unknown"},
                              zero_on_start=zero_on_start, seed=origin.seed,
                              derandomize=origin.derandomize,
                              reproduce_failure=origin.reproduce_failure,
                              driver_sources=dict(self.driver_sources))
        try:
            self.path = repro.write(bundle).resolve()
        except (OSError, ValueError) as e:
            print(f"rig: could not write the repro bundle: {e}", file=sys.stderr)
            return None
        text = f"repro bundle: {self.path} (re-run it with: rig replay {self.path})"
        try:
            from hypothesis import note

            note(text)  # in Hypothesis's final run this becomes a note on the exception
        except Exception:
            if self.exception is not None:
                self.exception.add_note(text)
            print(text, file=sys.stderr)
        return self.path
