"""QEMU's metadata overlap checks: before the driver writes to its file, the range is compared
with the metadata it knows, so guest data (or one table) never lands on another table.

The kinds are QEMU's (``QCOW2_OL_*``, same bit numbers); the ``overlap-check`` option picks a
template (``none``, ``constant``, ``cached``: the default, ``all``) and ``overlap-check.<kind>``
booleans switch single kinds on or off. The driver knows no snapshots or bitmaps (images with
them are refused or have them dropped), so those kinds never match; their options are accepted.
"""

from __future__ import annotations

from enum import IntFlag

from rig.core.options import Options
from rig.errors import ConfigError


class Ol(IntFlag):
    """One kind of metadata (QEMU's bit numbers)."""

    MAIN_HEADER = 1 << 0
    ACTIVE_L1 = 1 << 1
    ACTIVE_L2 = 1 << 2
    REFCOUNT_TABLE = 1 << 3
    REFCOUNT_BLOCK = 1 << 4
    SNAPSHOT_TABLE = 1 << 5
    INACTIVE_L1 = 1 << 6
    INACTIVE_L2 = 1 << 7
    BITMAP_DIRECTORY = 1 << 8


NONE = Ol(0)
ALL_KINDS = Ol((1 << 9) - 1)

#: What each template checks (QEMU 7.2's QCOW2_OL_CONSTANT, _CACHED, _ALL).
CONSTANT = (Ol.MAIN_HEADER | Ol.ACTIVE_L1 | Ol.REFCOUNT_TABLE | Ol.SNAPSHOT_TABLE
            | Ol.BITMAP_DIRECTORY)
CACHED = CONSTANT | Ol.ACTIVE_L2 | Ol.REFCOUNT_BLOCK | Ol.INACTIVE_L1
TEMPLATES: dict[str, Ol] = {"none": NONE, "constant": CONSTANT, "cached": CACHED,
                            "all": CACHED | Ol.INACTIVE_L2}
DEFAULT = "cached"

#: (kind, option suffix, the name QEMU's message gives it), in QEMU's order of checking: when a
#: write overlaps several kinds, the first one here is the one reported.
KINDS: tuple[tuple[Ol, str, str], ...] = (
    (Ol.MAIN_HEADER, "main-header", "qcow2_header"),
    (Ol.ACTIVE_L1, "active-l1", "active L1 table"),
    (Ol.REFCOUNT_TABLE, "refcount-table", "refcount table"),
    (Ol.SNAPSHOT_TABLE, "snapshot-table", "snapshot table"),
    (Ol.INACTIVE_L1, "inactive-l1", "inactive L1 table"),
    (Ol.ACTIVE_L2, "active-l2", "active L2 table"),
    (Ol.REFCOUNT_BLOCK, "refcount-block", "refcount block"),
    (Ol.INACTIVE_L2, "inactive-l2", "inactive L2 table"),
    (Ol.BITMAP_DIRECTORY, "bitmap-directory", "bitmap directory"),
)


def name(kinds: int) -> str:
    """QEMU's name for the first of ``kinds`` in its order of checking."""
    for kind, _, text in KINDS:
        if kinds & kind:
            return text
    return "metadata"


def parse(opts: Options) -> Ol:
    """The checks a node's options ask for (QEMU's qcow2_update_options_prepare): a template from
    ``overlap-check`` or ``overlap-check.template`` (they must agree), then the per-kind
    booleans."""
    mode = opts.str("overlap-check")
    template = opts.str("overlap-check.template")
    if mode is not None and template is not None and mode != template:
        raise ConfigError(f"Conflicting values for qcow2 options 'overlap-check' ('{mode}') and "
                          f"'overlap-check.template' ('{template}')")
    chosen = mode if mode is not None else template if template is not None else DEFAULT
    if chosen not in TEMPLATES:
        raise ConfigError(f"Unsupported value '{chosen}' for qcow2 option 'overlap-check'. "
                          "Allowed are any of the following: none, constant, cached, all")
    base = TEMPLATES[chosen]
    checks = NONE
    for kind, option, _ in KINDS:
        if opts.bool(f"overlap-check.{option}", bool(base & kind)):
            checks |= kind
    return checks
