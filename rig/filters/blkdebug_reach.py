"""Which blkdebug rules of a graph can fire: the events that can reach each blkdebug node.

A blkdebug rule is armed by an event. An event reaches a blkdebug node B only from where the
rig emits it (:mod:`rig.filters.blkdebug_events`): B's own write events and ``none``; the
flush events and the declared events (``blkdebug_events``) of every node whose primary child's
event chain ends at B; the read-modify-write events when B is where the chokepoint's events go
and B has an ``align``. A rule on any other event can never fire in that graph (the issue-16
bug: a config for ``qemu-io -f raw blkdebug:CONF:IMG`` exported with no raw node above blkdebug
did nothing, silently). :func:`report_unreachable_rules` says so on stderr, one line a rule,
when a graph opens (:func:`rig.core.graph.open_node`); the lines stay on the node
(``BlkdebugFilter.unreachable``) for Python callers and tests.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

from rig.core.node import Node
from rig.core.options import printable
from rig.filters.blkdebug import BlkdebugFilter
from rig.filters.blkdebug_config import RuleSpec
from rig.filters.blkdebug_events import (
    FLUSH_EVENTS,
    OWN_EVENTS,
    QEMU_EMITTERS,
    RMW_EVENTS,
    declared_events,
)


def events_reaching(node: BlkdebugFilter, root: Node) -> frozenset[str]:
    """Every event some node of the graph under ``root`` can send to ``node``."""
    events = set(OWN_EVENTS)
    if root.event_sink is node and node.event_alignment > 1:
        events |= RMW_EVENTS
    for sender in root.walk():
        child = sender.primary_child
        if child is not None and child.event_sink is node:
            events |= FLUSH_EVENTS | declared_events(type(sender))
    return frozenset(events)


def emitters(event: str) -> str:
    """What would emit ``event``: the rig drivers that declare it, else QEMU's emitters."""
    from rig.core.registry import drivers

    names = sorted(name for name, cls in drivers().items() if event in declared_events(cls))
    if names:
        return f"a {' or '.join(names)} node above it"
    if event in FLUSH_EVENTS:
        return "the flush of a node above it, such as a raw format node"
    if event in RMW_EVENTS:
        return "the read-modify-write of a write that misses blkdebug's 'align'"
    return f"{QEMU_EMITTERS[event]} in QEMU; no rig driver emits it"


def unreachable_rules(root: Node) -> list[str]:
    """One warning line per rule of a blkdebug node under ``root`` that can never fire."""
    lines: list[str] = []
    seen: set[int] = set()
    for node in root.walk():
        if not isinstance(node, BlkdebugFilter) or id(node) in seen:
            continue
        seen.add(id(node))
        reaching = events_reaching(node, root)
        node.unreachable = [_line(node, spec) for spec in _in_order(node.rules())
                            if spec.event not in reaching]
        lines += node.unreachable
    return lines


def _in_order(specs: list[RuleSpec]) -> list[RuleSpec]:
    """In the order they were written: by file and line, or by option index."""
    def key(spec: RuleSpec) -> list[tuple[int, str]]:
        return [(int(part), "") if part.isdigit() else (-1, part)
                for part in re.split(r"(\d+)", spec.where) if part]

    return sorted(specs, key=key)


def _line(node: BlkdebugFilter, spec: RuleSpec) -> str:
    name = spec.where or ("a breakpoint" if spec.action == "suspend" else "a rule")
    at = f" of node '{printable(node.node_name)}'" if node.node_name else ""
    return (f"warning: blkdebug rule {name}{at} can never fire: no node of this graph emits "
            f"its event '{spec.event}' (emitted by {emitters(spec.event)})")


def report_unreachable_rules(root: Node, out: TextIO | None = None) -> list[str]:
    """Write :func:`unreachable_rules` to ``out`` (stderr), one line each; return them."""
    lines = unreachable_rules(root)
    if lines:
        stream = out if out is not None else sys.stderr
        stream.write("".join(f"rig: {line}\n" for line in lines))
        stream.flush()
    return lines
