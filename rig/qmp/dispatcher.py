"""The command table and the one place a message becomes a reply.

A :class:`Dispatcher` holds the commands (name, parameters, handler). :meth:`Dispatcher.handle`
takes one framed message from one client (:class:`Session`: has it negotiated, which events it
asked for) and returns the reply, never raising: a handler's :class:`QmpError` is an ``error``
reply, and a bug in a handler is a ``GenericError`` naming it, so no input stops the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rig.errors import RigError
from rig.qmp.framing import Garbage
from rig.qmp.protocol import (
    NOT_FOUND,
    QmpError,
    Request,
    error_reply,
    parse_request,
    reply,
)
from rig.qmp.schema import Param, check_arguments


@dataclass
class Session:
    """One client's state."""

    negotiated: bool = False
    #: Optional event families this client asked for (``x-rig-watch-faults``).
    watching: set[str] = field(default_factory=set)


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    params: tuple[Param, ...] = ()
    #: Handlers that need the client's :class:`Session` get it as ``session=``.
    wants_session: bool = False


class Dispatcher:
    """Commands by name; ``qmp_capabilities`` and ``query-commands`` are built in."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}
        self._lock = threading.Lock()
        self.add("qmp_capabilities", self._capabilities, Param("enable", "array"),
                 wants_session=True)
        self.add("query-commands", self._query_commands)

    def add(self, name: str, handler: Handler, *params: Param,
            wants_session: bool = False) -> None:
        if name in self._commands:
            raise ValueError(f"QMP command {name!r} is defined twice")
        self._commands[name] = Command(name, handler, params, wants_session)

    def names(self) -> list[str]:
        return sorted(self._commands)

    def handle(self, message: bytes | Garbage, session: Session) -> dict[str, Any]:
        request: Request | None = None
        try:
            if isinstance(message, Garbage):
                raise QmpError(f"JSON parse error, {message.reason}")
            request = parse_request(message)
            return reply(request, self._run(request, session))
        except QmpError as e:
            return error_reply(request, e)

    def _run(self, request: Request, session: Session) -> Any:
        name = request.name
        if not session.negotiated and name != "qmp_capabilities":
            raise QmpError("Expecting capabilities negotiation with 'qmp_capabilities'",
                           NOT_FOUND)
        command = self._commands.get(name)
        if command is None:
            raise QmpError(f"The command {name} has not been found", NOT_FOUND)
        args = check_arguments(command.params, request.arguments)
        if command.wants_session:
            args["session"] = session
        try:
            return command.handler(**args)
        except QmpError:
            raise
        except (RigError, OSError) as e:
            raise QmpError(_one_line(e)) from None
        except Exception as e:  # a bug: said in the reply, the server goes on
            raise QmpError(f"internal error in {name}: {type(e).__name__}: "
                           f"{_one_line(e)}") from None

    def _capabilities(self, session: Session, enable: list[Any] | None = None) -> Any:
        if session.negotiated:
            raise QmpError("Capabilities negotiation is already complete, command ignored",
                           NOT_FOUND)
        for cap in enable or ():
            raise QmpError(f"Capability '{cap}' not available" if isinstance(cap, str)
                           else "Invalid parameter type for 'enable', expected: string")
        session.negotiated = True
        return {}

    def _query_commands(self) -> Any:
        return [{"name": n} for n in self.names()]


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
