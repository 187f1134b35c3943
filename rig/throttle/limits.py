"""ThrottleLimits: QEMU's limit names, validity rules and messages (``throttle_is_valid``).

Names are QEMU's option names without prefix (``bps-total``, ``iops-read-max``,
``bps-write-max-length``, ``iops-size``); ``-drive`` / the throttle filter spell them
``throttling.NAME``, a ``throttle-group`` object ``x-NAME`` (or ``limits.NAME``). Every message
is QEMU 7.2's, verbatim (including the missing space in "therange").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rig.errors import ConfigError
from rig.throttle.bucket import Bucket, BucketType, ThrottleState

THROTTLE_VALUE_MAX = 1_000_000_000_000_000
UINT_MAX = 4294967295

#: Option name (without prefix) of each bucket, in BucketType order.
BUCKET_NAMES = ("bps-total", "bps-read", "bps-write", "iops-total", "iops-read", "iops-write")


def _zeroes() -> dict[str, int]:
    return dict.fromkeys(BUCKET_NAMES, 0)


def _ones() -> dict[str, int]:
    return dict.fromkeys(BUCKET_NAMES, 1)


@dataclass(frozen=True)
class ThrottleLimits:
    """Rates per bucket name; ``max`` (burst rates) and ``max_length`` (seconds) likewise."""

    avg: Mapping[str, int] = field(default_factory=_zeroes)
    max: Mapping[str, int] = field(default_factory=_zeroes)
    max_length: Mapping[str, int] = field(default_factory=_ones)
    iops_size: int = 0

    @classmethod
    def of(cls, **values: int) -> ThrottleLimits:
        """``ThrottleLimits.of(bps_total=1 << 20, bps_total_max=...)``: python-style names."""
        return cls.from_mapping({k.replace("_", "-"): v for k, v in values.items()})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], prefix: str = "") -> ThrottleLimits:
        """Limits from ``{"bps-total": 1048576, ...}``; values are ints or decimal strings.

        Raises :class:`ConfigError` (QEMU's messages) for unknown names, bad numbers, negative
        values, max-length above UINT_MAX and anything ``throttle_is_valid`` refuses.
        """
        avg, mx, length = _zeroes(), _zeroes(), _ones()
        iops_size = 0
        for key, raw in values.items():
            value = _number(f"{prefix}{key}", raw)
            if key == "iops-size":
                iops_size = value
            elif key in avg:
                avg[key] = value
            elif key.endswith("-max") and key[:-4] in mx:
                mx[key[:-4]] = value
            elif key.endswith("-max-length") and key[:-11] in length:
                if value > UINT_MAX:
                    raise ConfigError(f"{prefix}{key} value must be in therange [0, {UINT_MAX}]")
                length[key[:-11]] = value
            else:
                raise ConfigError(f"Parameter '{prefix}{key}' is unexpected")
        limits = cls(avg, mx, length, iops_size)
        limits.check()
        return limits

    def to_mapping(self) -> dict[str, int]:
        """The non-default values by option name (inverse of :meth:`from_mapping`)."""
        out: dict[str, int] = {}
        for name in BUCKET_NAMES:
            if self.avg[name]:
                out[name] = self.avg[name]
            if self.max[name]:
                out[f"{name}-max"] = self.max[name]
            if self.max_length[name] != 1:
                out[f"{name}-max-length"] = self.max_length[name]
        if self.iops_size:
            out["iops-size"] = self.iops_size
        return out

    @property
    def enabled(self) -> bool:
        return any(self.avg.values())

    def check(self) -> None:
        """``throttle_is_valid``: the checks in QEMU's order, with its messages."""
        a, m = self.avg, self.max
        if any(a[f"{u}-total"] and (a[f"{u}-read"] or a[f"{u}-write"]) for u in ("bps", "iops")) \
                or any(m[f"{u}-total"] and (m[f"{u}-read"] or m[f"{u}-write"])
                       for u in ("bps", "iops")):
            raise ConfigError("bps/iops/max total values and read/write values cannot be used "
                              "at the same time")
        if self.iops_size and not (a["iops-total"] or a["iops-read"] or a["iops-write"]):
            raise ConfigError("iops size requires an iops value to be set")
        for name in BUCKET_NAMES:
            avg, mx, length = a[name], m[name], self.max_length[name]
            if avg > THROTTLE_VALUE_MAX or mx > THROTTLE_VALUE_MAX:
                raise ConfigError(f"bps/iops/max values must be within [0, {THROTTLE_VALUE_MAX}]")
            if not length:
                raise ConfigError("the burst length cannot be 0")
            if length > 1 and not mx:
                raise ConfigError("burst length set without burst rate")
            if mx and length > THROTTLE_VALUE_MAX // mx:
                raise ConfigError("burst length too high for this burst rate")
            if mx and not avg:
                raise ConfigError("bps_max/iops_max require corresponding bps/iops values")
            if mx and mx < avg:
                raise ConfigError("bps_max/iops_max cannot be lower than bps/iops")

    def to_state(self, now: int) -> ThrottleState:
        """A fresh state (levels 0, last leak ``now``), as ``throttle_config`` makes."""
        buckets = tuple(Bucket(self.avg[n], self.max[n], self.max_length[n])
                        for n in BUCKET_NAMES)
        assert len(buckets) == len(BucketType)
        return ThrottleState(buckets, self.iops_size, now)

    def with_values(self, **values: int) -> ThrottleLimits:
        """A copy with some python-style names changed (``bps_read=...``), checked."""
        merged = {**self.to_mapping(), **{k.replace("_", "-"): v for k, v in values.items()}}
        return type(self).from_mapping({k: v for k, v in merged.items() if v})


def _number(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"Parameter '{name}' expects integer")
    if isinstance(raw, str):
        try:
            raw = int(raw, 10)
        except ValueError:
            raise ConfigError(f"Parameter '{name}' expects integer") from None
    if not isinstance(raw, int):
        raise ConfigError(f"Parameter '{name}' expects integer")
    if raw < 0:
        raise ConfigError("Property values cannot be negative")
    return raw


__all__ = ["BUCKET_NAMES", "THROTTLE_VALUE_MAX", "ThrottleLimits"]
