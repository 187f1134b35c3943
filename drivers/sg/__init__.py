"""SCSI passthrough on the host: SG_IO bindings (:mod:`.sgio`) and the ``sg`` block node
(:mod:`.node`). The commands and data they carry are built and decoded in :mod:`rig.scsi`."""
