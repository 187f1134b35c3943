"""QMP's wire shapes: the greeting, a command's ``return`` or ``error`` (with its ``id``), an
event with its ``timestamp``, and the checks QEMU makes on a message before it runs a command.

The texts of the errors are QEMU 7.2's (compared with qemu-storage-daemon), so a client that
matches on them behaves the same.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

#: The version the greeting claims: the QEMU whose commands and shapes the rig follows.
QEMU_VERSION = {"major": 7, "minor": 2, "micro": 0}
GENERIC = "GenericError"
NOT_FOUND = "CommandNotFound"
DEVICE_NOT_FOUND = "DeviceNotFound"
_MEMBERS = frozenset({"execute", "arguments", "id"})


class QmpError(Exception):
    """A command failed: QMP error ``class`` and ``desc``."""

    def __init__(self, desc: str, error_class: str = GENERIC) -> None:
        super().__init__(desc)
        self.desc = desc
        self.error_class = error_class


@dataclass(frozen=True)
class Request:
    """One command: its name, its arguments and the client's ``id`` (any JSON value)."""

    name: str
    arguments: dict[str, Any]
    id: Any = None
    has_id: bool = False


def greeting(package: str) -> dict[str, Any]:
    """The first message on a connection (no out-of-band capability is offered)."""
    return {"QMP": {"version": {"qemu": dict(QEMU_VERSION), "package": package},
                    "capabilities": []}}


def parse_request(text: bytes) -> Request:
    """One message's JSON text as a :class:`Request`; :class:`QmpError` as QEMU words it."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise QmpError(f"JSON parse error, {_reason(e)}") from None
    if not isinstance(value, dict):
        raise QmpError("QMP input must be a JSON object")
    for key in value:
        if key not in _MEMBERS:
            raise QmpError(f"QMP input member '{key}' is unexpected")
    name = value.get("execute")
    has_id = "id" in value
    if name is None:
        raise QmpError("QMP input lacks member 'execute'")
    if not isinstance(name, str):
        raise QmpError("QMP input member 'execute' must be a string")
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        raise QmpError("QMP input member 'arguments' must be an object")
    return Request(name, arguments, value.get("id"), has_id)


def _reason(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text[:200]


def reply(request: Request | None, result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"return": result}
    if request is not None and request.has_id:
        out["id"] = request.id
    return out


def error_reply(request: Request | None, err: QmpError) -> dict[str, Any]:
    out: dict[str, Any] = {"error": {"class": err.error_class, "desc": err.desc}}
    if request is not None and request.has_id:
        out["id"] = request.id
    return out


def event(name: str, data: dict[str, Any] | None = None,
          when: float | None = None) -> dict[str, Any]:
    """An event as QEMU sends it: ``timestamp`` (wall clock, seconds and microseconds),
    ``event`` and, if any, ``data``."""
    now = time.time() if when is None else when
    seconds = int(now)
    out: dict[str, Any] = {"timestamp": {"seconds": seconds,
                                         "microseconds": int((now - seconds) * 1e6)},
                           "event": name}
    if data is not None:
        out["data"] = data
    return out


def encode(message: dict[str, Any]) -> bytes:
    """One message on the wire: compact JSON and a CRLF, as QEMU writes them."""
    return json.dumps(message, separators=(", ", ": ")).encode() + b"\r\n"
