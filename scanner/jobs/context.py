"""What a running handler gets: progress reporting, cancellation and its time limit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from scanner.errors import JobCancelled, JobShutdown, JobTimedOut

if TYPE_CHECKING:
    from scanner.jobs.store import Job
    from scanner.services import Services

log = logging.getLogger(__name__)

# Progress is written (and the cancel flag read) at most this often: a handler may report
# progress per item without paying a database write per item.
SYNC_INTERVAL = 0.25


class JobContext:
    """Passed to every handler as ``ctx``.

    ``ctx.progress(done, total)`` reports progress; ``ctx.cancelled`` tells whether the job
    should stop; ``ctx.check()`` raises when it was cancelled or ran out of time, and is called
    by ``progress`` too, so a handler that reports progress stops promptly.
    """

    def __init__(
        self,
        job: Job,
        services: Services,
        *,
        clock: Any = time.monotonic,
        sync_interval: float = SYNC_INTERVAL,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.job = job
        self.services = services
        self._stopping = stopping
        self._clock = clock
        self._sync_interval = sync_interval
        self._started = clock()
        self._deadline = None if job.timeout is None else self._started + job.timeout
        self._progress: float | None = None
        self._written: float | None = None  # the progress last written
        self._synced_at = float("-inf")
        self._stop = False

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """1 on the first run of this job, 2 on the first retry, and so on."""
        return self.job.attempts

    @property
    def settings(self) -> Any:
        return self.services.settings

    @property
    def time_left(self) -> float | None:
        """Seconds before the job times out, or None if it has no time limit."""
        return None if self._deadline is None else self._deadline - self._clock()

    def progress(self, done: float, total: float | None = None) -> None:
        """Report progress as ``done`` of ``total`` (or a fraction 0-1 when total is None)."""
        fraction = done if total is None else (done / total if total else 1.0)
        self._progress = min(max(float(fraction), 0.0), 1.0)
        self.check()

    @property
    def cancelled(self) -> bool:
        """True once the job has been cancelled (checked against the store now and then)."""
        self._sync_if_due(self._clock())
        return self._stop

    @property
    def stop_seen(self) -> bool:
        """Whether the handler has been told, through ``cancelled``, ``check`` or
        ``progress``, that the job should stop (no store is asked here)."""
        return self._stop

    def check(self) -> None:
        """Raise ``JobCancelled``, ``JobTimedOut`` or ``JobShutdown`` when the job should stop
        now. The runner records each (a shutdown puts the job back in the queue).

        Cheap enough to call per item: the store is asked only every ``SYNC_INTERVAL``.
        """
        now = self._clock()
        self._sync_if_due(now)
        if self._stop:  # before a shutdown: a job handed back would only run again
            raise JobCancelled("cancelled while running")
        if self._stopping():
            raise JobShutdown("the consumer is shutting down")
        if self._deadline is not None and now >= self._deadline:
            raise JobTimedOut(f"timed out after {self.job.timeout:g}s")

    def flush(self) -> None:
        """Write the latest progress now, if it changed (the runner calls this at the end)."""
        if self._progress != self._written:
            self._sync(self._clock())

    def submit(self, type: str, payload: dict[str, Any] | None = None, **options: Any) -> Job:
        """Queue another job (of any registered type) from inside this one."""
        return self.services.jobs.submit(type, payload or {}, **options)

    def _sync_if_due(self, now: float) -> None:
        if now - self._synced_at >= self._sync_interval:
            self._sync(now)

    def _sync(self, now: float) -> None:
        """Write the progress and read the cancel flag: one statement."""
        self._synced_at = now
        store = self.services.store
        try:
            stop = store.report_progress(self.job.id, self.job.consumer or "", self._progress)
        except SQLAlchemyError:  # the store's trouble (a full disk), not the handler's: go on.
            # Only that: Huey's TaskTimeout (an Exception, from a signal) must get through.
            log.warning("could not record the progress of job %s", self.job.id, exc_info=True)
            return
        self._written = self._progress
        self._stop = stop or self._stop
