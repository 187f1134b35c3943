"""Foreign calls as data: a table per library and one per ioctl set, one loader, one errno
checker. :mod:`.calls` (the loader, ``bind``, and ``checked``, with the EINTR policy: retried),
:mod:`.ioctls` (every ioctl number and struct), :mod:`.libc` and :mod:`.libfuse` (each library's
functions as ``name -> (argtypes, restype)``)."""
