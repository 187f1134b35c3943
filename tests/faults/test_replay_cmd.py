"""``rig replay`` of a bad bundle: one line and exit 2 before any device is opened (issue 18
part 4; each of these was a traceback, or ran requests past the device)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rig.cli.main import main

BUNDLE: dict[str, Any] = {
    "format": "blockrig-repro", "version": 1, "machine": "m", "size": 4096,
    "backends": [{"graph": {"driver": "memory", "size": 4096}}],
    "ops": [{"op": "write", "offset": 0, "length": 512, "seed": 1, "fua": False}],
}


@pytest.mark.parametrize(("text", "message"), [
    (json.dumps({**BUNDLE, "size": 1e400}).replace("Infinity", "1e400"), "not a repro bundle"),
    (json.dumps({**BUNDLE, "backends": "xy"}), "not a repro bundle"),
    (json.dumps({**BUNDLE, "failure": [1]}), "not a repro bundle"),
    (json.dumps({**BUNDLE, "ops": [{"op": "write", "offset": -1, "length": 512, "seed": 1}]}),
     "op 0 (write seed 1 [-1, +512)): 'offset'"),
    (json.dumps({**BUNDLE, "ops": [{"op": "read", "offset": 4000, "length": 512}]}),
     "ends past the 4096-byte device"),
    (json.dumps({**BUNDLE, "size": -5}), "'size'"),
    ("[" * 5000 + "]" * 5000, "nested more than"),
])
def test_a_bad_bundle_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    assert main(["replay", str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rig replay: ") and message in err[0], err
    assert "replaying" not in captured.out  # nothing was opened


def test_a_non_utf8_bundle_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(json.dumps(BUNDLE).encode().replace(b'"m"', b'"\xff"'))
    assert main(["replay", str(path)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
