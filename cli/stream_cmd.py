"""``rig stream IMAGE [--base B] [--speed S] [--on-error P] [--json] [--progress]``: QEMU's
block-stream job on a qcow2 image: copy what its backing chain (down to the base) holds into it,
then make the base (or nothing) its backing file.

A progress bar goes to stderr when it is a terminal (or with ``--progress``). With
``--on-error stop`` a failed chunk pauses the job: on a terminal, Enter retries and Ctrl-C
cancels; elsewhere the job is cancelled. Exit status: 0 done, 1 the job failed or was
cancelled, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from rig.cli.progress import ProgressBar
from rig.core.units import SizeError, parse_size
from rig.errors import RigError
from rig.jobs.events import BLOCK_JOB_ERROR
from rig.jobs.stream import StreamJob

DESCRIPTION = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="the top qcow2 image (a file name, or a "
                        "json:{...} graph whose root is a qcow2 node)")
    parser.add_argument("--base", metavar="B", help="the backing image to stop at (a file of "
                        "the chain); default: stream the whole chain")
    parser.add_argument("--speed", metavar="S", default="0",
                        help="bytes per second (suffixes k, M, G), 0 for no limit (default)")
    parser.add_argument("--on-error", default="report",
                        choices=["report", "ignore", "stop", "enospc"],
                        help="what a failed chunk does (QEMU's on-error; default report)")
    parser.add_argument("--json", action="store_true",
                        help="print the result (and the job's events) as one JSON object")
    parser.add_argument("--progress", action="store_true",
                        help="show the progress bar even when stderr is not a terminal")


def _spec(image: str) -> dict[str, Any] | str:
    if image.startswith("json:"):
        return image
    if not os.path.exists(image):
        raise _BadInput(f"'{image}': No such file (give the top qcow2 image of a chain)")
    with open(image, "rb") as f:
        if f.read(4) != b"QFI\xfb":
            raise _BadInput(f"'{image}' is not a qcow2 image (only a qcow2 top can be "
                            "streamed into)")
    return {"driver": "qcow2", "file": {"driver": "file", "filename": image}}


class _BadInput(RigError):
    pass


def run(args: argparse.Namespace) -> int:
    """stream a backing chain into a qcow2 image (QEMU's block-stream)"""
    import rig

    err = sys.stderr
    try:
        speed = parse_size(args.speed)
    except SizeError:
        return _bad(f"--speed: not a size: {args.speed!r} (e.g. 10M, or 0 for no limit)")
    try:
        spec = _spec(args.image)
        blk = rig.open(spec)
    except RigError as e:
        return _bad(str(e))
    try:
        try:
            job = StreamJob(blk, base=args.base, speed=speed, on_error=args.on_error)
        except RigError as e:
            return _bad(str(e))
        bar = ProgressBar("streaming", job.len, out=err, force=args.progress,
                          counts=lambda done, total: f"{done >> 20}/{total >> 20} MiB")
        job.start()
        try:
            _follow(job, bar)
        except KeyboardInterrupt:
            job.cancel(force=True)
            job.wait()
        bar.close()
        return _report(job, args.json)
    finally:
        blk.close()


def _follow(job: StreamJob, bar: ProgressBar) -> None:
    """Wait for the job, drawing the bar; handle a stop (``--on-error stop``)."""
    interactive = sys.stdin.isatty()
    while not job.done:
        job.join(0.1)
        _draw(bar, job)
        if job.user_paused and job.events.named(BLOCK_JOB_ERROR) and not job.done:
            q = job.query()
            if not interactive:
                sys.stderr.write(f"\nrig stream: stopped at offset {q['offset']} "
                                 f"(io-status {q['io-status']}); cancelling: nobody can resume "
                                 "it here\n")
                job.cancel(force=True)
                continue
            sys.stderr.write(f"\nrig stream: stopped at offset {q['offset']} (io-status "
                             f"{q['io-status']}): Enter retries, Ctrl-C cancels\n")
            sys.stdin.readline()
            job.resume()
    _draw(bar, job, final=True)  # also for a job done before the first draw


def _draw(bar: ProgressBar, job: StreamJob, *, final: bool = False) -> None:
    q = job.query()
    bar.total = q["len"]
    bar.update(q["offset"], force=final)


def _report(job: StreamJob, as_json: bool) -> int:
    ok = job.error is None and not job.cancelled
    status = "completed" if ok else "cancelled" if job.cancelled else "failed"
    top = job.top.header
    backing = top.backing_file if top is not None else None
    if as_json:
        print(json.dumps({"status": status, "device": job.id, "len": job.len,
                          "offset": job.offset, "speed": job.speed, "error": job.error,
                          "copied": job.copied, "backing-file": backing or None,
                          "events": [e.as_qmp() for e in job.events.all()]}))
    elif ok:
        print(f"stream {job.id}: done, {job.len} bytes, {job.copied} copied; backing file: "
              f"{backing or 'none'}")
    if not ok:
        what = "cancelled" if job.cancelled else f"failed: {job.error}"
        sys.stderr.write(f"rig stream: {what} at offset {job.offset} of {job.len} (the image "
                         "is valid and its backing file unchanged)\n")
    return 0 if ok else 1


def _bad(msg: str) -> int:
    sys.stderr.write(f"rig stream: error: {msg}\n")
    return 2
