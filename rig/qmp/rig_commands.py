"""The rig's own QMP commands, for what QEMU has no command for, prefixed ``x-rig-`` as QEMU
prefixes its experimental ones.

Fault rules (a ``faults`` node, :mod:`rig.filters.faults`): ``x-rig-query-rules`` (every rule
of every faults and blkdebug node, with its fired count), ``x-rig-add-rule`` (a table of the
rules-file schema), ``x-rig-remove-rule``, ``x-rig-enable-rule`` / ``x-rig-disable-rule`` (arm
and disarm; counters are kept). blkdebug (:mod:`rig.filters.blkdebug`): ``x-rig-break``,
``x-rig-remove-break``, ``x-rig-resume`` (release a request parked at a breakpoint). Both:
``x-rig-set-state``. The error policy: ``x-rig-fail-stopped`` (fail the requests the ``stop``
policy parked, instead of retrying them as ``cont`` does). Events: ``x-rig-watch-faults`` asks
for one ``X_RIG_FAULT`` event per fault a ``faults`` node fires, on this connection.

``node-name`` picks the node where a graph has several; without it the first such node (depth
first) is used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from rig.core.backend import BlockBackend
from rig.core.node import Node
from rig.errors import StateError
from rig.faults.load import dump_rule, rule_from_dict
from rig.filters.blkdebug import BlkdebugFilter
from rig.filters.faults import FaultsFilter
from rig.qmp.block import node_names
from rig.qmp.dispatcher import Dispatcher, Session
from rig.qmp.protocol import QmpError, event
from rig.qmp.schema import Param

FAULTS = "faults"
#: How often the fault logs are looked at for new events while a client watches them.
POLL_S = 0.02
_N = TypeVar("_N", bound=Node)
Broadcast = Callable[[dict[str, Any], str | None], None]


class RigCommands:
    """``x-rig-*`` over the graph of ``backend``; fault events go to ``broadcast``."""

    def __init__(self, backend: BlockBackend, broadcast: Broadcast) -> None:
        self.backend = backend
        self._broadcast = broadcast
        self._watchers = 0
        self._lock = threading.Lock()
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=2)

    def register(self, d: Dispatcher) -> None:
        node = Param("node-name", "string")
        d.add("x-rig-query-rules", self.query_rules, node)
        d.add("x-rig-add-rule", self.add_rule, Param("rule", "object", True), node,
              Param("first", "boolean"))
        for verb in ("remove", "enable", "disable"):
            d.add(f"x-rig-{verb}-rule", getattr(self, f"{verb}_rule"),
                  Param("name", "string", True), node)
        d.add("x-rig-set-state", self.set_state, Param("state", "integer", True), node)
        d.add("x-rig-break", self.set_break, Param("event", "string", True),
              Param("tag", "string", True), node)
        d.add("x-rig-remove-break", self.remove_break, Param("tag", "string", True), node)
        d.add("x-rig-resume", self.resume, Param("tag", "string", True), node,
              Param("all", "boolean"))
        d.add("x-rig-fail-stopped", self.fail_stopped)
        d.add("x-rig-watch-faults", self.watch_faults, Param("enable", "boolean"),
              wants_session=True)

    # ------------------------------------------------------------------ nodes
    def _nodes(self, kind: type[_N]) -> list[tuple[str, _N]]:
        root = self.backend.root
        names = node_names(root)
        return [(names[id(n)], n) for n in root.walk() if isinstance(n, kind)]

    def _node(self, kind: type[_N], node_name: str | None) -> _N:
        found = self._nodes(kind)
        what = kind.driver_name
        for name, node in found:
            if node_name in (None, name):
                return node
        have = ", ".join(n for n, _ in found) or "none"
        where = f"named '{node_name}' " if node_name is not None else ""
        raise QmpError(f"no {what} node {where}in the graph ({what} nodes: {have})")

    # ------------------------------------------------------------------ rules
    def query_rules(self, node_name: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, f in self._nodes(FaultsFilter):
            if node_name not in (None, name):
                continue
            entry: dict[str, Any] = {"node-name": name, "driver": "faults", "requests": f.seq}
            try:
                engine = f.engine
            except StateError:  # a replay has no live rules
                entry["rules"] = []
                out.append(entry)
                continue
            fired, hits = engine.counters(), engine.hits()
            entry["state"] = engine.state
            entry["rules"] = [{"name": r.name, "enabled": engine.enabled(r.name),
                               "fired": fired.get(r.name, 0), "hits": hits.get(r.name, 0),
                               "rule": dump_rule(r)} for r in engine.rules()]
            out.append(entry)
        for name, b in self._nodes(BlkdebugFilter):
            if node_name not in (None, name):
                continue
            out.append({"node-name": name, "driver": "blkdebug", "state": b.state,
                        "rules": [_blkdebug_rule(s) for s in b.rules()]})
        if node_name is not None and not out:
            raise QmpError(f"no faults or blkdebug node named '{node_name}' in the graph")
        return out

    def add_rule(self, rule: dict[str, Any], node_name: str | None = None,
                 first: bool = False) -> dict[str, Any]:
        """Arm a rule; a graph with no faults node gets one on top first (as
        ``block_set_io_throttle`` adds a throttle), so rules can be armed on any export."""
        parsed = rule_from_dict(rule)
        with self._lock:
            if node_name is None and not self._nodes(FaultsFilter):
                self._insert_faults()
            node = self._node(FaultsFilter, node_name)
        return {"name": node.add_rule(parsed, first=first)}

    def _insert_faults(self) -> None:
        blk = self.backend
        node = FaultsFilter(node_name="")
        node.attach_child(node.child_role, blk.root)
        blk.root = node

    def remove_rule(self, name: str, node_name: str | None = None) -> dict[str, Any]:
        self._node(FaultsFilter, node_name).remove_rule(name)
        return {}

    def enable_rule(self, name: str, node_name: str | None = None) -> dict[str, Any]:
        self._node(FaultsFilter, node_name).enable(name)
        return {}

    def disable_rule(self, name: str, node_name: str | None = None) -> dict[str, Any]:
        self._node(FaultsFilter, node_name).disable(name)
        return {}

    def set_state(self, state: int, node_name: str | None = None) -> dict[str, Any]:
        """The state of the named node, else of the first blkdebug node, else faults node."""
        nodes: list[tuple[str, BlkdebugFilter | FaultsFilter]] = [
            *self._nodes(BlkdebugFilter), *self._nodes(FaultsFilter)]
        for name, node in nodes:
            if node_name in (None, name):
                node.state = state
                return {}
        raise QmpError("no blkdebug or faults node "
                       + (f"named '{node_name}' " if node_name else "") + "in the graph")

    # ------------------------------------------------------------ breakpoints
    def set_break(self, event: str, tag: str, node_name: str | None = None) -> dict[str, Any]:
        self._node(BlkdebugFilter, node_name).set_breakpoint(event, tag)
        return {}

    def remove_break(self, tag: str, node_name: str | None = None) -> dict[str, Any]:
        self._node(BlkdebugFilter, node_name).remove_breakpoint(tag)
        return {}

    def resume(self, tag: str, node_name: str | None = None,
               all: bool = False) -> dict[str, Any]:
        node = self._node(BlkdebugFilter, node_name)
        resumed = 0
        while node.resume(tag):
            resumed += 1
            if not all:
                break
        if not resumed:
            raise QmpError(f"no request is suspended at '{tag}'")
        return {"resumed": resumed}

    # ------------------------------------------------------------ error policy
    def fail_stopped(self) -> dict[str, Any]:
        self.backend.fail_stopped()
        return {}

    # ------------------------------------------------------------------ events
    def watch_faults(self, session: Session, enable: bool = True) -> dict[str, Any]:
        if not self._nodes(FaultsFilter):
            raise QmpError("no faults node in the graph: nothing to watch")
        if enable:
            session.watching.add(FAULTS)
            with self._lock:
                if self._poller is None:
                    seen = {id(node): len(node.log) for _, node in self._nodes(FaultsFilter)}
                    self._poller = threading.Thread(target=self._poll, args=(seen,),
                                                    daemon=True, name="rig-qmp-faults")
                    self._poller.start()
        else:
            session.watching.discard(FAULTS)
        return {}

    def _poll(self, seen: dict[int, int]) -> None:
        """Turn new entries of every faults node's event log into ``X_RIG_FAULT`` events.
        Only fired faults reach a log, so the request path pays nothing for watching."""
        while not self._stop.wait(POLL_S):
            for name, node in self._nodes(FaultsFilter):
                log = node.log
                start, end = seen.get(id(node), 0), len(log)
                for i in range(start, end):
                    self._broadcast(event("X_RIG_FAULT", {"node-name": name,
                                                          **log[i].to_json()}), FAULTS)
                seen[id(node)] = end


def _blkdebug_rule(spec: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"event": spec.event, "action": spec.action}
    if spec.state:
        out["state"] = spec.state
    if spec.action == "inject":
        out.update({"errno": spec.errno, "once": spec.once, "immediately": spec.immediately,
                    "iotypes": sorted(spec.iotypes)})
        if spec.offset != -1:
            out["sector"] = spec.offset // 512
    elif spec.action == "set_state":
        out["new_state"] = spec.new_state
    else:
        out["tag"] = spec.tag
    return out
