"""Format drivers (raw; qcow2 later): nodes over a protocol node's ``file`` child."""
