"""The guest kernel: Debian's generic ``linux-image-*-amd64``, downloaded (never installed),
unpacked, and pruned to the kernel image plus the modules the lab loads, with their dependencies.

Cache layout (``$RIG_VM_CACHE``, default ``~/.cache/blockrig/vm``)::

    <kver>/vmlinux                      the uncompressed kernel (ELF, PVH entry point)
    <kver>/lib/modules/<kver>/...       the pruned module tree, re-indexed by ``depmod -b``
    <kver>/kernel.json                  written last: its presence marks a complete entry

``vmlinux`` is unpacked from Debian's bzImage: QEMU boots it through its PVH entry point, which
skips the bzImage's self-decompression -- 3 to 4 s of every boot under TCG. (Where unpacking is
not possible, the bzImage is kept as ``vmlinuz`` and booted instead.)

The generic flavour is required: Debian's ``-cloud-amd64`` kernel has no 9p, and the guest
reaches the host's root file system over 9p.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rig.drivers.procs import locked
from rig.errors import RigError

#: Modules the lab offers in the guest (dependencies are added from ``modules.dep``). The first
#: group is needed to boot: reaching the host's root over 9p under a tmpfs overlay.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
DEVICE_MODULES = (
    "virtio_scsi", "sg", "sd_mod", "sr_mod", "cdrom", "scsi_debug", "dm_mod", "dm_flakey",
    "dm_delay", "null_blk", "virtio_blk", "loop", "fuse", "ext4",
    # The NIC of a guest that plays a second lab host (rig.drivers.vm.network).
    "virtio_net",
    # Crypto back ends the block layer asks for by name (crc-t10dif, crc32c) at run time.
    "crct10dif_generic", "crc32c_generic",
)
#: Index files copied from the full tree before ``depmod -b`` re-indexes the pruned one.
_INDEX_FILES = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
_META = "kernel.json"
_META_VERSION = 1


@dataclass(frozen=True)
class Kernel:
    """A complete cache entry."""

    kver: str  # e.g. "6.1.0-56-amd64"
    root: Path  # the cache entry; modules live under root/lib/modules/kver

    @property
    def image(self) -> Path:
        """``vmlinux`` (PVH boot) if there is one, else the bzImage ``vmlinuz``."""
        vmlinux = self.root / "vmlinux"
        return vmlinux if vmlinux.is_file() else self.root / "vmlinuz"

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.kver

    def module_path(self, name: str) -> Path:
        """The ``.ko`` file of module ``name`` (``-`` and ``_`` are the same)."""
        rel = _read_dep(self.modules_dir).get(_norm(name), (None, ()))[0]
        if rel is None:
            raise RigError(f"module {name} is not in the guest kernel cache {self.root}: "
                           "add it to rig.drivers.vm.kernel.DEVICE_MODULES and re-run rig vm fetch")
        return self.modules_dir / rel

    def load_order(self, names: Iterable[str]) -> list[str]:
        """Module names, dependencies first, each once (what ``modprobe`` would insert)."""
        return _load_order(_read_dep(self.modules_dir), names)


def cache_dir() -> Path:
    """``$RIG_VM_CACHE`` or ``~/.cache/blockrig/vm``."""
    env = os.environ.get("RIG_VM_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "blockrig" / "vm"


def find_kernel(cache: Path | None = None) -> Kernel | None:
    """The cached kernel to boot: ``$RIG_VM_KVER`` if set, else the newest complete entry."""
    cache = cache or cache_dir()
    want = os.environ.get("RIG_VM_KVER")
    entries = sorted(
        (p.parent for p in cache.glob(f"*/{_META}") if _meta_ok(p)),
        key=lambda p: _version_key(p.name),
    )
    if want:
        entries = [p for p in entries if p.name == want]
    return Kernel(entries[-1].name, entries[-1]) if entries else None


def require_kernel(cache: Path | None = None) -> Kernel:
    """The cached kernel, or a RigError that says how to fetch one."""
    kernel = find_kernel(cache)
    if kernel is None:
        where = cache or cache_dir()
        raise RigError(f"no guest kernel in {where}: run 'rig vm fetch' (or bash ci/vm-setup.sh)")
    return kernel


def fetch_kernel(package: str | None = None, cache: Path | None = None) -> Kernel:
    """Download, unpack and prune the guest kernel into the cache; a no-op when it is there.

    ``package`` defaults to ``$RIG_VM_KERNEL_PACKAGE`` or whatever ``linux-image-amd64``
    depends on in the apt lists.
    """
    cache = cache or cache_dir()
    package = package or os.environ.get("RIG_VM_KERNEL_PACKAGE")
    if package is None:
        try:
            package = resolve_package()
        except RigError:
            cached = find_kernel(cache)  # no apt lists (or no apt): what is cached will do
            if cached is not None:
                return cached
            raise
    kver = package.removeprefix("linux-image-")
    if kver == package or not kver.endswith("-amd64") or kver.endswith("-cloud-amd64"):
        raise RigError(f"{package}: not a generic Debian kernel package "
                       "(want linux-image-<version>-amd64; the cloud flavour has no 9p)")
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / ".lock"):
        entry = cache / kver
        if (entry / _META).is_file() and _meta_ok(entry / _META) and not _lacking(entry):
            _unpack_vmlinux(entry)  # entries from before vmlinux was kept
            return Kernel(kver, entry)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache) as tmp:
            work = Path(tmp)
            deb = _download(package, work)
            full = work / "full"
            _run(["dpkg-deb", "-x", str(deb), str(full)], "dpkg-deb", "apt-get install dpkg")
            deb.unlink()
            staged = work / kver
            _prune(full, staged, kver)
            shutil.rmtree(full)
            if (entry / _META).is_file() and _meta_ok(entry / _META):
                # An entry from before a module was added to the list: add what it lacks in
                # place (guests may be booting from it), then re-index it.
                _add_modules(staged, entry, kver)
                return Kernel(kver, entry)
            if entry.exists():  # an incomplete entry from an interrupted fetch
                shutil.rmtree(entry)
            staged.rename(entry)
        return Kernel(kver, entry)


def resolve_package() -> str:
    """The versioned package ``linux-image-amd64`` depends on, from the apt lists."""
    out = _run(["apt-cache", "depends", "linux-image-amd64"], "apt-cache",
               "run on Debian/Ubuntu, or set RIG_VM_KERNEL_PACKAGE")
    found = re.findall(r"Depends:\s*(linux-image-\S+-amd64)\b", out)
    if not found:
        raise RigError("apt-cache knows no linux-image-amd64: run apt-get update "
                       "(or set RIG_VM_KERNEL_PACKAGE=linux-image-<version>-amd64)")
    return str(found[0])


def _download(package: str, work: Path) -> Path:
    _run(["apt-get", "download", "-q", package], "apt-get", "run apt-get update", cwd=work)
    debs = list(work.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise RigError(f"apt-get download {package} left no .deb in {work}: run apt-get update")
    return debs[0]


def _prune(full: Path, staged: Path, kver: str) -> None:
    src_mods = full / "lib" / "modules" / kver
    images = list((full / "boot").glob(f"vmlinuz-{kver}"))
    if not images or not src_mods.is_dir():
        raise RigError(f"the {kver} package has no /boot/vmlinuz-{kver} or /lib/modules/{kver}")
    _run(["depmod", "-b", str(full), kver], "depmod", "apt-get install kmod")
    deps = _read_dep(src_mods)
    builtin = _builtin(src_mods)
    missing = [m for m in (*BOOT_MODULES, *DEVICE_MODULES)
               if _norm(m) not in deps and _norm(m) not in builtin]
    if missing:
        raise RigError(f"the {kver} package lacks modules {', '.join(missing)}: "
                       "use a generic -amd64 kernel package")
    keep = _load_order(deps, [m for m in (*BOOT_MODULES, *DEVICE_MODULES) if _norm(m) in deps])
    dst_mods = staged / "lib" / "modules" / kver
    for name in keep:
        rel = deps[name][0]
        (dst_mods / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_mods / rel, dst_mods / rel)
    for index in _INDEX_FILES:
        if (src_mods / index).exists():
            shutil.copy2(src_mods / index, dst_mods / index)
    shutil.copy2(images[0], staged / "vmlinuz")
    _unpack_vmlinux(staged)
    _run(["depmod", "-b", str(staged), kver], "depmod", "apt-get install kmod")
    meta = {"version": _META_VERSION, "kver": kver, "modules": keep}
    (staged / _META).write_text(json.dumps(meta, indent=1) + "\n")


def _lacking(entry: Path) -> list[str]:
    """The lab's modules a complete cache entry does not hold (it predates them)."""
    try:
        have = set(json.loads((entry / _META).read_text()).get("modules", []))
    except (OSError, ValueError, AttributeError):
        return []
    return [m for m in (*BOOT_MODULES, *DEVICE_MODULES) if _norm(m) not in have]


def _add_modules(staged: Path, entry: Path, kver: str) -> None:
    """Copy the modules ``staged`` (a fresh prune) has and ``entry`` lacks into ``entry``,
    then re-index ``entry`` and rewrite its ``kernel.json``. Nothing is removed."""
    src = staged / "lib" / "modules" / kver
    dst = entry / "lib" / "modules" / kver
    deps = _read_dep(src)
    for rel, _deps in deps.values():
        if not (dst / rel).exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    _run(["depmod", "-b", str(entry), kver], "depmod", "apt-get install kmod")
    tmp = entry / f".{_META}.tmp"
    tmp.write_text((staged / _META).read_text())
    os.replace(tmp, entry / _META)


def _unpack_vmlinux(entry: Path) -> None:
    """Replace ``entry/vmlinuz`` by the ELF ``vmlinux`` inside it (xz or gzip payloads); leave
    it as it is when neither is found."""
    bzimage = entry / "vmlinuz"
    if (entry / "vmlinux").is_file() or not bzimage.is_file():
        return
    data = bzimage.read_bytes()
    for magic, unpack in ((b"\xfd7zXZ\x00", _unxz), (b"\x1f\x8b\x08", _gunzip)):
        start = data.find(magic)
        while start >= 0:
            elf = unpack(data[start:])
            if elf is not None and elf[:4] == b"\x7fELF":
                tmp = entry / f".vmlinux.tmp{os.getpid()}"
                tmp.write_bytes(elf)
                os.replace(tmp, entry / "vmlinux")
                bzimage.unlink()
                return
            start = data.find(magic, start + 1)


def _unxz(data: bytes) -> bytes | None:
    try:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    except lzma.LZMAError:
        return None


def _gunzip(data: bytes) -> bytes | None:
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
    except zlib.error:
        return None


def _norm(name: str) -> str:
    return name.replace("-", "_")


def _read_dep(mod_dir: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``modules.dep`` as {name: (relative path, dependency names)}."""
    try:
        text = (mod_dir / "modules.dep").read_text()
    except FileNotFoundError:
        raise RigError(f"{mod_dir}/modules.dep is missing: run 'rig vm fetch'") from None
    deps: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        path, _, rest = line.partition(":")
        if path:
            deps[_stem(path)] = (path, tuple(_stem(p) for p in rest.split()))
    return deps


def _builtin(mod_dir: Path) -> set[str]:
    try:
        return {_stem(line) for line in (mod_dir / "modules.builtin").read_text().split()}
    except FileNotFoundError:
        return set()


def _stem(path: str) -> str:
    return _norm(os.path.basename(path).split(".ko")[0])


def _load_order(deps: dict[str, tuple[str, tuple[str, ...]]], names: Iterable[str]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in deps:
            raise RigError(f"module {name} is not in modules.dep: re-run 'rig vm fetch'")
        for dep in deps[name][1]:
            visit(dep)
        order.append(name)

    for name in names:
        visit(_norm(name))
    return order


def _meta_ok(path: Path) -> bool:
    try:
        return int(json.loads(path.read_text()).get("version", 0)) == _META_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def _version_key(kver: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", kver))


def _run(argv: list[str], tool: str, fix: str, cwd: Path | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise RigError(f"{tool} not found: {fix}")
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RigError(f"{' '.join(argv[:3])} failed: {last} ({fix})")
    return str(proc.stdout)


