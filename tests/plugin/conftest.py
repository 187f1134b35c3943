"""pytester runs pytest inside this process and afterwards forgets every module the inner run
imported. The rig's registries outlive that (a re-imported driver module would register its
driver twice), so everything is imported here, before any inner run."""

import rig.cli.main
import rig.drivers.lab.labdisk
import rig.fixtures
import rig.testing.machines
import rig.testing.strategies
from rig.core.registry import load_plugins

load_plugins()

__all__ = ["rig"]
