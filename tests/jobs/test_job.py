"""The job mechanism with a toy job: statuses and events as QEMU's, pause/resume/cancel,
speed changes, error actions (stop pauses with the io-status, resume retries)."""

from __future__ import annotations

import errno
import threading

import pytest

from rig.core.backend import ErrorAction, IoStatus
from rig.errors import ConfigError, StateError
from rig.jobs.events import BLOCK_JOB_CANCELLED, BLOCK_JOB_COMPLETED, BLOCK_JOB_ERROR
from rig.jobs.job import Job
from rig.testing.clock import VirtualClock

UNIT = 1000
pytestmark = pytest.mark.timeout(60)


class CountJob(Job):
    """Does ``units`` units of UNIT bytes; a unit listed in ``fail`` fails once with its errno
    (``always`` for every try)."""

    job_type = "count"

    def __init__(self, units: int, *, fail: dict[int, int] | None = None, always: bool = False,
                 on_error: ErrorAction = ErrorAction.REPORT, **kw: object) -> None:
        super().__init__("j0", **kw)  # type: ignore[arg-type]
        self.units = units
        self.fail = dict(fail or {})
        self.always = always
        self.on_error = on_error
        self.done_units: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.prepared = self.aborted = self.cleaned = False

    def run(self) -> int:
        self.progress_set_remaining(self.units * UNIT)
        i = delay = error = 0
        while i < self.units:
            self.sleep(delay)
            if self.is_cancelled:
                break
            self.gate.wait()
            err = self.fail.get(i, 0)
            if err and not self.always:
                del self.fail[i]
            if err:
                action = self.error_action(self.on_error, err)
                if action is ErrorAction.STOP:
                    continue
                error = error or err
                if action is ErrorAction.REPORT:
                    break
            else:
                self.done_units.append(i)
            i += 1
            self.progress_update(UNIT)
            delay = self.ratelimit_delay(UNIT)
        return error

    def prepare(self) -> None:
        self.prepared = True

    def abort(self) -> None:
        self.aborted = True

    def clean(self) -> None:
        self.cleaned = True


def test_success_statuses_and_events() -> None:
    job = CountJob(5)
    job.start()
    assert job.wait(10) is None
    assert job.events.statuses() == ["created", "running", "waiting", "pending", "concluded",
                                     "null"]
    (end,) = job.events.named(BLOCK_JOB_COMPLETED)
    assert end.data == {"type": "count", "device": "j0", "len": 5 * UNIT, "offset": 5 * UNIT,
                        "speed": 0}
    assert job.prepared and job.cleaned and not job.aborted


def test_report_fails_the_job_where_it_stopped() -> None:
    job = CountJob(5, fail={2: errno.EIO})
    job.start()
    assert job.wait(10) == "Input/output error"
    (err,) = job.events.named(BLOCK_JOB_ERROR)
    assert err.data == {"device": "j0", "operation": "read", "action": "report"}
    (end,) = job.events.named(BLOCK_JOB_COMPLETED)
    assert end.data["offset"] == 2 * UNIT and end.data["error"] == "Input/output error"
    assert job.events.statuses() == ["created", "running", "aborting", "concluded", "null"]
    assert job.aborted and not job.prepared


def test_ignore_goes_on_but_fails_at_the_end() -> None:
    job = CountJob(5, fail={1: errno.EIO}, on_error=ErrorAction.IGNORE)
    job.start()
    assert job.wait(10) == "Input/output error"
    assert job.offset == 5 * UNIT and job.done_units == [0, 2, 3, 4]
    assert job.aborted


@pytest.mark.parametrize(("err", "iostatus"), [(errno.EIO, IoStatus.FAILED),
                                                (errno.ENOSPC, IoStatus.NOSPACE)])
def test_stop_pauses_and_resume_retries(err: int, iostatus: IoStatus) -> None:
    job = CountJob(4, fail={2: err}, on_error=ErrorAction.STOP)
    job.start()
    job.events.wait_status("paused")
    q = job.query()
    assert (q["status"], q["offset"], q["io-status"], q["paused"]) == (
        "paused", 2 * UNIT, str(iostatus), True)
    with pytest.raises(StateError, match="currently paused"):
        job.cancel()
    job.resume()
    assert job.wait(10) is None
    assert job.done_units == [0, 1, 2, 3] and job.iostatus is IoStatus.OK


@pytest.mark.parametrize(("err", "action"), [(errno.EIO, "report"), (errno.ENOSPC, "stop")])
def test_enospc_policy(err: int, action: str) -> None:
    job = CountJob(3, fail={1: err}, on_error=ErrorAction.ENOSPC)
    job.start()
    if action == "stop":
        job.events.wait_status("paused")
        job.resume()
    job.wait(10)
    assert [e.data["action"] for e in job.events.named(BLOCK_JOB_ERROR)] == [action]
    assert (job.error is None) == (action == "stop")


def test_pause_freezes_progress_and_cancel_needs_force() -> None:
    job = CountJob(100)
    job.pause()
    job.start()
    job.events.wait_status("paused")
    frozen = job.offset
    assert job.query()["busy"] is False
    assert job.offset == frozen
    with pytest.raises(StateError):
        job.pause()
    job.cancel(force=True)
    assert job.wait(10) is None
    assert job.events.named(BLOCK_JOB_CANCELLED) and not job.events.named(BLOCK_JOB_COMPLETED)
    assert job.events.statuses()[-3:] == ["aborting", "concluded", "null"]
    assert job.aborted and not job.prepared


def test_resume_of_a_running_job_is_an_error() -> None:
    job = CountJob(1)
    job.gate.clear()
    job.start()
    with pytest.raises(StateError, match="not paused"):
        job.resume()
    job.gate.set()
    job.wait(10)
    with pytest.raises(StateError, match="has ended"):
        job.cancel()


def test_speed_on_a_virtual_clock() -> None:
    clock = VirtualClock()
    job = CountJob(10, speed=UNIT, clock=clock)  # one unit per second
    job.start()
    job.wait(10)
    assert clock.monotonic() == pytest.approx(9.0)


def test_set_speed_while_running() -> None:
    clock = VirtualClock()
    job = CountJob(4, speed=UNIT, clock=clock)
    job.pause()
    job.start()
    job.events.wait_status("paused")
    job.set_speed(0)
    job.resume()
    job.wait(10)
    assert clock.monotonic() == 0.0


def test_negative_speed_is_refused() -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        CountJob(1, speed=-1)


def test_listener_sees_every_event_in_order() -> None:
    seen: list[str] = []
    job = CountJob(2, listeners=[lambda e: seen.append(e.name)])
    job.start()
    job.wait(10)
    assert seen == [e.name for e in job.events.all()]
    assert seen[0] == "JOB_STATUS_CHANGE" and seen[-3] == BLOCK_JOB_COMPLETED


def test_cancel_after_the_work_is_refused() -> None:
    """Once run() has returned the job is waiting/pending: a cancel would come after the
    result was made visible, so it is refused (the job completes)."""
    entered, release = threading.Event(), threading.Event()

    class SlowPrepare(CountJob):
        def prepare(self) -> None:
            entered.set()
            release.wait(10)

    job = SlowPrepare(2)
    job.start()
    assert entered.wait(10)
    with pytest.raises(StateError, match="too late to cancel"):
        job.cancel()
    release.set()
    assert job.wait(10) is None
    assert job.events.named(BLOCK_JOB_COMPLETED)
