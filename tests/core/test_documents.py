"""Config documents are read with bounds: a device or a FIFO named as a config file is refused
before anything is read (``/dev/zero`` would never end, a FIFO would block)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rig.core.documents import read_document
from rig.errors import ConfigError


def _loaders() -> dict[str, Callable[[str], object]]:
    from rig.drivers.lab import load_inventory
    from rig.faults.load import load_rules
    from rig.faults.log import FaultEventLog
    from rig.filters.blkdebug_config import read_config_file
    from rig.testing import bundle

    return {"rules": load_rules, "blkdebug": read_config_file, "lab": load_inventory,
            "fault-log": FaultEventLog.load, "repro-bundle": bundle.load}


@pytest.mark.parametrize("loader", ["rules", "blkdebug", "lab", "fault-log", "repro-bundle"])
@pytest.mark.parametrize("kind", ["zero", "fifo", "dir"])
def test_devices_fifos_and_dirs_are_refused_without_reading(tmp_path: Path, loader: str,
                                                            kind: str) -> None:
    if kind == "zero":
        path = str(tmp_path / "rules.toml")
        os.symlink("/dev/zero", path)  # the name says TOML; the file is endless
    elif kind == "fifo":
        path = str(tmp_path / "rules.toml")
        os.mkfifo(path)  # nobody writes: a plain open would block for ever
    else:
        path = str(tmp_path / "d.toml")
        os.mkdir(path)
    with pytest.raises(ConfigError) as exc:
        _loaders()[loader](path)
    text = str(exc.value)
    assert "\n" not in text
    assert "not a regular file" in text or "Is a directory" in text, text


def test_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 2048)
    with pytest.raises(ConfigError, match="is 2048 bytes; the most the rig reads is 1024"):
        read_document(big, "rule file", limit=1024)
    assert read_document(big, "rule file", limit=4096) == b"#" * 2048


def test_missing_and_nul(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file or directory"):
        read_document(tmp_path / "none.toml", "rule file")
    with pytest.raises(ConfigError, match="has no NUL byte"):
        read_document("a\0b", "rule file")
