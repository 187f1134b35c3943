"""The job mechanism (QEMU's job.c and blockjob.c): one thread per job, a status machine,
progress, a rate limit on the rig's clock, pause/resume/cancel, error actions, events.

A concrete job subclasses :class:`Job` and implements :meth:`Job.run` (the loop; returns an
errno, 0 for success, or raises ``OSError``), and optionally :meth:`Job.prepare` (runs only when
``run`` succeeded and the job was not cancelled; may still fail the job), :meth:`Job.abort` and
:meth:`Job.clean`. Inside ``run`` it calls :meth:`Job.sleep` between units of work (the pause
point, where cancel and pause take effect), :meth:`Job.progress_update`,
:meth:`Job.ratelimit_delay` and :meth:`Job.error_action`.

Statuses, as QEMU's ``JobStatus``: created -> running <-> paused -> (ready) -> waiting ->
pending -> concluded -> null on success; running -> aborting -> concluded -> null on failure or
cancel. Every change is a ``JOB_STATUS_CHANGE`` event; the end is ``BLOCK_JOB_COMPLETED`` (with
``error``, strerror text, when the job failed) or ``BLOCK_JOB_CANCELLED``. Jobs dismiss
themselves (QEMU's auto-dismiss), so the last status is ``null``.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, ClassVar

from rig.core.backend import ErrorAction, IoStatus
from rig.core.clock import RealClock, WaitClock
from rig.errors import ConfigError, RigError, StateError
from rig.jobs.events import (
    BLOCK_JOB_CANCELLED,
    BLOCK_JOB_COMPLETED,
    BLOCK_JOB_ERROR,
    JOB_STATUS_CHANGE,
    JobEvent,
    JobEventLog,
    Listener,
)
from rig.jobs.ratelimit import RateLimit


class JobStatus(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    READY = "ready"
    WAITING = "waiting"
    PENDING = "pending"
    ABORTING = "aborting"
    CONCLUDED = "concluded"
    NULL = "null"


def parse_speed(speed: int) -> int:
    if speed < 0:
        raise ConfigError("Parameter 'speed' expects a non-negative value")
    return speed


def error_action_for(policy: ErrorAction, err: int) -> ErrorAction:
    """QEMU's block_job_error_action choice: ``enospc`` stops on ENOSPC, reports the rest."""
    if policy is ErrorAction.ENOSPC:
        return ErrorAction.STOP if err == errno.ENOSPC else ErrorAction.REPORT
    return policy


class Job:
    """One background job. Thread-safe: every public method may be called from any thread."""

    job_type: ClassVar[str] = "job"

    def __init__(self, job_id: str, *, speed: int = 0, clock: WaitClock | None = None,
                 listeners: Iterable[Listener] = ()) -> None:
        self.id = job_id
        self.clock: WaitClock = clock if clock is not None else RealClock()
        self.events = JobEventLog()
        self._listeners = list(listeners)
        self._cond = threading.Condition(threading.RLock())
        self._status = JobStatus.CREATED
        self._limit = RateLimit(parse_speed(speed))
        self.offset = 0
        self.len = 0
        self.iostatus = IoStatus.OK
        self.error: str | None = None
        """strerror text of the failure (None: success, or cancelled without an error)."""
        self.cancelled = False
        self.user_paused = False
        self._pause_count = 0
        self._busy = False
        self._kicked = False
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.emit(JOB_STATUS_CHANGE, {"id": self.id, "status": str(JobStatus.CREATED)})

    # ------------------------------------------------------------ user side
    @property
    def status(self) -> JobStatus:
        with self._cond:
            return self._status

    @property
    def speed(self) -> int:
        return self._limit.speed

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                raise StateError(f"job '{self.id}' was already started")
            self._thread = threading.Thread(target=self._main, name=f"rig-job-{self.id}",
                                            daemon=True)
            self._busy = True
        self._thread.start()

    def pause(self) -> None:
        """QMP ``block-job-pause``: the job stops at its next pause point."""
        with self._cond:
            self._check_live()
            if self.user_paused:
                raise StateError(f"job '{self.id}' is already paused")
            self.user_paused = True
            self._pause_count += 1

    def resume(self) -> None:
        """QMP ``block-job-resume``: the io-status goes back to ok; a stopped job retries."""
        with self._cond:
            self._check_live()
            if not self.user_paused:
                raise StateError(f"Can't resume a job that was not paused (job '{self.id}')")
            self.user_paused = False
            self.iostatus = IoStatus.OK
            self._pause_count -= 1
            self._wake()

    def cancel(self, force: bool = False) -> None:
        """QMP ``block-job-cancel``: a paused job needs ``force`` (as in QEMU)."""
        with self._cond:
            self._check_live()
            if self._status in (JobStatus.WAITING, JobStatus.PENDING, JobStatus.ABORTING):
                raise StateError(f"job '{self.id}' is {self._status}: its work is done, too "
                                 "late to cancel")
            if self.user_paused and not force:
                raise StateError(f"The block job for device '{self.id}' is currently paused "
                                 "(cancel with force)")
            self.cancelled = True
            if self.user_paused:
                self.user_paused = False
                self.iostatus = IoStatus.OK
                self._pause_count -= 1
            self._wake()

    def set_speed(self, speed: int) -> None:
        """QMP ``block-job-set-speed``: bytes per second, 0 for no limit; takes effect now."""
        with self._cond:
            self._check_live()
            self._limit.set_speed(parse_speed(speed))
            self._wake()

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait (real time) until the job has ended; its error text (None: no error)."""
        if self._thread is None:
            raise StateError(f"job '{self.id}' was never started")
        if not self._done.wait(timeout):
            raise TimeoutError(f"job '{self.id}' still {self.status} after {timeout} s")
        return self.error

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` real seconds for the end; whether the job has ended."""
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def query(self) -> dict[str, Any]:
        """QMP ``query-block-jobs`` entry."""
        with self._cond:
            return {"type": self.job_type, "device": self.id, "len": self.len,
                    "offset": self.offset, "busy": self._busy,
                    "paused": self._pause_count > 0, "speed": self.speed,
                    "io-status": str(self.iostatus), "ready": self._status is JobStatus.READY,
                    "status": str(self._status), "auto-finalize": True, "auto-dismiss": True}

    def _check_live(self) -> None:
        if self._status in (JobStatus.CONCLUDED, JobStatus.NULL):
            raise StateError(f"job '{self.id}' has ended ({self._status})")

    def _wake(self) -> None:
        self._kicked = True
        self._cond.notify_all()
        self.clock.kick()

    # ------------------------------------------------------------ job side
    def run(self) -> int:
        """The job's work; an errno (0: success). Subclasses implement it."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Success only (not cancelled, run returned 0): make the result visible."""

    def abort(self) -> None:
        """Failure or cancel: leave things as they were."""

    def clean(self) -> None:
        """Always, last: release what the job held."""

    def event_data(self) -> dict[str, Any]:
        return {"type": self.job_type, "device": self.id, "len": self.len,
                "offset": self.offset, "speed": self.speed}

    def emit(self, name: str, data: dict[str, Any]) -> None:
        event = JobEvent(name, data)
        self.events.append(event)
        for listener in self._listeners:
            listener(event)

    def _set_status(self, status: JobStatus) -> None:
        with self._cond:
            self._status = status
        self.emit(JOB_STATUS_CHANGE, {"id": self.id, "status": str(status)})

    @property
    def is_cancelled(self) -> bool:
        with self._cond:
            return self.cancelled

    def progress_set_remaining(self, remaining: int) -> None:
        with self._cond:
            self.len = self.offset + remaining

    def progress_update(self, n: int) -> None:
        with self._cond:
            self.offset += n
            self.len = max(self.len, self.offset)

    def ratelimit_delay(self, n: int) -> int:
        """Nanoseconds to sleep after dispatching ``n`` bytes (0 without a speed)."""
        with self._cond:
            return self._limit.delay(n, self._now_ns())

    def _now_ns(self) -> int:
        return round(self.clock.monotonic() * 1e9)

    def sleep(self, delay_ns: int) -> None:
        """QEMU's job_sleep_ns: sleep on the job's clock (cut short by cancel, speed changes
        and resume), then the pause point."""
        with self._cond:
            self._kicked = False
            if delay_ns > 0 and not self.cancelled:
                deadline = self._now_ns() + delay_ns
                self._busy = False
                while not self.cancelled and not self._kicked:
                    left = deadline - self._now_ns()
                    if left <= 0:
                        break
                    self.clock.wait(self._cond, left / 1e9)
                self._busy = True
            self._pause_point()

    def _pause_point(self) -> None:
        with self._cond:
            if self._pause_count <= 0 or self.cancelled:
                return
            before = self._status
        self._set_status(JobStatus.PAUSED)
        with self._cond:
            self._busy = False
            while self._pause_count > 0 and not self.cancelled:
                self._cond.wait()  # not the clock's: a pause is no time-based wait
            self._busy = True
        self._set_status(before)

    def error_action(self, policy: ErrorAction, err: int, is_read: bool = True) -> ErrorAction:
        """QEMU's block_job_error_action: decide, stop the job for ``stop`` (a user-visible
        pause with the io-status set), emit BLOCK_JOB_ERROR."""
        action = error_action_for(policy, err)
        if action is ErrorAction.STOP:
            with self._cond:
                if not self.user_paused:
                    self._pause_count += 1
                    self.user_paused = True
                if self.iostatus is IoStatus.OK:
                    self.iostatus = IoStatus.NOSPACE if err == errno.ENOSPC else IoStatus.FAILED
        self.emit(BLOCK_JOB_ERROR, {"device": self.id, "operation": "read" if is_read else
                                    "write", "action": str(action)})
        return action

    # ------------------------------------------------------------ the thread
    def _main(self) -> None:
        try:
            self._set_status(JobStatus.RUNNING)
            err = self._run_guarded()
            with self._cond:
                cancelled = self.cancelled
                if not cancelled:  # from here on a cancel is refused (see cancel)
                    self._status = JobStatus.WAITING if not err else JobStatus.ABORTING
            if not err and cancelled:
                err = errno.ECANCELED
            if not err:
                self._set_status(JobStatus.WAITING)
                self._set_status(JobStatus.PENDING)
                try:
                    self.prepare()
                except OSError as e:
                    err = e.errno or errno.EIO
                    self.error = str(e.strerror or e)
                except RigError as e:
                    err = errno.EIO
                    self.error = str(e)
            if err:
                self._set_status(JobStatus.ABORTING)
                if err != errno.ECANCELED and self.error is None:
                    self.error = os.strerror(err)
                self.abort()
            self.clean()
            data = self.event_data()
            if cancelled:
                self.emit(BLOCK_JOB_CANCELLED, data)
            else:
                if self.error is not None:
                    data["error"] = self.error
                self.emit(BLOCK_JOB_COMPLETED, data)
            self._set_status(JobStatus.CONCLUDED)
            self._set_status(JobStatus.NULL)
        finally:
            with self._cond:
                self._busy = False
            self._done.set()

    def _run_guarded(self) -> int:
        """``run``; an exception fails the job (never leaves a waiter hanging): OSError with its
        strerror text, anything else (a RigError, a bug) as EIO with its message."""
        try:
            return self.run()
        except OSError as e:
            err = e.errno or errno.EIO
            self.error = os.strerror(err)
            return err
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            return errno.EIO
