"""Hypothesis strategies for block I/O: extents, operation mixes, workloads, cache modes.

Graph configurations and blkdebug fault rule sets live in :mod:`rig.testing.graphs` and are
re-exported here, so suites import every strategy from this module.
"""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from rig.core.cache import CACHE_MODES
from rig.testing.graphs import (
    blkdebug_rules,
    faulty_graph,
    faulty_graphs,
    graph_specs,
    memory_specs,
)
from rig.testing.ops import Discard, Flush, Op, Read, Write, WriteZeroes

#: The canonical cache mode names ("off" is an alias of "none").
CACHE_MODE_NAMES = ("writeback", "none", "writethrough", "directsync", "unsafe")

Extent = tuple[int, int]


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(value, hi))


def _delta(align: int) -> st.SearchStrategy[int]:
    """A small distance from a block boundary: mostly a few bytes, sometimes up to a block."""
    return st.one_of(st.integers(-2, 2), st.integers(-(align - 1), align - 1))


@st.composite
def _extent(draw: st.DrawFn, size: int, align: int, max_len: int, min_len: int,
            kinds: tuple[str, ...]) -> Extent:
    kind = draw(st.sampled_from(kinds))
    if kind == "aligned":
        nblocks = draw(st.integers(max(-(-min_len // align), 1), min(max_len, size) // align))
        first = draw(st.integers(0, size // align - nblocks))
        return first * align, nblocks * align
    if kind == "boundary":
        start = draw(st.integers(0, size // align)) * align + draw(_delta(align))
        start = _clamp(start, 0, size - min_len)
        want = draw(st.integers(0, max_len // align)) * align + draw(_delta(align))
        return start, _clamp(want, min_len, min(max_len, size - start))
    length = draw(st.integers(min_len, max_len))
    return draw(st.integers(0, size - length)), length


def extents(size: int, align: int = 1, max_len: int | None = None, *, min_len: int = 1,
            unaligned: bool = True) -> st.SearchStrategy[Extent]:
    """``(offset, length)`` pairs inside a device of ``size`` bytes.

    With ``align > 1`` the mix holds block-aligned extents, extents whose ends lie a few bytes
    around block boundaries (the read-modify-write edge cases) and, unless ``unaligned=False``,
    arbitrary ones. ``unaligned=False`` gives aligned extents only.
    """
    if align < 1 or align & (align - 1):
        raise InvalidArgument(f"align must be a power of two >= 1, got {align}")
    max_len = size if max_len is None else min(max_len, size)
    if min_len < 0 or max_len < min_len:
        raise InvalidArgument(f"no extent of {min_len}..{max_len} bytes fits in {size} bytes")
    kinds: list[str] = []
    if unaligned or align == 1:
        kinds.append("any")
    if align > 1 and max(min_len, 1) <= max_len // align * align:
        kinds.append("aligned")
    if align > 1 and unaligned:
        kinds.append("boundary")
    if not kinds:
        raise InvalidArgument(f"no {align}-aligned extent of {min_len}..{max_len} bytes fits")
    return _extent(size, align, max_len, min_len, tuple(kinds))


#: Default weights of :func:`workloads`: mostly writes and reads, some of everything else.
DEFAULT_MIX: Mapping[str, int] = {"read": 3, "write": 3, "write_fua": 1, "write_zeroes": 1,
                                  "discard": 1, "flush": 1}


def _op_strategies(size: int, align: int, max_len: int | None,
                   discard_align: int | None) -> dict[str, st.SearchStrategy[Op]]:
    ext = extents(size, align, max_len)
    seeds = st.integers(0, 0xFFFF)
    return {
        "read": ext.map(lambda e: Read(*e)),
        "write": st.builds(lambda e, seed: Write(e[0], e[1], seed), ext, seeds),
        "write_fua": st.builds(lambda e, seed: Write(e[0], e[1], seed, True), ext, seeds),
        "write_zeroes": st.builds(lambda e, unmap, fua: WriteZeroes(e[0], e[1], unmap, fua),
                                  ext, st.booleans(), st.booleans()),
        "discard": extents(size, discard_align or align, max_len, unaligned=False).map(
            lambda e: Discard(*e)),
        "flush": st.just(Flush()),
    }


def workloads(size: int, align: int = 1, max_len: int | None = None, *,
              mix: Mapping[str, int] | None = None, min_ops: int = 1, max_ops: int = 50,
              discard_align: int | None = None) -> st.SearchStrategy[list[Op]]:
    """Operation sequences of ``min_ops..max_ops`` ops whose kinds follow the weights in ``mix``
    (keys: ``read``, ``write``, ``write_fua``, ``write_zeroes``, ``discard``, ``flush``; a
    missing key or weight 0 leaves that kind out; default :data:`DEFAULT_MIX`). Extents are as
    in :func:`io_ops`: aligned, around block boundaries and arbitrary.
    """
    weights = dict(DEFAULT_MIX if mix is None else mix)
    strategies = _op_strategies(size, align, max_len, discard_align)
    unknown = set(weights) - set(strategies)
    if unknown:
        raise InvalidArgument(f"mix: unknown op kinds {sorted(unknown)} "
                              f"(known: {', '.join(strategies)})")
    if any(w < 0 for w in weights.values()) or not any(weights.values()):
        raise InvalidArgument(f"mix: weights must be >= 0 and not all 0, got {weights}")
    kinds = [kind for kind, w in weights.items() for _ in range(w)]
    op = st.sampled_from(kinds).flatmap(lambda kind: strategies[kind])
    return st.lists(op, min_size=min_ops, max_size=max_ops)


def io_ops(size: int, align: int = 1, max_len: int | None = None,
           discard_align: int | None = None) -> st.SearchStrategy[Op]:
    """A mix of reads, writes (plain and FUA, with pattern data), write_zeroes (with and without
    MAY_UNMAP), discards and flushes.

    Discards are aligned to ``discard_align`` (default ``align``): a backend leaves partial
    blocks of a discard alone, which a model that discards whole ranges would not match.
    """
    ext = extents(size, align, max_len)
    d_align = discard_align or align
    return st.one_of(
        ext.map(lambda e: Read(*e)),
        st.builds(lambda e, seed, fua: Write(e[0], e[1], seed, fua),
                  ext, st.integers(0, 0xFFFF), st.booleans()),
        st.builds(lambda e, unmap, fua: WriteZeroes(e[0], e[1], unmap, fua),
                  ext, st.booleans(), st.booleans()),
        extents(size, d_align, max_len, unaligned=False).map(lambda e: Discard(*e)),
        st.just(Flush()),
    )


def cache_modes(direct: bool | None = None) -> st.SearchStrategy[str]:
    """QEMU cache mode names; ``direct`` keeps only modes with (True) or without O_DIRECT."""
    names = [n for n in CACHE_MODE_NAMES if direct is None or CACHE_MODES[n].direct == direct]
    return st.sampled_from(names)


def power_cut_policies(max_seed: int = 2**32 - 1) -> st.SearchStrategy[tuple[str, int | None]]:
    """``(keep, seed)`` for the ``writecache`` filter's ``power_cut(keep, seed=seed)``:
    ``("drop-all", None)``, ``("keep-all", None)`` or ``("random", n)``; half are random."""
    fixed: st.SearchStrategy[tuple[str, int | None]] = st.sampled_from(
        [("drop-all", None), ("keep-all", None)])
    randomized: st.SearchStrategy[tuple[str, int | None]] = st.integers(0, max_seed).map(
        lambda seed: ("random", seed))
    return st.one_of(fixed, randomized)


__all__ = [
    "CACHE_MODE_NAMES", "DEFAULT_MIX", "Extent", "blkdebug_rules", "cache_modes", "extents",
    "faulty_graph", "faulty_graphs", "graph_specs", "io_ops", "memory_specs",
    "power_cut_policies", "workloads",
]


@st.composite
def _unit_limits(draw: st.DrawFn, unit: str, low: int, high: int) -> dict[str, int]:
    """Limits for one unit (``bps`` or ``iops``): none, a total, or a read/write split; each
    with an optional burst (``-max`` >= the rate, ``-max-length`` seconds)."""
    mode = draw(st.sampled_from(["none", "total", "split"]), label=f"{unit} mode")
    names = {"none": [], "total": [f"{unit}-total"],
             "split": [f"{unit}-read", f"{unit}-write"]}[mode]
    out: dict[str, int] = {}
    for name in names:
        if mode == "split" and not draw(st.booleans(), label=f"{name} set"):
            continue
        rate = draw(st.integers(low, high), label=name)
        out[name] = rate
        if draw(st.booleans(), label=f"{name} burst"):
            out[f"{name}-max"] = draw(st.integers(rate, rate * 4), label=f"{name}-max")
            length = draw(st.integers(1, 4), label=f"{name}-max-length")
            if length > 1:  # 1 second is the default; emit only what differs
                out[f"{name}-max-length"] = length
    return out


@st.composite
def throttle_limits(draw: st.DrawFn, *, max_bps: int = 64 << 20,
                    max_iops: int = 10_000) -> dict[str, int]:
    """Valid throttle limits by QEMU's option names (``{"bps-total": ..., "iops-read": ...}``),
    as ``throttling.*`` / ``--object throttle-group,x-...`` take them. Every draw passes QEMU's
    validity rules (``rig.throttle.limits.ThrottleLimits.from_mapping``); it may be empty (no
    limits at all)."""
    out = draw(_unit_limits("bps", 4096, max_bps))
    out.update(draw(_unit_limits("iops", 1, max_iops)))
    if any(k.startswith("iops-") and k.count("-") == 1 for k in out) and draw(st.booleans()):
        out["iops-size"] = draw(st.sampled_from([512, 4096, 65536]), label="iops-size")
    return out
