"""Hypothesis strategies for node graphs and blkdebug fault rule sets.

Every graph these draw opens (``rig.open(spec)``): the limits each layer adds respect the ones
below it (``max-transfer`` is a multiple of the alignment underneath, as blkdebug checks). Rule
sets are blkdebug's options form (``{"inject-error": [...], "set-state": [...]}``), the shape a
``{"driver": "blkdebug", ...}`` node takes in a graph dict, so a drawn rule set can be printed,
stored in a repro bundle and pasted into ``rig io --image-opts``.

Throttle limits are not here yet: the throttle filter does not exist. They belong next to these
strategies when it lands.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from rig.filters.blkdebug_events import IOTYPES

Spec = dict[str, Any]
RuleSet = dict[str, list[dict[str, Any]]]

#: Events the rig's own layers emit (docs/filters/blkdebug.md), so rules on them can fire.
EMITTED_EVENTS = ("read_aio", "write_aio", "pwritev", "pwritev_zero", "pwritev_done",
                  "flush_to_os", "flush_to_disk")
#: errnos worth injecting: what real disks and their drivers return.
FAULT_ERRNOS = (errno.EIO, errno.ENOSPC, errno.EROFS, errno.ETIMEDOUT, errno.ENOMEDIUM,
                errno.EREMOTEIO, errno.ENOTSUP)
#: The filter layers :func:`graph_specs` stacks (child role of each).
LAYERS = {"raw": "file", "blkdebug": "image"}
_MiB = 1 << 20


def _check_size(size: int, multiple: int) -> None:
    if size <= 0 or size % multiple:
        raise InvalidArgument(f"size must be a positive multiple of {multiple}, got {size}")


def memory_specs(size: int = _MiB, block_sizes: Sequence[int] = (1, 512, 4096),
                 max_transfers: Sequence[int] = (0, 1, 2, 16)) -> st.SearchStrategy[Spec]:
    """``memory`` leaf nodes of ``size`` bytes: a logical block size from ``block_sizes`` and a
    ``max-transfer`` of ``k`` times the larger of 4 KiB and the block size, for ``k`` in
    ``max_transfers`` (0: unlimited)."""
    for bs in block_sizes:
        if bs < 1 or bs & (bs - 1):
            raise InvalidArgument(f"block sizes must be powers of two, got {bs}")
        _check_size(size, bs)

    def build(lbs: int, k: int) -> Spec:
        spec: Spec = {"driver": "memory", "size": size, "logical-block-size": lbs}
        if k:
            spec["max-transfer"] = k * max(lbs, 4096)
        return spec

    return st.builds(build, st.sampled_from(list(block_sizes)),
                     st.sampled_from(list(max_transfers)))


def _alignment(spec: Mapping[str, Any]) -> int:
    """The request alignment a spec's node will have (enough for the specs drawn here)."""
    own = int(spec.get("logical-block-size", 0) or spec.get("align", 0) or 1)
    child = next((spec[role] for role in ("file", "image") if role in spec), None)
    return max(own, _alignment(child)) if isinstance(child, Mapping) else own


@st.composite
def _blkdebug_layer(draw: st.DrawFn, child: Spec, rules: st.SearchStrategy[RuleSet] | None) -> Spec:
    # Every max-transfer in a stack must be a multiple of the largest alignment anywhere in it
    # (the merged limits take the largest alignment and the smallest max-transfer): 4 KiB
    # multiples are, since no layer aligns to more unless its leaf does.
    unit = max(4096, _alignment(child))
    align = draw(st.sampled_from([0, 512, 4096]))
    layer: Spec = {"driver": "blkdebug", "image": child}
    if align:
        layer["align"] = align
    k = draw(st.sampled_from([0, 1, 4, 16]))
    if k:
        layer["max-transfer"] = k * unit
    if rules is not None:
        layer.update(draw(rules))
    return layer


@st.composite
def _graph(draw: st.DrawFn, leaves: st.SearchStrategy[Spec], max_layers: int,
           layers: tuple[str, ...], rules: st.SearchStrategy[RuleSet] | None) -> Spec:
    spec = draw(leaves)
    for kind in draw(st.lists(st.sampled_from(layers), max_size=max_layers)):
        if kind == "blkdebug":
            spec = draw(_blkdebug_layer(spec, rules))
        else:
            spec = {"driver": kind, LAYERS[kind]: spec}
    return spec


def graph_specs(leaves: st.SearchStrategy[Spec] | None = None, *, size: int = _MiB,
                max_layers: int = 3, layers: Sequence[str] = ("raw", "blkdebug"),
                rules: st.SearchStrategy[RuleSet] | None = None) -> st.SearchStrategy[Spec]:
    """Graph dicts: a leaf from ``leaves`` (default :func:`memory_specs` of ``size`` bytes) under
    up to ``max_layers`` filter layers drawn from ``layers`` (``raw``, ``blkdebug`` with its
    ``align`` and ``max-transfer``). Without ``rules`` the blkdebug layers inject nothing, so
    every graph must read back what was written: a lockstep machine over them tests the
    layers' alignment, splitting and read-modify-write. ``rules`` (e.g. :func:`blkdebug_rules`)
    arms each blkdebug layer.
    """
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise InvalidArgument(f"unknown layers {sorted(unknown)} (known: {', '.join(LAYERS)})")
    if max_layers < 0:
        raise InvalidArgument(f"max_layers must be >= 0, got {max_layers}")
    return _graph(leaves if leaves is not None else memory_specs(size), max_layers,
                  tuple(layers), rules)


def _inject_rule(events: Sequence[str], errnos: Sequence[int], sectors: int | None,
                 max_state: int) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {
        "once": st.booleans(),
        "immediately": st.booleans(),
        "iotype": st.sampled_from(IOTYPES[:-1]),
    }
    if sectors:
        optional["sector"] = st.integers(0, sectors - 1)
    if max_state > 1:
        optional["state"] = st.integers(1, max_state)
    return st.fixed_dictionaries(
        {"event": st.sampled_from(list(events)), "errno": st.sampled_from(list(errnos))},
        optional=optional,
    )


def _set_state_rule(events: Sequence[str], max_state: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "event": st.sampled_from(list(events)),
        "state": st.integers(1, max_state),
        "new_state": st.integers(1, max_state),
    })


@st.composite
def _rule_set(draw: st.DrawFn, inject: st.SearchStrategy[dict[str, Any]],
              set_state: st.SearchStrategy[dict[str, Any]] | None, min_rules: int,
              max_rules: int) -> RuleSet:
    n_inject = draw(st.integers(min_rules, max_rules))
    out: RuleSet = {"inject-error": [draw(inject) for _ in range(n_inject)]}
    if set_state is not None:
        n_state = draw(st.integers(0, max_rules - n_inject))
        if n_state:
            out["set-state"] = [draw(set_state) for _ in range(n_state)]
    if not out["inject-error"]:
        del out["inject-error"]
    return out


def blkdebug_rules(*, size: int | None = None, events: Sequence[str] = EMITTED_EVENTS,
                   errnos: Sequence[int] = FAULT_ERRNOS, min_rules: int = 1, max_rules: int = 3,
                   max_state: int = 1) -> st.SearchStrategy[RuleSet]:
    """blkdebug rule sets: ``min_rules..max_rules`` rules, at least ``min_rules`` of them
    ``inject-error`` (event, errno, and optionally once, immediately, iotype, a sector inside
    ``size`` bytes). With ``max_state > 1`` rules also carry state conditions and
    ``set-state`` transitions between states ``1..max_state``.
    """
    if not events:
        raise InvalidArgument("events must not be empty")
    if not 0 <= min_rules <= max_rules:
        raise InvalidArgument(f"need 0 <= min_rules <= max_rules, got {min_rules}, {max_rules}")
    if max_state < 1:
        raise InvalidArgument(f"max_state must be >= 1, got {max_state}")
    sectors = size // 512 if size else None
    set_state = _set_state_rule(events, max_state) if max_state > 1 else None
    return _rule_set(_inject_rule(events, errnos, sectors, max_state), set_state, min_rules,
                     max_rules)


def faulty_graph(leaf: Spec, rules: Mapping[str, Any]) -> Spec:
    """``raw`` over ``blkdebug`` (armed with ``rules``) over ``leaf``: the raw format emits the
    ``read_aio``/``write_aio`` events most rules wait for."""
    return {"driver": "raw", "file": {"driver": "blkdebug", "image": leaf, **rules}}


def faulty_graphs(leaves: st.SearchStrategy[Spec] | None = None, *, size: int = _MiB,
                  rules: st.SearchStrategy[RuleSet] | None = None) -> st.SearchStrategy[Spec]:
    """:func:`faulty_graph` with a leaf from ``leaves`` and rules from ``rules`` (defaults:
    :func:`memory_specs` and :func:`blkdebug_rules` for ``size`` bytes)."""
    leaf = leaves if leaves is not None else memory_specs(size)
    return st.builds(faulty_graph, leaf, rules if rules is not None else blkdebug_rules(size=size))

