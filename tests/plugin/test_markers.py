"""``rig_needs``, skip reasons, the end-of-run summary, the options, and living beside a suite's
own conventions (a ``needs`` marker of its own)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from rig.fixtures.capabilities import CAPABILITIES


def test_missing_capabilities_skip_with_what_and_how(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    empty = pytester.mkdir("empty-path")
    monkeypatch.setenv("PATH", str(empty))  # no fio, no qemu-io here
    pytester.makepyfile("""
        import pytest

        @pytest.mark.rig_needs("fio", "qemu_utils")
        def test_tools():
            raise AssertionError("must not run")

        @pytest.mark.rig_needs("lab_disk")
        def test_lab():
            raise AssertionError("must not run")

        @pytest.mark.rig_needs("lab_disk")
        class TestInLab:
            def test_one(self):
                raise AssertionError("must not run")

        @pytest.mark.rig_needs("lob")
        def test_typo():
            pass
    """)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=3, errors=1)
    result.stdout.fnmatch_lines([
        "SKIPPED * rig_needs: missing fio: fio not on PATH (get it: apt-get install fio); "
        "qemu_utils: qemu-io, qemu-img not on PATH (get it: apt-get install qemu-utils)",
        "SKIPPED [[]2[]] * rig_needs: missing lab_disk: no lab inventory given (--rig-lab) "
        "(get it: pass --rig-lab lab.toml*",
    ])
    result.stdout.fnmatch_lines([
        "*rig_needs: unknown capability 'lob' (known: root, loop, fuse, qemu_utils, fio, *",
        "*= blockrig =*",
        "skipped for missing capabilities:",
        "  fio: 1 test(s); get it: apt-get install fio",
        "  lab_disk: 2 test(s); get it: pass --rig-lab lab.toml*",
        "  qemu_utils: 1 test(s); get it: apt-get install qemu-utils",
    ])


@pytest.mark.rig_needs("root")
def test_present_capabilities_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.rig_needs("root")
        def test_root():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "= blockrig =" not in result.stdout.str()  # nothing to report, nothing printed


def test_every_capability_says_how_to_get_it() -> None:
    for name, cap in CAPABILITIES.items():
        assert cap.name == name and cap.how
        what = cap.check(None)
        assert what is None or isinstance(what, str)


def test_coexists_with_a_suites_own_needs_marker(pytester: pytest.Pytester) -> None:
    """A suite with its own ``needs`` marker and ``loop_device`` fixture (as this project's
    tests/conftest.py once had) keeps them: the plugin's names never collide with them."""
    pytester.makeconftest("""
        import pytest

        def pytest_configure(config):
            config.addinivalue_line("markers", "needs(*caps): the suite's own marker")

        def pytest_runtest_setup(item):
            for marker in item.iter_markers("needs"):
                if "unicorn" in marker.args:
                    pytest.skip("needs a unicorn")

        @pytest.fixture
        def loop_device():
            return "the suite's own"
    """)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.needs("unicorn")
        def test_own_marker():
            pass

        def test_own_fixture(loop_device, rig_image):
            assert loop_device == "the suite's own" and rig_image().exists()
    """)
    result = pytester.runpytest("--strict-markers", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * needs a unicorn"])
    assert "= blockrig =" not in result.stdout.str()


def test_markers_and_options_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.rig_needs(*caps): capabilities the test needs*"])
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["blockrig (block storage test rig):", "*--rig-lab=FILE*",
                                 "*--rig-allow-destructive*", "*--rig-dry-run*",
                                 "*--rig-profile=*", "*--rig-lease-timeout=SECONDS*"])


def test_rig_profile_selects_and_restores(pytester: pytest.Pytester,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYPOTHESIS_PROFILE", raising=False)
    before = settings.default.max_examples
    pytester.makepyfile("""
        import os
        from hypothesis import settings

        def test_profile():
            assert os.environ["HYPOTHESIS_PROFILE"] == "hil"
            assert settings.default.max_examples == 20
            assert settings.default.stateful_step_count == 100
    """)
    pytester.runpytest("--rig-profile", "hil").assert_outcomes(passed=1)
    assert "HYPOTHESIS_PROFILE" not in os.environ
    assert settings.default.max_examples == before
    result = pytester.runpytest("--rig-profile", "nightly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--rig-profile: invalid choice: 'nightly'*"])


def test_a_broken_inventory_is_a_usage_error(pytester: pytest.Pytester) -> None:
    lab = pytester.makefile(".toml", lab='[[disk]]\nname = "a"\nwwn = "0x5"\nsize = 1\n')
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--rig-lab", str(lab))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--rig-lab: {lab}: disk 'a': unknown key 'size' (known: *"])
