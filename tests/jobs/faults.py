"""blkdebug rule files for the stream tests, in QEMU's config syntax (both QEMU and the rig
read them), and a backing-file name that puts blkdebug under a layer."""

from __future__ import annotations

from pathlib import Path

#: qemu-iotests 030 TestEIO/TestENOSPC: fail the read at sector 1024 (offset 512 KiB) once.
IOTEST_030 = """\
[inject-error]
state = "1"
event = "read_aio"
errno = "{errno}"
immediately = "off"
once = "on"
sector = "{sector}"

[set-state]
state = "1"
event = "read_aio"
new_state = "2"

[set-state]
state = "2"
event = "read_aio"
new_state = "1"
"""

SIMPLE = """\
[inject-error]
event = "read_aio"
errno = "{errno}"
immediately = "off"
once = "{once}"
sector = "{sector}"
"""


def write_rules(path: Path, template: str, **values: object) -> Path:
    path.write_text(template.format(**values))
    return path


def blkdebug_name(conf: Path, image: Path) -> str:
    """A backing file name QEMU and the rig both open as blkdebug over ``image``."""
    return f"blkdebug:{conf}:{image}"
