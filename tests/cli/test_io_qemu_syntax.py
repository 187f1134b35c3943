"""``rig io`` against Debian's qemu-io 7.2 where qemu-iotests found them apart (issue 19): the
command line and its messages, the open syntax, and commands. Each case runs both programs on
their own copy of the same image and compares stdout, stderr and the exit status (with
``RIG_IO_NAME=qemu-io``, so the program name in messages is the same)."""

from __future__ import annotations

import os
import subprocess
import tempfile
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
        d = Path(tempfile.mkdtemp(prefix=name, dir=tmp_path))
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


# ---------------------------------------------------------------- behaviour
def test_read_past_the_end_of_a_short_raw_file(tmp_path: Path) -> None:
    """qemu-iotests 101: a 320-byte file is 512 bytes long, its tail reads as zeroes."""
    r = same(tmp_path, ["-f", "raw", "-c", "read -P 0 0 512", "-c", "length", "-c",
                        "read 512 1", "IMG"], image=bytes(320))
    assert "512 bytes\n" in r.out


RAW_WINDOW = ('json:{"driver": "raw", "offset": "512", "size": "1024", '
              '"file": {"driver": "file", "filename": "IMG"}}')


@pytest.mark.parametrize("script", [
    ["write -P 10 0 1024", "read -P 10 0 1024", "write 1023 2", "read 1024 1", "length",
     "map", "discard 0 512", "truncate 2048"],
], ids=["window"])
def test_raw_offset_and_size(tmp_path: Path, script: list[str]) -> None:
    """qemu-iotests 171: raw's offset and size options make a window on the file."""
    args = [a for line in script for a in ("-c", line)]
    same(tmp_path, [*args, RAW_WINDOW], image=bytes(4096))
    same(tmp_path, ["-c", "read -v 500 32", "-f", "raw", "IMG"], image=bytes(range(256)) * 16)


@pytest.mark.parametrize("spec", [
    RAW_WINDOW.replace('"512"', '"8192"'), RAW_WINDOW.replace('"1024"', '"4000"'),
    RAW_WINDOW.replace('"1024"', '"1000"'),
], ids=["offset-past-end", "too-big", "not-sectors"])
def test_raw_window_errors(tmp_path: Path, spec: str) -> None:
    same(tmp_path, ["-c", "read 0 1", spec], image=bytes(4096))


def test_write_to_read_only_image(tmp_path: Path) -> None:
    """qemu-iotests 187: the write permission is checked before the command runs."""
    same(tmp_path, ["-r", "-f", "raw", "-c", "write 0 1", "-c", "write", "-c", "discard 0 1",
                    "-c", "writev 0 1", "-c", "aio_write 0 1", "-c", "truncate 0",
                    "-c", "read 0 1", "IMG"])


@pytest.mark.parametrize("script", [
    ["reopen -w", "write 0 64k", "reopen -r", "write 0 64k", "read -P 0xcd 0 64k"],
    ["reopen -o node-name=foo", "reopen -o file.driver=qcow2", "reopen -o driver=qcow2",
     "reopen -o file.driver=file", "reopen -r -o read-only=on", "reopen -w -o read-only=on",
     "reopen -c none -o cache.direct=on", "reopen -c directsync -o cache.no-flush=on",
     "reopen -o read-only=foo", "reopen -o cache.no-flush=bar", "reopen -o cache.direct=baz",
     "reopen -o auto-read-only=qux", "reopen x", "reopen -r -w", "reopen -c sometimes",
     "reopen -c none", "write -P 1 0 4k", "reopen -c writeback", "read -P 1 0 4k"],
], ids=["read-write", "checks"])
def test_reopen(tmp_path: Path, script: list[str]) -> None:
    """qemu-iotests 133 and 187."""
    args = [a for line in script for a in ("-c", line)]
    ro = ["-r"] if script[0] == "reopen -w" else []
    same(tmp_path, [*ro, "-f", "qcow2", *args, "IMG"], qcow2=64 << 20)


def test_stdout_is_block_buffered_on_a_pipe(tmp_path: Path) -> None:
    """qemu-io's C stdio: on a pipe, stderr's lines come before stdout written ahead of them
    (even with PYTHONUNBUFFERED set, as it is for some test runners)."""
    img = tmp_path / "t.img"
    img.write_bytes(bytes(1 << 16))
    argv = ["-f", "raw", "-c", "read 0 1", "-c", "bogus", str(img)]
    outs = []
    for prog in (["qemu-io"], [*RIG, "io"]):
        p = subprocess.run([*prog, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env={**os.environ, **NAME, "PYTHONUNBUFFERED": "1"},
                           check=False)
        outs.append(normalise(p.stdout))
    assert outs[0].startswith('command "bogus" not found\nread 1/1')
    assert outs[1] == outs[0]


def _backed(tmp_path: Path) -> Path:
    """A qcow2 base with 1 MiB of 7s at 0, and the directory for overlays on it."""
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "4M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P 7 0 1M", str(base)],
                   check=True)
    return base


@pytest.mark.parametrize("args", [
    ["-C", "-c", "read -P 7 0 64k", "-c", "read 0 0", "-c", "map", "-c", "read -P 7 0 4k"],
    ["-C", "-r", "-c", "read 0 1"],
    ["-s", "-c", "write -P 9 0 64k", "-c", "read -P 9 0 64k", "-c", "map"],
    ["-s", "-C", "-c", "read -P 7 64k 64k", "-c", "map"],
    ["-c", "open -C -s IMG", "-c", "read -P 7 1M 4k", "-c", "map"],
    ["-c", "open -r -o driver=copy-on-read,file.driver=qcow2 IMG", "-c", "read 0 1"],
], ids=["C", "C-read-only", "s", "s-C", "open-C-s", "driver-read-only"])
def test_copy_on_read_and_snapshot(tmp_path: Path, args: list[str]) -> None:
    """qemu-io's -C (copy-on-read into the top image, 197, 215) and -s (writes to a throw-away
    overlay, 052): the same output, and afterwards the same image."""
    base = _backed(tmp_path)
    maps = []
    for prog in (["qemu-io"], [*RIG, "io"]):
        top = tmp_path / "top.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(base), str(top)], check=True)
        argv = [a.replace("IMG", str(top)) for a in args]
        r = run([*prog, "-f", "qcow2", *argv, *([] if "open" in args[1] else [str(top)])],
                env=NAME)
        after = run(["qemu-io", "-f", "qcow2", "-c", "map", str(top)])
        maps.append((normalise(r.out), r.err.replace(str(top), "IMG"), r.rc, after.out))
    assert maps[1] == maps[0]


@pytest.mark.parametrize("script", [
    ["open -o driver=raw,file.driver=file,file.filename=IMG", "read 0 512"],
    ["open -o file.filename=IMG", "read 0 512"],
    ["open -o foo=bar"],
    ["open -r -o driver=file,filename=IMG", "read 0 1", "write 0 1"],
    ["open -t sometimes IMG"],
    ["open -d maybe IMG"],
    ["open -f raw IMG", "close", "open -i posix IMG"],
], ids=["graph", "probed", "no-driver", "file", "bad-cache", "bad-discard", "bad-aio"])
def test_open_with_the_image_in_its_options(tmp_path: Path, script: list[str]) -> None:
    """qemu-iotests 226, 072: 'open -o' alone names the image; open's own defaults."""
    same(tmp_path, ["-f", "raw", *[a for line in script for a in ("-c", line)]])


def test_unknown_driver_and_cdrom_messages(tmp_path: Path) -> None:
    same(tmp_path, ["-f", "host_floppy", "-c", "read 0 1", "IMG"])
    same(tmp_path, ["-c", "open -r -o driver=host_cdrom,filename=IMG"])
    r = run([*RIG, "io", "--verbose-errors", "-f", "host_floppy", str(tmp_path / "x")],
            env=NAME)
    assert r.err.splitlines()[1].startswith("qemu-io: known drivers: ")


@pytest.mark.parametrize(("script", "status"), [
    (["write -P 0x5a 0 512", "sigraise 9", "read 0 1"], -9),
    (["sigraise 99", "sigraise x", "sigraise 65", "sigraise 0", "read 0 1"], 1),
    (["write 0 1", "abort", "read 0 1"], -6),
], ids=["kill", "bad", "abort"])
def test_sigraise_and_abort(tmp_path: Path, script: list[str], status: int) -> None:
    """qemu-iotests 039: the process dies of the signal with stdout flushed (abort: not)."""
    r = same(tmp_path, ["-f", "raw", *[a for line in script for a in ("-c", line)], "IMG"])
    assert r.rc == status


@pytest.mark.parametrize("create", [None, "compat=0.10", "lazy_refcounts=on,cluster_size=4k"])
def test_info_on_qcow2(tmp_path: Path, create: str | None) -> None:
    """qemu-iotests 089: format name, cluster size, vm state offset, qcow2's details."""
    outs = []
    for prog in (["qemu-io"], [*RIG, "io"]):
        img = tmp_path / f"{prog[0].rsplit('/', 1)[-1]}.qcow2"
        opts = ["-o", create] if create else []
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *opts, str(img), "100M"],
                       check=True)
        outs.append(run([*prog, "-c", "info", str(img)]).out)
    assert outs[1] == outs[0]


@pytest.mark.parametrize("spec", [["-f", "raw", "IMG"],
                                  ['json:{"driver": "file", "filename": "IMG"}']],
                         ids=["raw", "file"])
def test_info(tmp_path: Path, spec: list[str]) -> None:
    """A protocol's name is printed twice, as QEMU's format and protocol name."""
    same(tmp_path, ["-c", "info", *spec])


def test_blkdebug_with_the_image_named_outside_its_options(tmp_path: Path) -> None:
    """qemu-iotests 197: 'open -o driver=blkdebug,image.driver=qcow2 IMG': IMG is the qcow2
    node's file, and blkdebug:: probes the format of the image under it."""
    conf = tmp_path / "blkdebug.conf"
    conf.write_text("# no rules\n")
    same(tmp_path, ["-c", f"open -o driver=blkdebug,config={conf},image.driver=qcow2 IMG",
                    "-c", "read 0 4k", "-c", "info"], qcow2=4 << 20)
    same(tmp_path, ["-c", "read 0 4k", "-c", "info", "blkdebug::IMG"], qcow2=4 << 20)


def test_alloc_past_the_end_and_blkdebug_filename_with_options(tmp_path: Path) -> None:
    """qemu-iotests 177, 204: 'open -o driver=blkdebug,image.driver=qcow2,align=4k
    blkdebug::IMG' (blkdebug parses its filename, image.* still apply); alloc counts only up
    to the end of the image."""
    same(tmp_path, ["-c", "open -o driver=blkdebug,image.driver=qcow2,align=4k blkdebug::IMG",
                    "-c", "write -P 3 1000 8k", "-c", "read -P 3 1000 8k", "-c", "alloc 1 1",
                    "-c", "alloc 3m 5P", "-c", "alloc 4m 1", "-c", "alloc 100m", "-c", "map"],
         qcow2=4 << 20)


def test_reopen_joins_options_as_qemu(tmp_path: Path) -> None:
    """qemu-iotests 137: a reopen keeps the options not given again; qcow2's overlap-check and
    cache-size options replace their old forms instead of conflicting with them."""
    script = ["reopen -o overlap-check=constant", "reopen -o overlap-check.template=all",
              "reopen -o cache-size=1M", "reopen -o l2-cache-size=512k",
              "reopen -o cache-size=2M", "write -P 5 0 64k", "read -P 5 0 64k"]
    same(tmp_path, ["-f", "qcow2", *[a for line in script for a in ("-c", line)], "IMG"],
         qcow2=64 << 20)


def test_resume_right_after_aio_write(tmp_path: Path) -> None:
    """qemu-iotests 046: 'resume' without 'wait_break' finds the request parked (qemu-io runs
    it up to the breakpoint before reading the next line; the rig waits for its thread)."""
    script = "break write_aio A\naio_write -P 10 0 0x2000\nresume A\naio_flush\nread -P 10 0 8k\n"
    same(tmp_path, ["-f", "raw", "blkdebug::IMG"], stdin=script)


def test_cor_write_rule_under_copy_on_read_is_not_called_unreachable(tmp_path: Path) -> None:
    """qemu-iotests 197: the copy-on-read filter emits cor_write, so a blkdebug rule on it
    below -C is live (no warning; qemu-io prints none)."""
    conf = tmp_path / "cor.conf"
    conf.write_text('[inject-error]\nevent = "cor_write"\nsector = "2048"\n')
    base = _backed(tmp_path)
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                    str(top)], check=True)
    r = run([*RIG, "io", "-c", f"open -C -o driver=blkdebug,config={conf},image.driver=qcow2 "
             f"{top}", "-c", "read -P 7 1M 4k", "-c", "read -P 7 0 4k"], env=NAME)
    assert r.err == ""
    assert r.out.count("read failed: Input/output error") == 1  # the copy at sector 2048
