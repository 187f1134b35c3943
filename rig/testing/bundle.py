"""Repro bundles: everything needed to re-run a failed property without Hypothesis.

When a :class:`~rig.testing.machines.BlockDeviceMachine` fails, its final (shrunk) example is
written as JSON: the graphs it opened, the fault rules in them, the operation sequence, where
the backends diverged, and Hypothesis's seed and ``@reproduce_failure`` line. ``rig replay
BUNDLE`` runs the operations again, on the same graphs or on another device
(:mod:`rig.testing.bundle_replay`).

Bundles go to ``$RIG_REPRO_DIR`` (default ``.rig-repro/`` in the working directory);
``RIG_REPRO=0`` turns writing them off.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.core.documents import decode, loads_json, read_document
from rig.core.outputs import make_output_dir, open_output
from rig.errors import ConfigError
from rig.testing.ops import Op, op_from_dict, op_to_dict

FORMAT = "blockrig-repro"
VERSION = 1
DIR_ENV = "RIG_REPRO_DIR"
ENABLE_ENV = "RIG_REPRO"
DEFAULT_DIR = ".rig-repro"


@dataclass(frozen=True)
class BackendRecord:
    """One backend of the failed example: its graph dict (None when the machine built the
    backend by hand) and how it was opened."""

    graph: dict[str, Any] | None
    cache: str = "writeback"
    read_only: bool = False
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"graph": self.graph, "cache": self.cache, "read_only": self.read_only,
                "description": self.description}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackendRecord:
        graph = data.get("graph")
        if graph is not None and not isinstance(graph, dict):
            raise ConfigError(f"backends: graph must be an object or null, got {graph!r}")
        return cls(graph, str(data.get("cache", "writeback")), bool(data.get("read_only")),
                   str(data.get("description", "")))


@dataclass
class Bundle:
    """A repro bundle (see the module docstring); ``failure`` says what went wrong where."""

    machine: str
    size: int
    backends: list[BackendRecord]
    ops: list[Op]
    failure: dict[str, Any] = field(default_factory=dict)
    zero_on_start: bool = False
    seed: int | None = None
    """Hypothesis's random seed; None when the run was derandomized (see ``derandomize``)."""
    derandomize: bool = False
    """The run used Hypothesis's ``derandomize`` setting (its ``ci`` profile does): the seed
    then comes from the test's own code, so re-running the same test finds the same example."""
    reproduce_failure: str | None = None
    test: str | None = None
    driver_sources: dict[str, str] = field(default_factory=dict)
    """Drivers the graphs use that the rig does not have: name -> the file registering it."""
    created: str = ""
    host: dict[str, str] = field(default_factory=dict)

    @property
    def rules(self) -> list[dict[str, Any]]:
        """The blkdebug rules in the backends' graphs (with the backend's index)."""
        out: list[dict[str, Any]] = []
        for i, rec in enumerate(self.backends):
            if rec.graph is not None:
                out.extend({"backend": i, **r} for r in rules_of(rec.graph))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "machine": self.machine, "test": self.test,
            "created": self.created, "host": self.host, "seed": self.seed,
            "derandomize": self.derandomize, "reproduce_failure": self.reproduce_failure,
            "size": self.size,
            "zero_on_start": self.zero_on_start, "driver_sources": self.driver_sources,
            "backends": [b.to_dict() for b in self.backends], "rules": self.rules,
            "failure": self.failure, "ops": [op_to_dict(op) for op in self.ops],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bundle:
        if data.get("format") != FORMAT:
            raise ConfigError(f"not a repro bundle (format is {data.get('format')!r}, "
                              f"expected {FORMAT!r})")
        if data.get("version") != VERSION:
            raise ConfigError(f"repro bundle version {data.get('version')!r} is not supported "
                              f"(this rig reads version {VERSION})")
        try:
            ops = [op_from_dict(op) for op in data["ops"]]
            backends = [BackendRecord.from_dict(b) for b in data["backends"]]
            size = int(data["size"])
        except KeyError as e:
            raise ConfigError(f"repro bundle: missing key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"repro bundle: {e}") from None
        return cls(
            machine=str(data.get("machine", "")), size=size, backends=backends, ops=ops,
            failure=dict(data.get("failure") or {}),
            zero_on_start=bool(data.get("zero_on_start")), seed=data.get("seed"),
            derandomize=bool(data.get("derandomize")),
            reproduce_failure=data.get("reproduce_failure"), test=data.get("test"),
            driver_sources={str(k): str(v) for k, v in (data.get("driver_sources") or {}).items()},
            created=str(data.get("created", "")), host=dict(data.get("host") or {}),
        )

    def dumps(self) -> str:
        """JSON with one top-level key per line and one list item (op, backend) per line."""
        parts = []
        for key, value in self.to_dict().items():
            if isinstance(value, list) and value:
                items = ",\n".join(f"  {json.dumps(v)}" for v in value)
                parts.append(f" {json.dumps(key)}: [\n{items}\n ]")
            else:
                parts.append(f" {json.dumps(key)}: {json.dumps(value)}")
        return "{\n" + ",\n".join(parts) + "\n}\n"


def load(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle file with the rig's bounded readers (a regular file, UTF-8, JSON depth);
    anything that is not a bundle is a one-line ConfigError naming the file."""
    name = os.fspath(path)
    data = loads_json(decode(read_document(name, "repro bundle"), name), name)
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: not a repro bundle (not a JSON object)")
    try:
        return Bundle.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as e:
        # from_dict converts only some of its shape errors (a list where an object goes, an
        # infinite size): the rest are named here, where every file comes in.
        raise ConfigError(f"{name}: not a repro bundle ({type(e).__name__}: "
                          f"{str(e)[:80]})") from None


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get(ENABLE_ENV, "1").strip().lower() not in ("0", "no", "off", "false")


def directory(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(DIR_ENV) or DEFAULT_DIR)


def write(bundle: Bundle, directory_: str | os.PathLike[str] | None = None) -> Path:
    """Write ``bundle`` (filling ``created``, ``host`` and ``test``) to a new file in
    ``directory_`` (default: :func:`directory`); returns its path."""
    now = datetime.datetime.now(datetime.UTC)
    bundle.created = bundle.created or now.isoformat(timespec="seconds")
    bundle.host = bundle.host or {"node": platform.node(), "kernel": platform.release(),
                                  "python": platform.python_version()}
    bundle.test = bundle.test or (os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
                                  or None)
    where = Path(directory_) if directory_ is not None else directory()
    make_output_dir(where, f"the repro bundle directory ({DIR_ENV})", must_be_empty=False)
    stem = f"{bundle.machine.rsplit('.', 1)[-1] or 'machine'}-{now:%Y%m%d-%H%M%S}-{os.getpid()}"
    for n in range(1000):
        path = where / (f"{stem}.json" if n == 0 else f"{stem}-{n}.json")
        if os.path.lexists(path):
            continue
        with open_output(path, "a repro bundle", replace=False) as f:
            f.write(bundle.dumps())
        return path
    raise ConfigError(f"cannot find a free bundle name for {stem} in {where}")


@dataclass(frozen=True)
class Origin:
    """Where the Hypothesis example running now comes from."""

    is_final: bool = True
    """Hypothesis's final (shrunk, reported) run of a failing example."""
    seed: int | None = None
    derandomize: bool = False
    reproduce_failure: str | None = None


def hypothesis_origin() -> Origin:
    """The :class:`Origin` of the Hypothesis example running now.

    Outside Hypothesis this is ``Origin()``: a machine driven by hand always writes. The seed and
    the ``@reproduce_failure`` line come from Hypothesis internals and are None if those change.
    Under ``derandomize`` Hypothesis draws no random seed, so ``seed`` is None.
    """
    try:
        from hypothesis import core
        from hypothesis.control import current_build_context
        from hypothesis.errors import InvalidArgument
    except ImportError:  # pragma: no cover - hypothesis is a dependency of rig.testing
        return Origin()
    try:
        ctx = current_build_context()
    except InvalidArgument:
        return Origin()
    wrapped = getattr(ctx, "wrapped_test", None)
    seed: Any = None
    for name in ("_hypothesis_internal_use_seed", "_hypothesis_internal_use_generated_seed"):
        seed = seed if seed is not None else getattr(wrapped, name, None)
    if seed is None:
        seed = getattr(core, "global_force_seed", None)
    used = getattr(wrapped, "_hypothesis_internal_use_settings", None)
    line = None
    try:
        line = core.reproduction_decorator(ctx.data.choices)
    except Exception:
        line = None
    return Origin(is_final=bool(getattr(ctx, "is_final", True)),
                  seed=seed if isinstance(seed, int) else None,
                  derandomize=bool(getattr(used, "derandomize", False)), reproduce_failure=line)


def rules_of(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The blkdebug rules anywhere in a graph dict, as ``{"node": path, "inject-error": ...}``
    (for reports and repro bundles)."""
    found: list[dict[str, Any]] = []

    def walk(node: Mapping[str, Any], path: str) -> None:
        if node.get("driver") == "blkdebug":
            rules = {k: node[k] for k in ("inject-error", "set-state", "config") if k in node}
            if rules:
                found.append({"node": path or "(root)", **rules})
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{path}.{key}" if path else key)

    walk(spec, "")
    return found
