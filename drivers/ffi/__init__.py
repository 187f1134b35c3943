"""Foreign calls as data: every ioctl (:mod:`.ioctls`) and every C function (:mod:`.libc`) the
host drivers call, declared as tables."""
