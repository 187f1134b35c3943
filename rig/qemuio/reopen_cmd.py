"""qemu-io's ``reopen`` (issue 19, issue 16 part 5): change the open image's read-only flag
(``-r``/``-w``), cache mode (``-c``) and node options (``-o``), with qemu-io 7.2's checks and
messages.

QEMU reopens the graph in place (bdrv_reopen). The rig opens it again from what it was opened
from (:attr:`Session.opened`) with the changes applied: everything written is flushed first and
the old graph is closed before the new one opens, so no two graphs hold the image's metadata at
once. If the new graph does not open, the old options open again and the error is printed.
Options that cannot change (``driver``, ``node-name`` of any node) are refused up front, as QEMU
does, as are values that are not on/off for the flags QEMU parses as booleans.
"""

from __future__ import annotations

import contextlib
import errno

from rig.core.cache import CACHE_MODES
from rig.core.options import parse_keyval
from rig.errors import ConfigError, RigError
from rig.qemuio.getopt import Parsed
from rig.qemuio.session import Session, image_node
from rig.qemuio.table import COMMANDS, command

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    from typing import Any

#: Options QEMU parses as booleans before it reopens anything (bdrv_reopen_prepare).
_BOOLS = ("read-only", "cache.direct", "cache.no-flush", "auto-read-only")
_BOOL_WORDS = ("on", "off", "yes", "no", "true", "false", "y", "n")
#: Options QEMU cannot change on an open node.
_FIXED = ("driver", "node-name")


def _error(s: Session, msg: str, ret: int = -errno.EINVAL) -> int:
    s.err.write(f"{s.prog}: {msg}\n")
    return ret


def _node_at(root: Any, path: list[str]) -> Any:
    node = root
    for role in path:
        node = node.children.get(role) if node is not None else None
    return node


def _current(node: Any, what: str) -> str:
    if what == "driver":
        return str(node.driver_name)
    return str(node.node_name)


def _join(new: dict[str, str], old_extras: list[dict[str, str]]) -> dict[str, str]:
    """The options after a reopen: the new ones, then the old ones not overridden (QEMU's
    bdrv_join_options, with qcow2's rules: a new overlap-check option drops every old one, a
    new cache-size drops the old l2 and refcount cache sizes, and an old cache-size goes when
    any cache size is set and cache-size is not new)."""
    old: dict[str, str] = {}
    for extra in old_extras:
        old.update(extra)
    if any(k.startswith("overlap-check") for k in new):
        old = {k: v for k, v in old.items() if not k.startswith("overlap-check")}
    if "cache-size" in new:
        old.pop("l2-cache-size", None)
        old.pop("refcount-cache-size", None)
    merged = {**old, **new}
    caches = ("cache-size", "l2-cache-size", "refcount-cache-size")
    if "cache-size" not in new and any(k in merged for k in caches):
        merged.pop("cache-size", None)
    return merged


def _keyval(flat: dict[str, str]) -> str:
    return ",".join(f"{k}={v.replace(',', ',,')}" for k, v in flat.items())


@command("reopen", "[(-r|-w)] [-c cache] [-o options]", "reopens an image with new options",
         argmin=0, argmax=-1, opts="c:o:rw")
def reopen_cmd(s: Session, p: Parsed) -> int:
    blk = s.blk
    assert blk is not None
    if s.opened is None:  # an image opened by a caller of the session, not by open/-c
        return _error(s, "reopen: the image's open options are not known", -errno.ENOTSUP)
    path, opts = s.opened
    read_only = blk.read_only
    cache = opts.cache
    has_rw = has_cache = False
    changes: dict[str, str] = {}
    for o, a in p.opts:
        if o == "c":
            if a not in CACHE_MODES:
                return _error(s, f"Invalid cache option: {a}")
            cache, has_cache = a, True
        elif o == "o":
            try:
                changes.update(parse_keyval(a))
            except ConfigError as e:
                return _error(s, str(e))
        elif o in "rw":
            if has_rw:
                return _error(s, "Only one -r/-w option may be given")
            read_only, has_rw = o == "r", True
    if p.args:
        s.out.write(f"reopen {COMMANDS['reopen'].args} -- {COMMANDS['reopen'].oneline}\n")
        return -errno.EINVAL
    if "read-only" in changes and has_rw:
        return _error(s, "Cannot set both -r/-w and 'read-only'")
    if ("cache.direct" in changes or "cache.no-flush" in changes) and has_cache:
        return _error(s, "Cannot set both -c and the cache options")
    for key, value in changes.items():
        *where, name = key.split(".")
        if name in _FIXED:
            node = _node_at(image_node(blk.root), where)
            if node is not None and value != _current(node, name):
                return _error(s, f"Cannot change the option '{name}'")
        if key in _BOOLS and value not in _BOOL_WORDS:
            return _error(s, f"Parameter '{key}' expects 'on' or 'off'")
    if "read-only" in changes:
        read_only = changes["read-only"] in ("on", "yes", "true", "y")
    merged = _join(changes, [parse_keyval(e) for e in opts.extra])
    again = opts.replace(read_only=read_only, cache=cache,
                         extra=(_keyval(merged),) if merged else ())
    if again.fmt is None and not again.image_opts and not (path or "").startswith("json:"):
        again = again.replace(fmt=image_node(blk.root).driver_name)  # no probe, no warning
    probed = getattr(image_node(blk.root), "probed", False)
    s.reap(wait=True)
    with contextlib.suppress(OSError):  # a failed flush is reported by the next flush
        blk.flush()
    blk.close()
    s.blk = None
    try:
        s.blk = s.opener(path, again)
    except (RigError, OSError) as e:
        msg = str(e) if isinstance(e, RigError) else (e.strerror or str(e))
        s.blk = s.opener(path, opts.replace(fmt=again.fmt))  # the image as it was
        return _error(s, " ".join(msg.split()))
    if probed:
        image_node(s.blk.root).probed = True
    s.opened = (path, again)
    return 0
