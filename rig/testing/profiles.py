"""Hypothesis settings profiles, selected by the ``HYPOTHESIS_PROFILE`` environment variable.

* ``ci`` (default): fast enough for every push: 50 examples of 30 steps, no deadline (real
  devices have jittery latency).
* ``hil``: real hardware: fewer, longer runs (20 examples of 100 steps); slow data generation
  is not a health problem there.
* ``debug``: a handful of examples, printing every step.
* ``vm``: inside the VM lab's guest, where Python runs under QEMU's TCG about ten times slower:
  10 examples of 20 steps, so a real-device state machine takes seconds, not minutes.

Nothing is loaded globally on import; a suite calls :func:`load` (e.g. in its conftest) or passes
:func:`selected` to ``run_state_machine_as_test``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Verbosity, settings
from hypothesis.errors import InvalidArgument

from rig.testing.profile_names import ENV, PROFILES

settings.register_profile("ci", max_examples=50, stateful_step_count=30, deadline=None)
settings.register_profile("hil", max_examples=20, stateful_step_count=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("vm", max_examples=10, stateful_step_count=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("debug", max_examples=10, stateful_step_count=30, deadline=None,
                          verbosity=Verbosity.verbose)


def selected_name() -> str:
    return os.environ.get(ENV, "") or "ci"


def selected() -> settings:
    """The settings of the profile ``HYPOTHESIS_PROFILE`` names (``ci`` when unset)."""
    name = selected_name()
    try:
        return settings.get_profile(name)
    except InvalidArgument:
        raise ValueError(f"{ENV}: unknown profile {name!r} "
                         f"(registered by rig.testing: {', '.join(PROFILES)})") from None


def load() -> None:
    """Make the selected profile Hypothesis's default for this process."""
    selected()
    settings.load_profile(selected_name())
