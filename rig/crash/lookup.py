"""A crash state named on a command line, looked up in a log's states (``rig crash
materialize STATE``, ``rig crash check --state``)."""

from __future__ import annotations

from rig.crash.crashstate import CrashState, shown_name
from rig.crash.cuts import check_state
from rig.crash.states import CrashStates
from rig.errors import ConfigError


def parse_state(states: CrashStates, text: str, what: str) -> CrashState:
    """The state named ``text`` (as ``rig crash states`` prints it) at one of the cuts of
    ``states``, checked against the log (its records in flight there, its torn sectors ones that
    still show); a ConfigError naming ``what`` (the argument) otherwise."""
    try:
        state = CrashState.parse(text)
    except ValueError as e:
        raise ConfigError(f"{what} {shown_name(text)}: {e}") from None
    if state.cut not in states.cuts():
        raise ConfigError(f"{what} {shown_name(text)}: the log has no cut {state.cut} (cuts: "
                          f"{_few(states.cuts())})")
    try:
        check_state(states.plan(state.cut), state, states.sector)
    except ValueError as e:
        raise ConfigError(f"{what}: {e} ('rig crash states --torn LOG' lists the states)") \
            from None
    return state



def _few(cuts: list[int]) -> str:
    shown = ", ".join(map(str, cuts[:20]))
    return shown + (f" ... {len(cuts) - 20} more" if len(cuts) > 20 else "")
