"""Run the rig's stream job on an image the way tests/jobs/qsd.py runs QEMU's: resume a job that
stopped on an error (cancel it after ``max_stops``), and return the same :class:`Outcome`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import rig
from rig.core.backend import IoStatus
from rig.jobs import StreamJob
from rig.jobs.events import BLOCK_JOB_CANCELLED, BLOCK_JOB_COMPLETED, BLOCK_JOB_ERROR
from tests.formats.helpers import spec
from tests.jobs.qsd import Outcome


def outcome(job: StreamJob, stopped: list[dict[str, Any]]) -> Outcome:
    ends = job.events.named(BLOCK_JOB_COMPLETED) + job.events.named(BLOCK_JOB_CANCELLED)
    assert len(ends) == 1, [e.name for e in job.events.all()]
    end = ends[0]
    return Outcome(end.name == BLOCK_JOB_COMPLETED, end.data.get("error"), end.data["offset"],
                   end.data["len"], [e.data["action"] for e in job.events.named(BLOCK_JOB_ERROR)],
                   stopped)


def follow(job: StreamJob, max_stops: int = 5, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait for ``job``; resume it each time it stops on an error (cancel after ``max_stops``).
    The query-block-jobs view (status, offset, io-status) at each stop."""
    stopped: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not job.join(0.002):
        assert time.monotonic() < deadline, f"job still {job.status} after {timeout} s"
        q = job.query()
        if q["status"] == "paused" and job.iostatus is not IoStatus.OK:
            stopped.append({k: q[k] for k in ("status", "offset", "io-status")})
            if len(stopped) > max_stops:
                job.cancel(force=True)
            else:
                job.resume()
    return stopped


def rig_stream(top: Path, *, base: str | None = None, on_error: str = "report",
               max_stops: int = 5, **kw: Any) -> tuple[Outcome, StreamJob]:
    with rig.open(spec(top)) as blk:
        job = StreamJob(blk, base=base, on_error=on_error, **kw)
        job.start()
        stopped = follow(job, max_stops)
    return outcome(job, stopped), job
