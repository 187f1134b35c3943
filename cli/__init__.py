"""The ``rig`` command line."""
