"""qemu-io's command language and output, over a :class:`rig.core.backend.BlockBackend`."""
