"""The guest kernel cache and the initramfs: fetched once, pruned, reused; a real cpio archive."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rig.drivers.vm.cpio import CpioWriter
from rig.drivers.vm.kernel import BOOT_MODULES, DEVICE_MODULES, _load_order, fetch_kernel
from rig.errors import RigError


@pytest.mark.rig_needs("vm")
def test_fetch_reuses_the_cache_and_keeps_only_the_labs_modules() -> None:
    from rig.drivers.vm.initramfs import initramfs

    kernel = fetch_kernel()  # present already (the capability says so)
    meta = kernel.root / "kernel.json"
    before = meta.stat().st_mtime_ns
    t0 = time.monotonic()
    again = fetch_kernel()
    assert time.monotonic() - t0 < 10  # apt-cache only, no download
    assert again == kernel and meta.stat().st_mtime_ns == before
    assert initramfs(kernel) == initramfs(kernel)
    kos = list(kernel.modules_dir.rglob("*.ko"))
    names = {p.name.removesuffix(".ko").replace("-", "_") for p in kos}
    assert {"scsi_debug", "dm_flakey", "null_blk", "sr_mod", "9p", "virtio_scsi"} <= names
    assert len(kos) < 60  # pruned (the package has thousands)
    assert (kernel.modules_dir / "modules.dep.bin").is_file()
    assert set(kernel.load_order([*BOOT_MODULES, *DEVICE_MODULES])) <= names


def test_load_order_puts_dependencies_first() -> None:
    deps = {
        "virtio_ring": ("a/virtio_ring.ko", ()),
        "virtio": ("a/virtio.ko", ("virtio_ring",)),
        "virtio_pci": ("a/virtio_pci.ko", ("virtio", "virtio_ring")),
        "dm_mod": ("b/dm-mod.ko", ()),
        "dm_flakey": ("b/dm-flakey.ko", ("dm_mod",)),
    }
    assert _load_order(deps, ["dm-flakey", "virtio_pci", "virtio"]) == [
        "dm_mod", "dm_flakey", "virtio_ring", "virtio", "virtio_pci"]
    with pytest.raises(RigError, match=r"module nope is not in modules\.dep"):
        _load_order(deps, ["nope"])


def test_cpio_archive_lists_in_busybox(tmp_path: Path) -> None:
    if not Path("/bin/busybox").is_file():
        pytest.skip("needs busybox (apt-get install busybox-static)")
    archive = tmp_path / "a.cpio"
    with open(archive, "wb") as f:
        w = CpioWriter(f)
        w.directory("bin")
        w.file("bin/hello", b"odd length", mode=0o755)
        w.symlink("sbin", "bin")
        w.chardev("console", 5, 1)
        w.close()
    data = archive.read_bytes()
    listing = subprocess.run(["/bin/busybox", "cpio", "-t", "-v"], input=data,
                             capture_output=True, check=True).stdout.decode()
    lines = listing.splitlines()
    assert [line.split()[-1] for line in lines] == ["bin", "bin/hello", "bin", "console"]
    assert lines[1].startswith("-rwxr-xr-x") and lines[2].startswith("l")
    assert lines[3].startswith("c")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["/bin/busybox", "cpio", "-i", "-d"], cwd=out, input=data, check=True,
                   capture_output=True)
    assert (out / "bin" / "hello").read_bytes() == b"odd length"
    assert (out / "sbin").readlink() == Path("bin")


def test_an_empty_cache_says_how_to_fill_it(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from rig.drivers.vm.machine import Guest

    monkeypatch.setenv("RIG_VM_CACHE", str(tmp_path))
    ours = f"blockrig-vm-{os.getpid()}-*"
    before = set(Path(tempfile.gettempdir()).glob(ours))
    with pytest.raises(RigError, match=r"^no guest kernel in .*: run 'rig vm fetch' "):
        Guest().boot()
    assert set(Path(tempfile.gettempdir()).glob(ours)) == before
