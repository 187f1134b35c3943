"""The ``faults`` filter: the rig's own fault rules between the chokepoint and a node.

Graph form::

    {"driver": "faults", "file": {...child...},
     "rules": "rules.toml",            # or inline: [{"action": "error", "op": "read"}, ...]
     "seed": 123, "log": "run.jsonl"}  # both optional; or "replay": "run.jsonl" instead of rules

From Python, ``f = backend.root`` (or any node of the graph that is a :class:`FaultsFilter`):
``f.add_rule(Rule(Error("EIO"), op="write", nth=3))``, ``f.remove_rule(name)``,
``f.enable(name)``, ``f.disable(name)``, ``f.counters()``, ``f.state``, ``f.log`` and
``f.log.save(path)``. Matching and actions are in :mod:`rig.faults.engine` and
docs/filters/faults.md.

Every request gets a sequence number (``seq``, from 1). With no armed rules for a request's op the
filter does only that and forwards (the fast path). With only ranged rules for the op (the usual
case with thousands of rules) a request that no rule's span touches also forwards without
asking the engine: the filter keeps each op's rule spans merged into a
:class:`~rig.faults.index.Coverage` (one ``bisect`` per request), for the engine's current
``state``: a rule that asks for another state cannot fire (nor count a hit), so it is left out.
The coverages are made again whenever the engine republishes ``armed`` (every rule change), and
kept per state. They hold every other rule, enabled or not, so they can only send a request to
the engine that need not go there, never the other way round.
``modifies_data`` is True (corrupt, torn), so every data verb is overridden here.

Flush: the rules are asked in the :meth:`~rig.core.node.Node._flush` hook, before this node's
flush sequence and its children's. A lying flush returns without ``super()._flush()``, so
nothing at or below this node is flushed; a failing one raises.
"""

from __future__ import annotations

import operator
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rig.core.buffers import iov_slice
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.registry import register_driver
from rig.errors import ConfigError, StateError
from rig.faults.engine import Clock, FaultEngine
from rig.faults.fault_replay import Replayer
from rig.faults.index import Coverage
from rig.faults.load import load_rules, rules_from_flat
from rig.faults.log import FaultEventLog
from rig.faults.rules import Op, Rule, Torn, injected_error
from rig.faults.verdict import CORRUPT, DROP, FAIL, FORWARD, LIE, TORN, RuleSource
from rig.filters.base import Filter

if TYPE_CHECKING:
    from rig.core.graph import OpenContext
    from rig.core.options import Options

#: Request numbers run from 1 up to (not including) this.
_SEQ_END = sys.maxsize

# Plain strings: StrEnum members hash through Python code, too slow for the per-request check.
_READ, _WRITE, _ZERO, _DISCARD, _FLUSH = (op.value for op in Op)


def flip_bits(iov: Iov, offset: int, bits: tuple[int, ...]) -> None:
    """Flip absolute device ``bits`` in the data of a read of ``iov`` at ``offset``."""
    bufs = [(b, b.nbytes) for b in iov]
    for bit in bits:
        pos = (bit >> 3) - offset
        for buf, n in bufs:
            if pos < n:
                buf[pos] ^= 1 << (bit & 7)
                break
            pos -= n


@register_driver("faults")
class FaultsFilter(Filter):
    """Fault rules over one child. See the module docstring."""

    modifies_data = True
    _child: Node  # ``self.child``, cached by attach_child for the fast path

    def __init__(self, *, rules: list[Rule] | None = None, seed: int = 0,
                 clock: Clock | None = None, source: RuleSource | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if source is not None and rules:
            raise ConfigError("faults: give rules or a replay source, not both")
        self._pending: list[tuple[Rule, bool]] = [(rule, False) for rule in rules or ()]
        self.source: RuleSource = source if source is not None else FaultEngine(
            seed=seed, clock=clock)
        #: Request numbers (seq). ``next()`` on it is one C call, atomic under the GIL, so
        #: concurrent requests get distinct numbers at the cost of itertools.count (a lock costs
        #: ~5 % of a request); a range iterator knows how many numbers it has left.
        self._numbers = iter(range(1, _SEQ_END))
        #: ``(armed, state, {op: Coverage})``: the spans of the rules that can fire in engine
        #: state ``state``, as of the engine's ``armed`` object; an op missing from the map
        #: always asks the engine. ``state`` None: a replay (no coverage).
        self._cover: tuple[frozenset[str] | None, int | None, dict[str, Coverage]] = \
            (None, None, {})
        #: The coverages of other states for the same ``armed`` (rules that step through states).
        self._covers_by_state: dict[int, dict[str, Coverage]] = {}

    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        seed = opts.int("seed", 0)
        log_path = opts.str("log")
        replay = opts.str("replay")
        rules = _rules_option(opts)
        if replay is not None and rules:
            raise ConfigError(f"Parameter '{opts.path}replay' cannot be combined with "
                              f"'{opts.path}rules'")
        source = Replayer(replay) if replay is not None else None
        if source is not None and opts.has("seed"):
            raise ConfigError(f"Parameter '{opts.path}seed': a replay uses the seed of its log")
        node = cls(rules=rules, seed=seed, source=source, **ctx.node_kwargs())

        def stream_log() -> None:
            if log_path is None:
                return
            # rig.core.outputs: never a device; a ConfigError naming the option otherwise.
            node.log.stream_to(log_path, f"the fault log ({opts.path}log=)")

        return node.open_child(ctx, then=stream_log)

    def attach_child(self, role: str, child: Node) -> None:
        super().attach_child(role, child)
        self._child = self.child
        pending, self._pending = self._pending, []
        for rule, first in pending:
            self.add_rule(rule, first=first)

    # ----------------------------------------------------------------- live control
    @property
    def engine(self) -> FaultEngine:
        """The rule engine (not available while replaying a log)."""
        if not isinstance(self.source, FaultEngine):
            raise StateError("this faults filter replays a log: it has no live rules")
        return self.source

    @property
    def log(self) -> FaultEventLog:
        return self.source.log

    @property
    def seq(self) -> int:
        """How many requests the filter has seen (the last request's ``seq``)."""
        return _SEQ_END - 1 - operator.length_hint(self._numbers)

    @property
    def state(self) -> int:
        return self.engine.state

    @state.setter
    def state(self, value: int) -> None:
        self.engine.state = value

    def add_rule(self, rule: Rule, *, first: bool = False) -> str:
        """Arm a rule (last in matching order, or ``first``); returns its name."""
        if not self.children:  # rules given before the child is attached wait for it
            self._pending.append((rule, first))
            return rule.name
        action = rule.action
        align = self.limits.request_alignment
        if isinstance(action, Torn) and action.unit % align:
            raise ConfigError(f"rule {rule.name or '(unnamed)'!r}: 'unit': {action.unit} is not "
                              f"a multiple of the device's block size {align}")
        return self.engine.add_rule(rule, first=first)

    def remove_rule(self, name: str) -> Rule:
        return self.engine.remove_rule(name)

    def enable(self, name: str) -> None:
        self.engine.enable(name)

    def disable(self, name: str) -> None:
        self.engine.disable(name)

    def rules(self) -> list[Rule]:
        return self.engine.rules()

    def counters(self) -> dict[str, int]:
        """``{rule name: times fired}``."""
        return self.source.counters()

    def revive(self) -> None:
        """Undo ``gone``: the device answers again."""
        self.engine.revive()

    # ----------------------------------------------------------------- pre-check
    def _covers(self, armed: frozenset[str], op: str, offset: int, length: int) -> bool:
        """False when no rule can match the request: it has only ranged rules for ``op`` and
        none of their spans touches ``[offset, offset + length)``. True: ask the engine."""
        cover = self._cover
        # cover[1] is not None only when the source is a FaultEngine (it has a state).
        if cover[0] is not armed or (
                cover[1] is not None and cover[1] != self.source.state):  # type: ignore[attr-defined]
            cover = self._recover(armed)
        spans = cover[2].get(op)
        return spans is None or spans.touches(offset, offset + length)

    def _recover(self, armed: frozenset[str]
                 ) -> tuple[frozenset[str], int | None, dict[str, Coverage]]:
        """The coverage for the engine's rules and state now (made when ``armed`` is a new
        object, that is after a rule change, or kept from the last time in this state). No
        coverage for a replay, a gone device, or an op with unranged rules."""
        source = self.source
        if not isinstance(source, FaultEngine):
            cover: tuple[frozenset[str], int | None, dict[str, Coverage]] = (armed, None, {})
            self._cover = cover
            return cover
        state = source.state
        if self._cover[0] is not armed:
            self._covers_by_state = {}
        maps = self._covers_by_state.get(state)
        if maps is None:
            maps = {}
            if source.gone is None:
                spans: dict[str, list[tuple[int, int]]] = {op: [] for op in armed}
                for rule in source.rules():
                    if rule.state is not None and rule.state != state:
                        continue  # cannot fire (nor count a hit) in this state
                    for op in rule.ops:
                        mine = spans.get(op.value)
                        if mine is None:
                            continue
                        if rule.ranged:
                            mine.append(rule.span)
                        else:  # matches any range: the engine decides every request
                            del spans[op.value]
                maps = {op: Coverage(s) for op, s in spans.items()}
            self._covers_by_state[state] = maps
        cover = (armed, state, maps)
        self._cover = cover
        return cover

    # ----------------------------------------------------------------- data verbs
    # The fast path (nothing armed for the op) is a counter bump, a set lookup and the forward:
    # ``self._child`` caches ``self.child`` (set by attach_child) to keep it that small.
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        seq = next(self._numbers)
        source = self.source
        armed = source.armed
        if _READ not in armed or not self._covers(armed, _READ, offset, length):
            self._child.preadv(offset, length, iov, flags)
            return
        v = source.decide(seq, _READ, offset, length)
        if v.kind == FAIL:
            raise injected_error(v.errno)
        self._child.preadv(offset, length, iov, flags)
        if v.kind == CORRUPT:
            flip_bits(iov, offset, v.bits)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        seq = next(self._numbers)
        source = self.source
        armed = source.armed
        if _WRITE not in armed or not self._covers(armed, _WRITE, offset, length):
            self._child.pwritev(offset, length, iov, flags)
            return
        v = source.decide(seq, _WRITE, offset, length)
        kind = v.kind
        if kind == FORWARD:
            self._child.pwritev(offset, length, iov, flags)
        elif kind == TORN:
            if v.landed:
                self._child.pwritev(offset, v.landed, iov_slice(iov, 0, v.landed), flags)
            if v.errno:
                raise injected_error(v.errno)
        elif kind == FAIL:
            raise injected_error(v.errno)
        else:
            assert kind == DROP, kind

    def direct(self, write: bool, offset: int, length: int) -> tuple[Node, int, int] | None:
        """Through, when no rule can match the request (the check :meth:`_preadv` and
        :meth:`_pwritev` make before they forward); the request takes its number as it would
        on the way down."""
        op = _WRITE if write else _READ
        armed = self.source.armed
        if op in armed and self._covers(armed, op, offset, length):
            return None
        plan = self._child.direct(write, offset, length)
        if plan is not None:
            next(self._numbers)
            if write:
                self.write_gen += 1
        return plan

    def _forwards(self, op: str, offset: int, length: int) -> bool:
        """For write-zeroes and discard: raise an injected error, or say whether the request
        goes on to the child (False when the rules drop it)."""
        seq = next(self._numbers)
        source = self.source
        armed = source.armed
        if op in armed and self._covers(armed, op, offset, length):
            v = source.decide(seq, op, offset, length)
            if v.kind == FAIL:
                raise injected_error(v.errno)
            if v.kind == DROP:
                return False
        return True

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        if self._forwards(_ZERO, offset, length):
            self._child.write_zeroes(offset, length, flags)

    def _discard(self, offset: int, length: int) -> None:
        if self._forwards(_DISCARD, offset, length):
            self._child.discard(offset, length)

    def _flush(self) -> None:
        """Ask the rules, then QEMU's flush sequence here and below (unless the flush lies)."""
        seq = next(self._numbers)
        source = self.source
        if _FLUSH in source.armed:
            v = source.decide(seq, _FLUSH, 0, 0)
            if v.kind == FAIL:
                raise injected_error(v.errno)
            if v.kind == LIE:
                return
        super()._flush()

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        gone = self.source.gone
        if gone is not None:
            raise injected_error(gone)
        return self.child.block_status(offset, length)

    def _close(self) -> None:
        self.source.close()


def _rules_option(opts: Options) -> list[Rule]:
    """``rules``: a file name, or inline tables flattened to ``rules.N.key``."""
    inline = {k[len("rules."):]: opts.raw(k) for k in list(opts.keys()) if k.startswith("rules.")}
    path = opts.raw("rules")
    if path is not None:
        if not isinstance(path, str):
            raise ConfigError(f"Parameter '{opts.path}rules' expects a file name or a list of "
                              "rule tables")
        if inline:
            raise ConfigError(f"Parameter '{opts.path}rules' is both a file name and a list")
        return load_rules(Path(path))
    if not inline:
        return []
    return rules_from_flat(inline, f"{opts.path}rules")


def find_faults(node: Node, name: str | None = None) -> FaultsFilter:
    """The first ``faults`` node in the graph under ``node`` (depth first), or the one whose
    ``node-name`` is ``name``. Raises :class:`~rig.errors.ConfigError` when there is none."""
    for candidate in node.walk():
        if isinstance(candidate, FaultsFilter) and name in (None, candidate.node_name):
            return candidate
    what = f"named {name!r} " if name is not None else ""
    raise ConfigError(f"no faults node {what}in the graph of {node.describe()}")
