"""Crash-consistency testing: the write log, its replay, and the crash states a disk may leave.

* :mod:`rig.crash.records`: what one log record says (a write, a flush, a mark ...);
* :mod:`rig.crash.logfile`: the log file format, its writer and its validating reader;
* :mod:`rig.crash.states`: the crash-state model and its enumeration (:mod:`rig.crash.cuts`
  computes it, :mod:`rig.crash.crashstate` names one state);
* :mod:`rig.crash.log_replay`: applying a log, or one crash state, onto a block backend.

The recorder node that writes logs is :mod:`rig.filters.recorder`. See docs/crash.md.
"""
