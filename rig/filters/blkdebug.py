"""``blkdebug``: QEMU's fault-injection filter, with QEMU 7.2's engine semantics.

Rules are armed by *events*, not matched against requests directly:

- an event runs the rules registered for it, newest first, skipping those whose ``state``
  condition does not hold for the state *before* the event;
- the first inject rule an event runs clears the active list, and every inject rule it runs is
  pushed on the head of that list; an event that arms nothing leaves the list alone;
- set-state rules collect a new state, applied once after the event (the last one run wins);
- a request (read, write, write-zeroes, discard, flush-to-disk, block-status) fails with the
  errno of the first active rule that covers its offset and iotype; it is then not forwarded;
  ``once`` deletes that rule; a rule with a sector never fails a flush (a flush has no bytes);
- a breakpoint is a one-shot suspend rule: the request's thread parks until resumed.

Where the rig differs from QEMU is listed in docs/filters/blkdebug.md.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from rig.core.graph import OpenContext
from rig.core.limits import BlockLimits
from rig.core.node import BlockStatus, Iov, Node, ReqFlags
from rig.core.options import Options, printable
from rig.core.registry import register_driver
from rig.errors import ConfigError
from rig.filters.base import Filter
from rig.filters.blkdebug_config import (
    RuleSpec,
    Section,
    build_rule,
    read_config_file,
    sections_from_options,
)
from rig.filters.blkdebug_events import EVENT_SET

INT_MAX = (1 << 31) - 1


class _Rule:
    """A live rule (identity matters: ``once`` and breakpoints delete this very rule)."""

    __slots__ = ("spec",)

    def __init__(self, spec: RuleSpec) -> None:
        self.spec = spec


class _Suspended:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.resumed = threading.Event()


@register_driver("blkdebug")
class BlkdebugFilter(Filter):
    child_role = "image"
    handles_events = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = 1
        self._rules: dict[str, list[_Rule]] = {}
        self._active: list[_Rule] = []
        self._suspended: list[_Suspended] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.align = 0
        self.max_transfer = 0
        self.opt_write_zero = 0
        self.max_write_zero = 0
        self.opt_discard = 0
        self.max_discard = 0
        self.config_file: str | None = None
        #: Warnings about rules that can never fire in this graph (rig.filters.blkdebug_reach).
        self.unreachable: list[str] = []
        #: Where "blkdebug: Suspended request 'TAG'" lines go: stderr, so they never mix with a
        #: program's output under rig run/export; rig io sends them to stdout, as qemu-io does.
        self.say: Callable[[str], None] = _print

    # ------------------------------------------------------------------- open
    @classmethod
    def from_options(cls, opts: Options, ctx: OpenContext) -> Node:
        config = opts.str("config")
        legacy = opts.str("filename")
        image_filename: str | None = None
        if legacy is not None:
            config, image_filename = parse_legacy_filename(legacy)
        sections: list[Section] = read_config_file(config) if config else []
        inject = [s for s in sections if s.group == "inject-error"]
        states = [s for s in sections if s.group == "set-state"]
        inject += sections_from_options("inject-error", _sub(opts, "inject-error."))
        states += sections_from_options("set-state", _sub(opts, "set-state."))
        rules = [build_rule(s) for s in inject] + [build_rule(s) for s in states]
        node = cls(**ctx.node_kwargs())
        node.config_file = config or None
        for key in ("align", "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard",
                    "max-discard"):
            setattr(node, key.replace("-", "_"), opts.size(key))
        for key in ("take-child-perms", "unshare-child-perms"):
            _sub(opts, key + ".")
        if image_filename is not None:
            child = open_image(image_filename, ctx)
        else:
            child = ctx.open_child("image")
        try:
            node.check_limits(child.limits.request_alignment)
            node.attach_child("image", child)
            for spec in rules:
                node.add_rule(spec)
        except BaseException:
            child.close()
            raise
        node.debug_event("none")
        return node

    def check_limits(self, image_alignment: int) -> None:
        """QEMU's checks, with its message: ``Cannot meet constraints with <opt> <value>``."""
        if self.align and (self.align >= INT_MAX or self.align & (self.align - 1)):
            raise ConfigError(f"Cannot meet constraints with align {self.align}")
        align = max(self.align, image_alignment)
        for name, value, unit in (
            ("max-transfer", self.max_transfer, align),
            ("opt-write-zero", self.opt_write_zero, align),
            ("max-write-zero", self.max_write_zero, max(self.opt_write_zero, align)),
            ("opt-discard", self.opt_discard, align),
            ("max-discard", self.max_discard, max(self.opt_discard, align)),
        ):
            if value and (value >= INT_MAX or value % unit):
                raise ConfigError(f"Cannot meet constraints with {name} {value}")

    def own_limits(self) -> BlockLimits:
        return BlockLimits(
            request_alignment=self.align or 1,
            max_transfer=self.max_transfer,
            max_write_zeroes=self.max_write_zero,
            max_discard=self.max_discard,
            discard_granularity=self.opt_discard,
        )

    @property
    def write_zeroes_alignment(self) -> int:
        """QEMU's ``pwrite_zeroes_alignment`` (``opt-write-zero``): the block layer cuts a
        zero write at its multiples (rig.core.backend)."""
        return self.opt_write_zero

    @property
    def event_alignment(self) -> int:
        """The alignment whose read-modify-write QEMU would do at this node (``align``)."""
        return self.align or 1

    def describe(self) -> str:
        return self.child.describe()

    # ------------------------------------------------------------------ rules
    def add_rule(self, spec: RuleSpec) -> None:
        if spec.event not in EVENT_SET:
            raise ConfigError(f"invalid parameter value: {printable(spec.event)}")
        with self._lock:
            self._rules.setdefault(spec.event, []).insert(0, _Rule(spec))

    def _remove(self, rule: _Rule) -> None:
        rules = self._rules.get(rule.spec.event, [])
        if rule in rules:
            rules.remove(rule)
        if rule in self._active:
            self._active.remove(rule)

    def rules(self) -> list[RuleSpec]:
        with self._lock:
            return [r.spec for event_rules in self._rules.values() for r in event_rules]

    def debug_event(self, event: str) -> None:
        parked: list[_Suspended] = []
        with self._lock:
            new_state = self.state
            armed = 0
            for rule in list(self._rules.get(event, ())):
                spec = rule.spec
                if spec.state and spec.state != self.state:
                    continue
                if spec.action == "inject":
                    if armed == 0:
                        self._active.clear()
                    self._active.insert(0, rule)
                    armed += 1
                elif spec.action == "set_state":
                    new_state = spec.new_state
                else:
                    self._remove(rule)
                    req = _Suspended(spec.tag)
                    self._suspended.append(req)
                    self.say(f"blkdebug: Suspended request '{spec.tag}'")
                    parked.append(req)
            self.state = new_state
            if parked:
                self._changed.notify_all()
        for req in parked:
            req.resumed.wait()

    def rule_check(self, offset: int, length: int, iotype: str) -> None:
        with self._lock:
            for rule in self._active:
                spec = rule.spec
                if iotype in spec.iotypes and (
                    spec.offset == -1 or (length and offset <= spec.offset < offset + length)
                ):
                    break
            else:
                return
            if not spec.errno:
                return
            if spec.once:
                self._remove(rule)
            code = spec.errno
        raise OSError(code, os.strerror(code))

    # ------------------------------------------------------------ breakpoints
    def set_breakpoint(self, event: str, tag: str) -> None:
        """``break EVENT TAG``: the next request reaching EVENT parks until resumed."""
        if event not in EVENT_SET:
            raise OSError(errno.ENOENT, f"unknown blkdebug event {event!r}")
        with self._lock:
            self._rules.setdefault(event, []).insert(0, _Rule(RuleSpec("suspend", event,
                                                                       tag=tag)))

    def remove_breakpoint(self, tag: str) -> None:
        """``remove_break TAG``: delete TAG's breakpoints and resume every request parked there.

        As QEMU 7.2: when no breakpoint was left to delete (it was hit), the parked requests are
        still resumed but the call fails with ENOENT.
        """
        with self._lock:
            removed = 0
            for rules in self._rules.values():
                for rule in list(rules):
                    if rule.spec.action == "suspend" and rule.spec.tag == tag:
                        rules.remove(rule)
                        removed += 1
        while self.resume(tag):
            pass
        if not removed:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    def resume(self, tag: str) -> bool:
        """``resume TAG``: resume one request parked at TAG; False when there is none."""
        with self._lock:
            for req in self._suspended:
                if req.tag == tag:
                    self._suspended.remove(req)
                    self.say(f"blkdebug: Resuming request '{tag}'")
                    req.resumed.set()
                    return True
        return False

    def is_suspended(self, tag: str) -> bool:
        with self._lock:
            return any(r.tag == tag for r in self._suspended)

    def wait_break(self, tag: str, timeout: float | None = None) -> bool:
        """Block until a request is parked at TAG (True), or ``timeout`` passes (False)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(r.tag == tag for r in self._suspended), timeout)

    def _close(self) -> None:
        with self._lock:
            for req in self._suspended:
                req.resumed.set()
            self._suspended.clear()

    # ---------------------------------------------------------------- requests
    # Its own write events (pwritev / pwritev_zero before a write, pwritev_done after it) come
    # from Node.pwritev and Node.write_zeroes, as QEMU's bdrv_aligned_pwritev sends them.
    def _preadv(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.rule_check(offset, length, "read")
        self.child.preadv(offset, length, iov, flags)

    def _pwritev(self, offset: int, length: int, iov: Iov, flags: ReqFlags) -> None:
        self.rule_check(offset, length, "write")
        self.child.pwritev(offset, length, iov, flags)

    def _write_zeroes(self, offset: int, length: int, flags: ReqFlags) -> None:
        if length < max(self.align or 1, self.opt_write_zero):
            raise OSError(errno.ENOTSUP, "blkdebug: write_zeroes below opt-write-zero")
        self.rule_check(offset, length, "write-zeroes")
        self.child.write_zeroes(offset, length, flags)

    def _discard(self, offset: int, length: int) -> None:
        if length < (self.align or 1):  # QEMU: shorter than the request alignment only
            raise OSError(errno.ENOTSUP, "blkdebug: discard below align")
        self.rule_check(offset, length, "discard")
        self.child.discard(offset, length)

    def _flush_to_disk(self) -> None:
        self.rule_check(0, 0, "flush")

    def _block_status(self, offset: int, length: int) -> BlockStatus:
        self.rule_check(offset, length, "block-status")
        return self.child.block_status(offset, length)


def _print(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _sub(opts: Options, prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: opts.raw(k) for k in list(opts.keys()) if k.startswith(prefix)}


def parse_legacy_filename(filename: str) -> tuple[str, str]:
    """``blkdebug:CONFIG:IMAGE`` -> (CONFIG, IMAGE); split at the first colon after the prefix."""
    rest = filename[len("blkdebug:"):] if filename.startswith("blkdebug:") else filename
    config, sep, image = rest.partition(":")
    if not sep:
        raise ConfigError("blkdebug requires both config file and image path")
    return config, image


def open_image(filename: str, ctx: OpenContext) -> Node:
    from rig.core.graph import open_options

    return open_options(Options({"filename": filename}, f"{ctx.opts.path}image.",
                                ctx.inherited()))


def find_debug_node(node: Node) -> BlkdebugFilter | None:
    """QEMU's bdrv_find_debug_node: the first blkdebug node down the primary-child chain."""
    current: Node | None = node
    while current is not None and not isinstance(current, BlkdebugFilter):
        current = current.primary_child
    return current
