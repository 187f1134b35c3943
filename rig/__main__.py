"""``python -m rig`` runs the command line.

The command line (``rig.cli``, the top-level ``cli/`` directory) sits above the core and the
drivers, and nothing under ``rig/`` imports it, with this one exception: Python looks for the
code of ``python -m rig`` here, so this module is the sanctioned entry hook and imports the CLI
lazily, inside :func:`main`. ``tests/test_layout.py`` allows it by name, and nothing else.
"""

from __future__ import annotations


def main() -> int:
    """Run ``rig`` with ``sys.argv`` (what ``[project.scripts] rig`` runs)."""
    from rig.cli.main import entry

    return entry()


if __name__ == "__main__":
    raise SystemExit(main())
