"""Node drivers on the host: ``file``, ``host_device``, ``host_cdrom`` and ``removable_loop``,
with what they share (:mod:`.posix`, QEMU's file-posix; :mod:`.removable`, the media verbs of
a drive with a tray). ``rig.drivers`` imports them, which registers them; this package imports
nothing, so that a module here can be imported alone (``rig.drivers.safety`` needs
:mod:`.posix`, and :mod:`.host_device` needs ``rig.drivers.safety``)."""
