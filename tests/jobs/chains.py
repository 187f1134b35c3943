"""Backing chains for the stream tests: a Hypothesis strategy for their shape and content, and
builders that make them with Debian's qemu-img/qemu-io or with the rig itself.

A chain is a list of layers, bottom first. The bottom may be raw; the rest are qcow2 images
(cluster sizes 4 KiB to 64 KiB) named ``L0``, ``L1`` ... in one directory, each naming the one
below by a relative file name. Sizes never shrink going up, so what the top shows is exactly the
union of the layers (a shorter layer under a longer one is the rule covered on its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

import rig
from rig.formats.qcow2 import create
from tests.formats.helpers import run

KiB = 1024
MiB = 1 << 20
SIZES = (512 * KiB, 1 * MiB, 1536 * KiB, 2 * MiB)


@dataclass(frozen=True)
class Op:
    """One write into a layer: ``pattern`` bytes, or zeroes (``zero``), or a discard."""

    offset: int
    length: int
    pattern: int = 0
    kind: str = "write"  # write | zero | discard

    def qemu_io(self) -> str:
        if self.kind == "zero":
            return f"write -z {self.offset} {self.length}"
        if self.kind == "discard":
            return f"discard {self.offset} {self.length}"
        return f"write -P {self.pattern} {self.offset} {self.length}"

    def apply(self, model: bytearray) -> None:
        """What the op does to the content the image shows (discard is advisory in qcow2 v2;
        the strategies use it only where the chain's content does not depend on it)."""
        end = min(self.offset + self.length, len(model))
        if self.kind == "write":
            model[self.offset:end] = bytes([self.pattern]) * (end - self.offset)
        elif self.kind == "zero":
            model[self.offset:end] = bytes(end - self.offset)


@dataclass(frozen=True)
class Layer:
    fmt: str
    size: int
    cluster_size: int
    ops: tuple[Op, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Chain:
    layers: tuple[Layer, ...]
    maker: str  # qemu | rig

    @property
    def size(self) -> int:
        return self.layers[-1].size


@st.composite
def ops(draw: st.DrawFn, size: int, *, max_ops: int = 6, kinds: tuple[str, ...] = (
        "write", "write", "zero")) -> tuple[Op, ...]:
    out = []
    for _ in range(draw(st.integers(0, max_ops))):
        offset = draw(st.integers(0, size // 512 - 1)) * 512
        length = min(draw(st.sampled_from((512, 4 * KiB, 64 * KiB, 300 * KiB))), size - offset)
        kind = draw(st.sampled_from(kinds))
        out.append(Op(offset, length, draw(st.integers(1, 255)), kind))
    return tuple(out)


@st.composite
def chains(draw: st.DrawFn, *, min_layers: int = 2, max_layers: int = 4) -> Chain:
    n = draw(st.integers(min_layers, max_layers))
    sizes = sorted(draw(st.lists(st.sampled_from(SIZES), min_size=n, max_size=n)))
    layers = []
    for i, size in enumerate(sizes):
        fmt = draw(st.sampled_from(("raw", "qcow2"))) if i == 0 else "qcow2"
        cs = draw(st.sampled_from((4 * KiB, 16 * KiB, 64 * KiB)))
        layers.append(Layer(fmt, size, cs, draw(ops(size))))
    return Chain(tuple(layers), draw(st.sampled_from(("qemu", "rig"))))


def layer_path(tmp: Path, chain: Chain, i: int) -> Path:
    return tmp / f"L{i}.{chain.layers[i].fmt}"


def build(chain: Chain, tmp: Path, *, backing_names: dict[int, str] | None = None) -> list[Path]:
    """Make the chain's images in ``tmp``; their paths, bottom first. ``backing_names`` gives
    the backing file name to write into layer i's header (e.g. a ``blkdebug:`` name)."""
    names = backing_names or {}
    paths = [layer_path(tmp, chain, i) for i in range(len(chain.layers))]
    for i, layer in enumerate(chain.layers):
        path = paths[i]
        below = chain.layers[i - 1] if i else None
        backing = names.get(i, paths[i - 1].name) if i else None
        if layer.fmt == "raw":
            with open(path, "wb") as f:
                f.truncate(layer.size)
        elif chain.maker == "qemu" or i in names:
            args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"cluster_size={layer.cluster_size}"]
            if backing is not None and below is not None:
                args += ["-u", "-b", backing, "-F", below.fmt]
            run(*args, path, str(layer.size))
        else:
            create(str(path), layer.size, cluster_size=layer.cluster_size,
                   backing=backing, backing_fmt=below.fmt if below else None)
        _fill(chain, layer, path)
    return paths


def _fill(chain: Chain, layer: Layer, path: Path) -> None:
    if not layer.ops:
        return
    if chain.maker == "qemu":
        args: list[str | Path] = ["qemu-io", "-f", layer.fmt]
        for op in layer.ops:
            args += ["-c", op.qemu_io()]
        out = run(*args, path).stdout
        assert "failed" not in out, out
        return
    spec = {"driver": layer.fmt, "file": {"driver": "file", "filename": str(path)}}
    with rig.open(spec) as blk:
        for op in layer.ops:
            if op.kind == "write":
                blk.pwrite(op.offset, bytes([op.pattern]) * op.length)
            elif op.kind == "zero":
                blk.write_zeroes(op.offset, op.length)
            else:
                blk.discard(op.offset, op.length)


def content(top: Path, tmp: Path, name: str = "chain") -> bytes:
    """What QEMU reads from ``top`` through its whole chain (qemu-img convert)."""
    out = tmp / f"{name}.raw"
    run("qemu-img", "convert", "-O", "raw", top, out)
    data = out.read_bytes()
    out.unlink()
    return data


def backing_file(image: Path) -> str | None:
    """The backing file name in the image's header (qemu-img info)."""
    import json

    info = json.loads(run("qemu-img", "info", "--output=json", "-U", image).stdout)
    name = info.get("backing-filename")
    return str(name) if name else None
