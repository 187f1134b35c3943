"""``rig io`` against Debian's qemu-io 7.2 where qemu-iotests found them apart (issue 19): the
command line and its messages, the open syntax, and commands. Each case runs both programs on
their own copy of the same image and compares stdout, stderr and the exit status (with
``RIG_IO_NAME=qemu-io``, so the program name in messages is the same)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rig.core.options import parse_json_filename, qemu_json_to_json
from rig.errors import ConfigError
from rig.qemuio import cmdline
from tests.cli.helpers import RIG, Result, normalise, run
from tests.fuzzing import fuzz, one_line

NAME = {"RIG_IO_NAME": "qemu-io"}


def both(tmp_path: Path, args: list[str], *, image: bytes | None = None, qcow2: int = 0,
         stdin: str | None = None) -> tuple[Result, Result]:
    """Run ``qemu-io ARGS`` and ``rig io ARGS``, IMG in ARGS being each one's own image: a raw
    file holding ``image``, or with ``qcow2`` a new qcow2 image of that size."""
    results = []
    for name, argv0 in (("q", ["qemu-io"]), ("r", [*RIG, "io"])):
        d = tmp_path / name
        d.mkdir()
        img = d / "t.img"
        if qcow2:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), str(qcow2)],
                           check=True)
        else:
            img.write_bytes(image if image is not None else bytes(1 << 20))
        argv = [a.replace("IMG", str(img)) for a in args]
        r = run([*argv0, *argv], stdin, env=NAME)
        results.append(Result(r.rc, normalise(r.out.replace(str(img), "IMG")),
                              r.err.replace(str(img), "IMG")))
    return results[0], results[1]


def same(tmp_path: Path, args: list[str], **kw: object) -> Result:
    q, r = both(tmp_path, args, **kw)  # type: ignore[arg-type]
    assert "Traceback" not in r.err
    assert (r.out, r.err, r.rc) == (q.out, q.err, q.rc)
    return r


pytestmark = pytest.mark.rig_needs("qemu_utils")


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize("args", [
    ["-X"], ["--frobnicate"], ["-f"], ["--cmd"], ["--help=x"], ["-t", "sometimes", "IMG"],
    ["-d", "maybe", "IMG"], ["-i", "posix", "IMG"], ["IMG", "IMG"],
    ["-f", "raw", "--image-opts", "IMG"],
], ids=lambda a: " ".join(a))
def test_bad_command_lines(tmp_path: Path, args: list[str]) -> None:
    q, r = both(tmp_path, args)
    assert r.rc == q.rc == 1
    assert r.err.replace("rig io", "qemu-io") == q.err.replace("/usr/bin/qemu-io", "qemu-io")
    assert r.out.splitlines()[:1] == q.out.splitlines()[:1]  # the usage's first line


def test_long_options_and_prefixes(tmp_path: Path) -> None:
    same(tmp_path, ["--format=raw", "--cache", "none", "--read-only", "--cm", "read -P 0 0 4k",
                    "IMG"])


def test_program_name_defaults_to_rig_io(tmp_path: Path) -> None:
    r = run([*RIG, "io", "-f", "raw", "-c", "read 0 1", str(tmp_path / "missing")],
            env={"RIG_IO_NAME": ""})
    assert r.err.startswith("rig io: can't open device ")


# ---------------------------------------------------------------- open syntax
def test_single_quoted_json(tmp_path: Path) -> None:
    same(tmp_path, ["-c", "write -P 3 0 4k", "-c", "read -P 3 0 4k",
                    "json:{'driver': 'raw', 'file': {'driver': 'file', 'filename': 'IMG'}}"])


def test_qemu_json_dialect() -> None:
    assert parse_json_filename("json:{'a': 'it\\'s', 'b': \"x'y\", 'c\"': [1, true]}") == {
        "a": "it's", "b": "x'y", 'c"': [1, True]}
    with pytest.raises(ConfigError, match="Could not parse the JSON options"):
        parse_json_filename("json:{'a': 'unterminated}")


@given(st.text(alphabet="{}[]'\"\\:, ab1", max_size=40))
@fuzz
def test_fuzz_qemu_json(text: str) -> None:
    converted = qemu_json_to_json(text)
    assert isinstance(converted, str)
    try:
        parse_json_filename("json:" + text)
    except ConfigError as e:
        one_line(e)


@given(st.lists(st.sampled_from(["-c", "read 0 1", "-f", "raw", "--", "-", "--cache=none",
                                 "--c", "--cm", "-rn", "-tnone", "--aio", "-X", "IMG", "-h",
                                 "--image-opts", "-d", "ignore", "--object", "--loop", "=",
                                 "--help=1", "-Vq"]), max_size=8))
@fuzz
def test_fuzz_command_line(argv: list[str]) -> None:
    try:
        args = cmdline.parse(argv, "qemu-io")
    except cmdline.UsageError as e:
        assert "\n" not in str(e)
    except cmdline.BadValue as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert args.help or args.version or args.image in (None, *argv)


def test_rig_io_help_is_qemu_ios_usage() -> None:
    r = run([*RIG, "io", "--help"], env=NAME)
    assert r.rc == 0
    assert r.out.startswith("Usage: qemu-io [OPTIONS]... [-c STRING]... [file]\n")
