"""The filter contract (rig/core/node.py, rig/filters/base.py), for every registered filter.

* No filter overrides a public verb (:data:`rig.core.node.PUBLIC_VERBS`): the per-node steps
  stay in :class:`~rig.core.node.Node`, filters implement the ``_`` hooks.
* A filter that says it changes data (``modifies_data``) overrides every data verb
  (:attr:`Filter.DATA_VERBS`), so none of them reaches the child unseen.
* With no rules and neutral options a filter over a memory node is byte-for-byte transparent:
  the lockstep machine drives it beside a bare memory node and every read must agree.

The filters are found in the driver registry, so a new one is held to this without being
listed here; one that needs options to open at all gets its neutral ones in ``NEUTRAL``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from rig.core.backend import BlockBackend
from rig.core.node import PUBLIC_VERBS, Node
from rig.core.registry import drivers
from rig.filters.base import Filter
from rig.testing.machines import LockstepMachine

SIZE = 64 * 1024

#: Every registered driver that is a filter (one child, everything forwarded by default).
FILTERS: dict[str, type[Filter]] = {
    name: cls for name, cls in sorted(drivers().items()) if issubclass(cls, Filter)
}

#: Options a filter needs to open that leave it neutral (no limits, nowhere to fail).
NEUTRAL: dict[str, Callable[[Path], dict[str, Any]]] = {
    "recorder": lambda tmp: {"log": str(tmp / "contract.wlog")},
    "throttle": lambda tmp: {"limits": {"bps-total": 0}},  # 0: unlimited, as in QEMU
}


#: Filters that cannot be transparent over a memory node, and where they are tested instead.
NOT_TRANSPARENT: dict[str, str] = {
    # QEMU's too: it opens over a format that compresses (qcow2) and a compressed write to an
    # allocated cluster fails
    "compress": "tests/formats/test_compress_filter.py",
}


def no_options(tmp: Path) -> dict[str, Any]:
    return {}


def test_the_registry_has_the_filters() -> None:
    """Discovery works (an empty parametrization would pass vacuously)."""
    assert {"blkdebug", "copy-on-read", "faults", "overlay", "raw", "recorder", "throttle",
            "writecache"} <= set(FILTERS)


@pytest.mark.parametrize("name", FILTERS)
def test_no_filter_overrides_a_public_verb(name: str) -> None:
    cls = FILTERS[name]
    below_node = cls.__mro__[:cls.__mro__.index(Node)]
    overridden = [f"{klass.__qualname__}.{verb}" for klass in below_node for verb in PUBLIC_VERBS
                  if verb in vars(klass)]
    assert not overridden, (f"{name} overrides public verbs {overridden}: implement the driver "
                            "hooks instead (rig/core/node.py)")


@pytest.mark.parametrize("name", [n for n, cls in FILTERS.items() if cls.modifies_data])
def test_a_data_modifying_filter_handles_every_data_verb(name: str) -> None:
    cls = FILTERS[name]
    forwarded = [verb for verb in Filter.DATA_VERBS if getattr(cls, verb) is getattr(Filter, verb)]
    assert not forwarded, f"{name} changes data but forwards {forwarded} unseen"


@pytest.mark.parametrize("name", [n for n in FILTERS if n not in NOT_TRANSPARENT])
def test_a_neutral_filter_is_transparent(name: str, tmp_path: Path) -> None:
    cls = FILTERS[name]
    memory = {"driver": "memory", "size": SIZE}
    spec = {"driver": name, cls.child_role: memory, **NEUTRAL.get(name, no_options)(tmp_path)}

    class Transparent(LockstepMachine):
        max_len = 3 * 4096 + 100

        def make_backends(self, data: st.DataObject) -> Sequence[BlockBackend]:
            return [self.open_graph(memory), self.open_graph(spec)]

    run_state_machine_as_test(Transparent, settings=settings(
        max_examples=6, stateful_step_count=12, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow]))
