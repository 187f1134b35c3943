"""Rule and action validation: every mistake is a ConfigError naming the key, at construction."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.errors import ConfigError
from rig.faults.rules import (
    ALL_OPS,
    Corrupt,
    Delay,
    Drop,
    Error,
    Gone,
    LyingFlush,
    Op,
    Rule,
    RuleError,
    SetState,
    Torn,
    errno_value,
    injected_error,
)


def test_errno_by_name_or_number() -> None:
    assert errno_value("EIO") == errno.EIO
    assert errno_value("enospc") == errno.ENOSPC
    assert errno_value(28) == errno.ENOSPC
    assert errno_value("28") == errno.ENOSPC
    assert Error("ENOSPC").code == errno.ENOSPC
    assert Gone().code == errno.ENODEV


@pytest.mark.parametrize("bad", ["EWHAT", "", "O_DIRECT", 0, -5, 4096, True, 1.5])
def test_bad_errno_names_the_key(bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"^'errno': "):
        Error(bad)


def test_injected_error_looks_like_a_real_one() -> None:
    e = injected_error(errno.ENOSPC)
    real = OSError(errno.ENOSPC, "No space left on device")
    assert type(e) is type(real)
    assert (e.errno, e.strerror, str(e)) == (real.errno, real.strerror, str(real))


def test_default_ops_follow_the_action() -> None:
    assert Rule(Error()).ops == ALL_OPS
    assert Rule(Corrupt()).ops == {Op.READ}
    assert Rule(Torn()).ops == {Op.WRITE}
    assert Rule(Drop()).ops == {Op.WRITE, Op.ZERO, Op.DISCARD}
    assert Rule(LyingFlush()).ops == {Op.FLUSH}
    # A byte range never matches a flush, so a ranged rule's default leaves it out.
    assert Rule(Error(), start=0, end=512).ops == ALL_OPS - {Op.FLUSH}


def test_op_spelling_does_not_matter_for_equality() -> None:
    assert Rule(Error(), op="read") == Rule(Error(), op=["read"]) == Rule(Error(), op={Op.READ})
    assert Rule(Error(), op="read") != Rule(Error(), op="write")


@pytest.mark.parametrize(("make", "key"), [
    (lambda: Rule(Error(), op="reed"), "op"),
    (lambda: Rule(Error(), op=[]), "op"),
    (lambda: Rule(Corrupt(), op="write"), "op"),
    (lambda: Rule(Torn(), op=("write", "zero")), "op"),
    (lambda: Rule(LyingFlush(), op="read"), "op"),
    (lambda: Rule(Error(), op="flush", start=0), "op"),
    (lambda: Rule(Error(), start=-1), "start"),
    (lambda: Rule(Error(), start=10, end=10), "end"),
    (lambda: Rule(Error(), nth=0), "nth"),
    (lambda: Rule(Error(), every=0), "every"),
    (lambda: Rule(Error(), nth=1, every=2), "every"),
    (lambda: Rule(Error(), probability=1.5), "probability"),
    (lambda: Rule(Error(), probability=-0.1), "probability"),
    (lambda: Rule(Error(), state=-1), "state"),
    (lambda: Rule(Error(), new_state=-1), "new-state"),
    (lambda: Rule(SetState()), "new-state"),
    (lambda: Rule(Error(), after=-1.0), "after"),
    (lambda: Rule(Error(), after=2.0, before=1.0), "before"),
    (lambda: Rule(Error(), once=1), "once"),  # type: ignore[arg-type]
    (lambda: Delay(-1), "seconds"),
    (lambda: Delay(float("inf")), "seconds"),
    (lambda: Corrupt(0), "bits"),
    (lambda: Torn(sectors=-1), "sectors"),
    (lambda: Torn(unit=0), "unit"),
    (lambda: Torn(ack="yes"), "ack"),  # type: ignore[arg-type]
    (lambda: Rule("error"), "action"),  # type: ignore[arg-type]
])
def test_every_bad_value_is_a_config_error_naming_its_key(make: Any, key: str) -> None:
    with pytest.raises(RuleError) as exc:
        make()
    assert exc.value.key == key
    assert str(exc.value).startswith(f"{key!r}: ")
    assert isinstance(exc.value, ConfigError)


def test_probability_message_matches_the_documented_form() -> None:
    with pytest.raises(ConfigError) as exc:
        Rule(Delay(0.1), probability=1.5)
    assert str(exc.value) == "'probability': must be between 0 and 1, got 1.5"


def _units_touched(offset: int, length: int, unit: int) -> int:
    return 0 if length == 0 else (offset + length - 1) // unit - offset // unit + 1


@given(offset=st.integers(0, 1 << 20), length=st.integers(0, 1 << 16),
       sectors=st.integers(0, 40), unit=st.sampled_from([1, 512, 4096]))
def test_torn_lands_the_longest_prefix_within_the_first_sectors(offset: int, length: int,
                                                                 sectors: int, unit: int) -> None:
    """The prefix touches at most ``sectors`` (absolute) units, and one more byte would not."""
    landed = Torn(sectors=sectors, unit=unit).landed(offset, length)
    assert 0 <= landed <= length
    assert _units_touched(offset, landed, unit) <= sectors
    if landed < length:
        assert _units_touched(offset, landed + 1, unit) > sectors
