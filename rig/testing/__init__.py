"""Hypothesis strategies, a disk model and state machines for testing block devices.

Importable without pytest; downstream rigs build their own suites on these pieces.
"""

from rig.testing.model import DiskModel, PowerCutViolation

__all__ = ["DiskModel", "PowerCutViolation"]
