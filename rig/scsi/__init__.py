"""SCSI commands and data as field tables, sense decoding and the kernel's errno mapping.

Pure Python, no hardware: :mod:`rig.drivers.sg` sends what is built here.

- :mod:`rig.scsi.fields`: the field-table mechanism (one definition encodes and decodes);
- :mod:`rig.scsi.cdb`: CDB layouts and builders (:class:`~rig.scsi.cdb.Command`);
- :mod:`rig.scsi.responses`: INQUIRY and VPD pages, READ CAPACITY, MODE SENSE, GESN, READ TOC,
  REPORT LUNS, the UNMAP parameter list;
- :mod:`rig.scsi.sense`, :mod:`rig.scsi.asc`: sense data (fixed and descriptor) and the
  T10 texts;
- :mod:`rig.scsi.status`: status, host and driver bytes, and Linux's errno for an outcome;
- :mod:`rig.scsi.report`: sg3_utils-style text and JSON for ``rig sg``.
"""
