"""Shared test setup. Capabilities and scratch devices come from the project's own pytest plugin
(``rig.fixtures``): ``@pytest.mark.rig_needs(...)`` (a missing capability is a skip that says how
to get it; ``--rig-vm`` routes kernel-module tests to the VM lab) and the ``rig_*`` fixtures
(``rig_loop``, ``rig_image``, ...), which remove what they made when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# Every property test: no per-example deadline and no "input generation is slow" failure. Both
# measure the machine, not the rig: on CI's two busy cores a plain @given test failed once with
# "Hypothesis only generated 1 valid inputs after 1.63 seconds" (tests/faults/test_log.py).
settings.register_profile("rig", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("rig")

#: tests/plugin/ tests the rig.fixtures plugin with pytester (pytest_plugins is only allowed in
#: the top-level conftest).
pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True, scope="session")
def _repro_bundles_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Repro bundles of the machines these tests break on purpose go to a temp dir, not into
    the checkout (``rig.testing.bundle`` writes to ``$RIG_REPRO_DIR``)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("RIG_REPRO_DIR", str(tmp_path_factory.mktemp("repro")))
    yield
    patch.undo()
