"""The rig's own exceptions.

Data-path failures (injected or real) are plain ``OSError`` with the real errno, so code under
test cannot tell them apart. Everything the rig itself refuses derives from :class:`RigError`.
"""

from __future__ import annotations

import functools
import re


@functools.cache
def _control() -> re.Pattern[str]:  # compiled when first used (start-up, issue 19)
    return re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``, ``\\x1b``), so
    a message that quotes a user's value (a file name with a newline, an escape sequence) stays
    one line on a terminal."""
    return _control().sub(lambda m: repr(m.group())[1:-1], text)


class RigError(Exception):
    """Base of every error the rig raises on its own behalf (not data-path OSErrors). Its
    message is always one line (:func:`one_line`)."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class ConfigError(RigError, ValueError):
    """A graph, option, CLI argument or config file is wrong. The message names the key."""


class RegistrationError(RigError):
    """A driver name is unknown or registered twice."""


class UnsafeDeviceError(RigError, PermissionError):
    """The rig refuses to write to a device (mounted, held, or not explicitly allowed)."""


class DeviceNotFoundError(RigError, FileNotFoundError):
    """A device or image named by the user does not exist."""


class StateError(RigError):
    """An operation was asked of an object in the wrong state (closed node, detached loop)."""
