"""rig.qmp.dispatcher: negotiation, the checks QEMU makes on a message and its arguments (with
QEMU 7.2's texts, taken from qemu-storage-daemon), ``id`` echoed, and no input that raises."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.qmp.dispatcher import Dispatcher, Session
from rig.qmp.framing import Garbage, Splitter
from rig.qmp.protocol import encode, event
from rig.qmp.schema import Param
from tests.fuzzing import fuzz


def make() -> tuple[Dispatcher, Session]:
    d = Dispatcher()
    d.add("echo", lambda flag=False, n=0: {"flag": flag, "n": n}, Param("flag", "boolean"),
          Param("n", "integer"))
    d.add("need", lambda what: what, Param("what", "string", required=True))
    d.add("boom", lambda: 1 // 0)
    return d, Session()


def ask(d: Dispatcher, s: Session, text: str | bytes) -> dict[str, Any]:
    return d.handle(text.encode() if isinstance(text, str) else text, s)


def test_negotiation_comes_first_and_once() -> None:
    d, s = make()
    assert ask(d, s, '{"execute": "echo"}') == {"error": {
        "class": "CommandNotFound",
        "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
    assert ask(d, s, '{"execute": "qmp_capabilities", "id": 1}') == {"return": {}, "id": 1}
    assert ask(d, s, '{"execute": "qmp_capabilities"}')["error"]["desc"] == \
        "Capabilities negotiation is already complete, command ignored"
    assert ask(d, s, '{"execute": "echo", "arguments": {"n": 3}, "id": "x"}') == \
        {"return": {"flag": False, "n": 3}, "id": "x"}


@pytest.mark.parametrize(("text", "cls", "desc"), [
    ("nonsense", "GenericError", "JSON parse error, "),
    ("[1]", "GenericError", "QMP input must be a JSON object"),
    ('{"foo": 1}', "GenericError", "QMP input member 'foo' is unexpected"),
    ('{"execute": 1}', "GenericError", "QMP input member 'execute' must be a string"),
    ('{"arguments": {}}', "GenericError", "QMP input lacks member 'execute'"),
    ('{"execute": "nope"}', "CommandNotFound", "The command nope has not been found"),
    ('{"execute": "echo", "arguments": {"bogus": 1}}', "GenericError",
     "Parameter 'bogus' is unexpected"),
    ('{"execute": "echo", "arguments": {"flag": "yes"}}', "GenericError",
     "Invalid parameter type for 'flag', expected: boolean"),
    ('{"execute": "echo", "arguments": {"n": true}}', "GenericError",
     "Invalid parameter type for 'n', expected: integer"),
    ('{"execute": "echo", "arguments": []}', "GenericError",
     "QMP input member 'arguments' must be an object"),
    ('{"execute": "need"}', "GenericError", "Parameter 'what' is missing"),
    ('{"execute": "boom"}', "GenericError", "internal error in boom: ZeroDivisionError"),
])
def test_bad_messages_get_qemus_errors(text: str, cls: str, desc: str) -> None:
    d, s = make()
    s.negotiated = True
    err = ask(d, s, text)["error"]
    assert err["class"] == cls and err["desc"].startswith(desc)


def test_garbage_from_the_framing_is_a_parse_error() -> None:
    d, s = make()
    assert d.handle(Garbage("message longer than 10 bytes"), s) == {"error": {
        "class": "GenericError", "desc": "JSON parse error, message longer than 10 bytes"}}


def test_events_and_the_wire_format() -> None:
    ev = event("STOP", when=1700000000.25)
    assert ev == {"timestamp": {"seconds": 1700000000, "microseconds": 250000},
                  "event": "STOP"}
    assert encode(ev).endswith(b"\r\n") and json.loads(encode(ev)) == ev


@given(st.binary(max_size=300))
@fuzz
def test_no_input_raises_and_every_reply_is_return_or_error(blob: bytes) -> None:
    d, s = make()
    for item in Splitter().feed(blob + b"\n"):
        out = d.handle(item, s)
        assert set(out) - {"id"} in ({"return"}, {"error"})
        json.dumps(out)
