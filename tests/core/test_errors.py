"""The rig's own errors print as one line, whatever the value they quote."""

from __future__ import annotations

import errno

from rig.errors import ConfigError, DeviceNotFoundError, RigError, UnsafeDeviceError, one_line


def test_messages_quoting_control_characters_stay_one_line() -> None:
    name = "disk\n.img\x1b[2J\x00"
    for err in (RigError(f"Could not open '{name}'"), ConfigError(f"bad {name}"),
                DeviceNotFoundError(f"Could not open '{name}': No such file or directory"),
                UnsafeDeviceError(f"refusing {name}")):
        text = str(err)
        assert "\n" not in text and "\x1b" not in text and "\x00" not in text
        assert "disk\\n.img\\x1b[2J\\x00" in text


def test_oserror_subclasses_keep_their_errno() -> None:
    err = DeviceNotFoundError("Could not open 'x': No such file or directory")
    assert isinstance(err, FileNotFoundError) and isinstance(err, RigError)
    assert str(err) == "Could not open 'x': No such file or directory"
    assert UnsafeDeviceError(errno.EACCES, "x").errno == errno.EACCES


def test_one_line_leaves_printable_text_alone() -> None:
    assert one_line("refusing to write to /dev/loop0: it is mounted at /mnt (é, ü)") == \
        "refusing to write to /dev/loop0: it is mounted at /mnt (é, ü)"
