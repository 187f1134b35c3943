"""Settings for the fuzz properties: garbage thrown at every parser the rig has.

``RIG_FUZZ`` picks the profile: ``ci`` (default; a few hundred inputs per property, so the whole
fuzz set stays within seconds of the suite's time) or ``long`` (10,000 inputs per property; run
locally with ``RIG_FUZZ=long .venv/bin/pytest -m fuzz``, about 10^5 inputs in all).

Each property asserts the same contract: the parser returns, or raises the rig's own error type
(:class:`rig.errors.RigError`) with a one-line message; never another exception, never a hang.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from rig.errors import RigError

EXAMPLES = {"ci": 200, "long": 10_000}


def profile() -> str:
    name = os.environ.get("RIG_FUZZ", "") or "ci"
    if name not in EXAMPLES:
        raise ValueError(f"RIG_FUZZ: unknown profile {name!r} (one of: {', '.join(EXAMPLES)})")
    return name


#: Decorate a fuzz property with this (after ``@given``).
fuzz = settings(max_examples=EXAMPLES[profile()], deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


def one_line(e: BaseException) -> None:
    """Assert the error is the rig's own and its message is one non-empty line."""
    assert isinstance(e, RigError), f"{type(e).__name__}: {e}"
    text = str(e)
    assert text.strip(), f"{type(e).__name__} with an empty message"
    assert "\n" not in text.strip(), f"a multi-line message: {text!r}"
