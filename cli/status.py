"""Exit statuses of ``rig``, and the one place where an error becomes one (README, "Exit
status").

* 0: done.
* 1: a failure: the rig could not do what was asked (an export, a device, a tool the lab needs),
  or, for the commands whose 1 is a verdict, what it checked failed (``rig replay``: the failure
  reproduced; ``rig crash check``: a state failed).
* 2: bad input: the command line (argparse's one-line errors too), a graph, option or file
  (:class:`~rig.errors.ConfigError`), a device the rig may not write
  (:class:`~rig.errors.UnsafeDeviceError`), a device or image that is not there
  (:class:`~rig.errors.DeviceNotFoundError`). For a command whose 1 is a verdict every error is
  2, as ``cmp`` and ``diff`` do, so that 1 never means anything else.

``rig io`` and ``rig sg`` keep the statuses of the tools they speak for (qemu-io, sg3_utils);
``rig run``, ``rig crash record`` and ``rig vm run`` exit with the program's status.
"""

from __future__ import annotations

import sys

from rig.errors import ConfigError, DeviceNotFoundError, UnsafeDeviceError

TYPE_CHECKING = False  # typing itself costs start-up (issue 19)
if TYPE_CHECKING:
    import argparse

OK = 0
FAILURE = 1
BAD_INPUT = 2
#: 128 + SIGINT, as a shell reports a program that Ctrl-C ended.
INTERRUPTED = 130

#: The errors that say the user must change something.
BAD_INPUT_ERRORS: tuple[type[Exception], ...] = (ConfigError, UnsafeDeviceError,
                                                 DeviceNotFoundError)


def one_is_a_verdict(parser: argparse.ArgumentParser) -> None:
    """Say that the command of ``parser`` exits 1 when what it checked failed (so every error
    it lets out is :data:`BAD_INPUT`)."""
    parser.set_defaults(rig_verdict=True)


def status_of(error: Exception, *, verdict: bool = False) -> int:
    """The exit status for ``error`` (a RigError or OSError a command let out); ``verdict``: the
    command's 1 means what it checked failed, so every error is :data:`BAD_INPUT`."""
    if verdict or isinstance(error, BAD_INPUT_ERRORS):
        return BAD_INPUT
    return FAILURE


def report(error: Exception, args: argparse.Namespace) -> int:
    """Print ``rig CMD: message`` (one line; an OSError's strerror) on stderr for an error the
    command of ``args`` let out; the exit status."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    print(f"{getattr(args, 'rig_prog', 'rig')}: {text}", file=sys.stderr)
    return status_of(error, verdict=getattr(args, "rig_verdict", False))
