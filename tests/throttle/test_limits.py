"""Validity rules and messages: QEMU 7.2's throttle_is_valid and property setters."""

from __future__ import annotations

import pytest

from rig.errors import ConfigError
from rig.throttle.limits import ThrottleLimits

BAD = [
    ({"bps-total": 1, "bps-read": 1},
     "bps/iops/max total values and read/write values cannot be used at the same time"),
    ({"iops-total": 1, "iops-write": 1},
     "bps/iops/max total values and read/write values cannot be used at the same time"),
    ({"bps-total-max": 2, "bps-write-max": 2, "bps-total": 1, "bps-write": 0},
     "bps/iops/max total values and read/write values cannot be used at the same time"),
    ({"iops-size": 4096}, "iops size requires an iops value to be set"),
    ({"bps-total": 10**15 + 1},
     "bps/iops/max values must be within [0, 1000000000000000]"),
    ({"bps-total": 1, "bps-total-max-length": 0}, "the burst length cannot be 0"),
    ({"bps-total": 10, "bps-total-max-length": 2}, "burst length set without burst rate"),
    ({"bps-total": 10**14, "bps-total-max": 10**15, "bps-total-max-length": 2},
     "burst length too high for this burst rate"),
    ({"iops-read-max": 10}, "bps_max/iops_max require corresponding bps/iops values"),
    ({"bps-write": 10, "bps-write-max": 5}, "bps_max/iops_max cannot be lower than bps/iops"),
    ({"bps-total": -1}, "Property values cannot be negative"),
    ({"bps-total": "abc"}, "Parameter 'x-bps-total' expects integer"),
    ({"bps-total-max-length": 2**32}, "x-bps-total-max-length value must be in therange "
                                      "[0, 4294967295]"),
    ({"foo": 1}, "Parameter 'x-foo' is unexpected"),
]


@pytest.mark.parametrize(("values", "message"), BAD)
def test_bad_limits_give_qemus_message(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        ThrottleLimits.from_mapping(values, "x-")
    assert str(e.value) == message


def test_order_of_checks_is_qemus() -> None:
    # Both rule 1 and rule 2 are broken: rule 1's message wins.
    with pytest.raises(ConfigError, match="cannot be used at the same time"):
        ThrottleLimits.from_mapping({"bps-total": 1, "bps-read": 1, "iops-size": 1})


def test_good_limits_round_trip() -> None:
    values = {"bps-read": 100, "bps-read-max": 400, "bps-read-max-length": 3,
              "iops-total": 10, "iops-size": 4096}
    limits = ThrottleLimits.from_mapping({k: str(v) for k, v in values.items()})
    assert limits.to_mapping() == values
    assert limits.enabled
    assert not ThrottleLimits().enabled
    assert ThrottleLimits.of(bps_total=5).with_values(bps_total=7).avg["bps-total"] == 7
