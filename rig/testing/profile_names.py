"""The names of the Hypothesis profiles :mod:`rig.testing.profiles` registers, and the variable
that selects one, importable without Hypothesis (the pytest plugin offers them as choices)."""

PROFILES = ("ci", "hil", "debug", "vm")
ENV = "HYPOTHESIS_PROFILE"
