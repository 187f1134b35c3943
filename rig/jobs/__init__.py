"""Background block jobs (QEMU's job layer): :class:`Job` is the mechanism (status machine,
progress, rate limit, pause/resume/cancel, error actions, events); :class:`StreamJob` is the
block-stream job. See docs/jobs.md."""

from rig.jobs.events import JobEvent
from rig.jobs.job import Job, JobStatus
from rig.jobs.stream import STREAM_CHUNK, StreamJob

__all__ = ["STREAM_CHUNK", "Job", "JobEvent", "JobStatus", "StreamJob"]
