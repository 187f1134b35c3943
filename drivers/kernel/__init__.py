"""Kernel test devices, made by loading a module or through device-mapper: :mod:`.kmod`
(scsi_debug, null_blk) and :mod:`.dm` (dm-flakey, dm-delay). They need root and the modules,
which the VM lab's guest has (``docs/vm-lab.md``); the fixtures in ``rig.fixtures`` use them."""
