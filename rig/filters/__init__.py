"""Filter nodes: one file per filter. Importing this package registers them."""

from rig.filters.base import Filter

__all__ = ["Filter"]
