"""The plugin's fixtures, run by pytester: they work, and they clean up even when a test fails."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rig.drivers.loop import loops_for_backing_file


@pytest.mark.rig_needs("loop", "mkfs")
def test_loop_mount_and_graph_are_removed_even_on_failure(
        pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = tmp_path / "record.json"
    monkeypatch.setenv("RECORD", str(record))
    pytester.makepyfile(test_it="""
        import json, os
        import pytest
        from rig.errors import RigError

        BACKENDS = []

        def test_everything(rig_image, rig_loop, rig_graph, rig_mount):
            image = rig_image("1M", fill=0xAB)
            dev = rig_loop("16M", block_size=4096, direct_io=True)
            ro = rig_loop(image=image, read_only=True)
            blk = rig_graph({"driver": "host_device", "filename": dev.path}, cache="none")
            BACKENDS.append(blk)
            assert blk.limits.request_alignment == 4096 and dev.dio
            blk.pwrite(1, b"x")
            assert blk.pread(0, 2) == b"\\0x"
            ro_blk = rig_graph({"driver": "host_device", "filename": ro.path}, read_only=True)
            assert ro_blk.pread(0, 4) == b"\\xab" * 4
            with pytest.raises(RigError, match="not writable"):
                rig_graph({"driver": "host_device", "filename": ro.path})
            mnt = rig_mount(rig_loop("32M"))
            (mnt / "f").write_text("data")
            with open(os.environ["RECORD"], "w") as f:
                json.dump({"loops": [[d.path, d.backing_file] for d in (dev, ro)],
                           "mount": str(mnt)}, f)
            assert False, "failing on purpose"

        def test_backends_were_closed():
            assert BACKENDS and all(b.closed for b in BACKENDS)
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*failing on purpose*"])
    seen = json.loads(record.read_text())
    assert not os.path.ismount(seen["mount"])
    for _path, backing in seen["loops"]:
        assert loops_for_backing_file(backing) == [], backing
    scratch = seen["loops"][0][1]
    assert not os.path.exists(scratch), "the scratch backing file is removed"
    result.stdout.fnmatch_lines(["*= blockrig =*", "real hardware: 1 test(s)",
                                 "  loop device: 1 test(s)", "  mount: 1 test(s)"])


@pytest.mark.rig_needs("loop")
def test_rig_loop_indirect_parameters(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("rig_loop", [{"block_size": 4096, "size": 8 << 20},
                                              {"read_only": True}], indirect=True)
        def test_params(rig_loop):
            dev = rig_loop()
            assert (dev.block_size, dev.size) == (4096, 8 << 20) or dev.read_only
    """)
    pytester.runpytest().assert_outcomes(passed=2)


def test_rig_faulty_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import errno
        import pytest
        from rig.errors import ConfigError
        from rig.filters.blkdebug import find_debug_node

        def test_list_of_rules(rig_faulty):
            blk = rig_faulty([{"event": "read_aio", "errno": errno.EIO, "once": True}])
            with pytest.raises(OSError) as exc:
                blk.pread(0, 512)
            assert exc.value.errno == errno.EIO
            assert blk.pread(0, 512) == bytes(512)

        def test_rule_dict_with_states(rig_faulty):
            blk = rig_faulty({
                "inject-error": [{"event": "write_aio", "errno": errno.ENOSPC, "state": 2}],
                "set-state": [{"event": "write_aio", "state": 1, "new_state": 2}],
            }, on="memory", size="1M")
            blk.pwrite(0, b"a")  # state 1 -> 2
            with pytest.raises(OSError) as exc:
                blk.pwrite(0, b"b")
            assert exc.value.errno == errno.ENOSPC
            assert find_debug_node(blk.root) is not None

        def test_bad_target(rig_faulty):
            with pytest.raises(ConfigError, match="on must be"):
                rig_faulty([], on="tape")
    """)
    pytester.runpytest().assert_outcomes(passed=3)


@pytest.mark.rig_needs("loop")
def test_rig_faulty_on_a_loop_device(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import errno
        import pytest

        def test_loop(rig_faulty):
            blk = rig_faulty([{"event": "write_aio", "errno": errno.EIO, "sector": 8}],
                             on="loop", size="4M", cache="none", direct_io=True)
            assert "/dev/loop" in blk.root.describe(), blk.root.describe()
            blk.pwrite(0, b"\\1" * 4096)
            with pytest.raises(OSError):
                blk.pwrite(4096, b"\\2" * 512)
    """)
    pytester.runpytest().assert_outcomes(passed=1)
