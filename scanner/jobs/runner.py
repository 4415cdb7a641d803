"""Runs one job in a consumer: claim it, call its handler, record how it ended."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from huey.exceptions import TaskTimeout
from marshmallow import ValidationError

from scanner.errors import JobCancelled, JobShutdown, JobTimedOut
from scanner.jobs.context import JobContext
from scanner.jobs.states import Status
from scanner.jobs.store import Ending, Job, utcnow
from scanner.jobs.types import LONGEST, JobType

if TYPE_CHECKING:
    from scanner.services import Services

log = logging.getLogger(__name__)

# Seconds before a job this consumer cannot run is offered again: time for a consumer that
# can to take it first.
HAND_OVER_DELAY = 1.0


def requeue(services: Services, job: Job, consumer: str, outcome: str, error: str) -> bool:
    """Put a job that ``consumer`` was running back in the queue, its attempt cut short by a
    shutdown or a crash; or end it cancelled, if a cancel was asked for. False (and nothing
    queued) if the consumer no longer held it."""
    released = services.store.release(job.id, consumer, outcome, error)
    if released is None:
        return False
    if released is Status.PENDING:
        services.queue.enqueue(job.id, priority=job.priority, timeout=job.timeout)
        log.info("job %s goes back to the queue (%s)", job.id, outcome)
    else:
        log.info("job %s is cancelled, as asked before its attempt was cut short", job.id)
    return True


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _flatten(messages: Any, where: str = "") -> str:
    """Marshmallow's nested error messages as one line: ``path: /x does not exist``."""
    if isinstance(messages, dict):
        return "; ".join(_flatten(v, f"{where}{k}.") for k, v in messages.items())
    if isinstance(messages, list):
        return "; ".join(_flatten(m, where) for m in messages)
    return f"{where.rstrip('.')}: {messages}" if where else str(messages)


class Runner:
    """Executes job ids taken from the queue. One per consumer, shared by its workers.

    Every write names this consumer, so if it was presumed dead and its job recovered by
    another, its late writes change nothing.

    With ``hold_endings`` (as a consumer on a SQLite queue runs it), how a job ended is not
    written at once: it rides in the transaction that claims the next job a worker takes,
    one commit a job instead of two (docs/benchmarks.md). ``settle`` writes what is left; the
    consumer calls it whenever a worker finds the queue empty and when it stops, so an ending
    waits at most for the next dequeue. A crash in that window runs the job again, as a crash
    just before its ending was written always did.
    """

    def __init__(
        self,
        services: Services,
        consumer_id: Callable[[], str],
        stopping: Callable[[], bool] = lambda: False,
        *,
        hold_endings: bool = False,
    ) -> None:
        self.services = services
        self.consumer_id = consumer_id
        self.stopping = stopping
        self.hold_endings = hold_endings
        # By job id: any worker's claim may carry any of them, and one put back after a
        # failed write can never take the place of another.
        self._held: dict[str, Ending] = {}
        # (job id, attempt) claimed by a worker here and not yet ended. By attempt: a job
        # retried at once may be claimed again by another worker before the first has left.
        self._claims: set[tuple[str, int]] = set()

    def holds(self, job_id: str) -> bool:
        """Whether a worker here runs the job, or its ending waits here to be written."""
        # A copy: workers add and discard claims meanwhile (each one call, atomic).
        return job_id in self._held or any(held == job_id for held, _ in self._claims.copy())

    def settle(self) -> None:
        """Write every ending still held. Huey calls this when a worker finds the queue empty
        and when the consumer stops, where no one could handle an error: an ending the
        database refuses is logged and held for the next try."""
        taken = []
        while ending := self._take_held():  # all first: one refused is held again, not retried
            taken.append(ending)
        for ending in taken:
            try:
                self._write(ending)
            except Exception:
                self._hold_refused(ending)

    def _hold_refused(self, ending: Ending) -> None:
        """Hold an ending the database refused, for the next claim or settle to try again."""
        self._held[ending.job_id] = ending
        log.exception("could not record how job %s ended; will try again", ending.job_id)

    def _take_held(self) -> Ending | None:
        try:
            return self._held.popitem()[1]
        except KeyError:  # none held, or another worker took the last one
            return None

    def _write(self, ending: Ending) -> None:
        self.services.store.finish(
            ending.job_id,
            ending.status,
            consumer=ending.consumer,
            result=ending.result,
            error=ending.error,
        )

    def _end(self, job: Job, status: Status, result: Any = None, error: str | None = None) -> None:
        """End ``job``: held for the next claim, or written now (always when the consumer is
        stopping: nothing may come along to settle it). A write that fails is held, for the
        next claim or settle to try again, on every queue."""
        ending = Ending(job.id, status, job.consumer, result, error)
        took = (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0
        log.info(
            "job %s (%s) %s in %.3fs, attempt %d", job.id, job.type, status, took, job.attempts
        )
        if self.hold_endings and not self.stopping():
            self._held[job.id] = ending
            return
        try:
            self._write(ending)
        except Exception:
            self._hold_refused(ending)

    def _claim(self, job_id: str, me: str) -> Job | None:
        """Claim ``job_id``, writing a held ending in the same transaction. If that fails, the
        ending may be what the database refused: it is held again, and the claim tried alone
        (which fails too if the database is away)."""
        after = self._take_held()
        if after is None:
            return self.services.store.claim(job_id, me)
        try:
            return self.services.store.claim(job_id, me, after=after)
        except Exception:
            self._hold_refused(after)
        return self.services.store.claim(job_id, me)

    def run(self, job_id: str) -> None:
        me = self.consumer_id()
        job = self._claim(job_id, me)
        if job is None:
            # Cancelled while queued, already taken, or removed: nothing to do.
            log.info("job %s is not pending; skipped", job_id)
            return
        # Held from the claim until its ending is held or written. (Housekeeping may look
        # between the claim and this line: it acts only on a job it finds unheld twice.)
        claim = (job.id, job.attempts)
        self._claims.add(claim)
        try:
            self._run(job, me)
        finally:
            self._claims.discard(claim)  # this claim's alone, not a later one's

    def _run(self, job: Job, me: str) -> None:
        job_type = self.services.plugins.job_types.get(job.type)
        if job_type is None and self._runs_elsewhere(job.type, me):
            # Installed on another live consumer (a rolling install): leave the job to it.
            if self.services.store.unclaim(job.id, me) is Status.PENDING:
                self.services.queue.enqueue(
                    job.id, priority=job.priority, delay=HAND_OVER_DELAY, timeout=job.timeout
                )
                log.info("job %s (%s) is left to a consumer that has its type", job.id, job.type)
            return
        if job_type is None:
            self._end(
                job,
                Status.FAILED,
                error=f"no plugin in this consumer provides the job type {job.type!r}; "
                "install the plugin on every consumer and restart it",
            )
            return
        ctx = JobContext(job, self.services, stopping=self.stopping)
        try:
            try:
                payload = job_type.payload_schema.load(job.payload)
                result = job_type.handler(ctx, payload)
                stopped = ctx.stop_seen  # before flush, which may learn of a cancel too late
            finally:
                ctx.flush()  # the last progress reported stays visible, however it ended
            stored = self._storable(result)
        except JobShutdown:
            requeue(self.services, job, me, "shutdown", "the consumer shut down while it ran")
        except JobCancelled:
            self._end(job, Status.CANCELLED)
        except (JobTimedOut, TaskTimeout):
            self._end(job, Status.TIMEOUT, error=f"timed out after {job.timeout:g}s")
        except ValidationError as exc:
            self._end(job, Status.FAILED, error=f"invalid payload: {_flatten(exc.messages)}")
        except Exception as exc:
            log.exception("job %s (%s) failed on attempt %d", job.id, job.type, job.attempts)
            self._failed(job, job_type, me, _describe(exc))
        else:
            # A handler that saw the cancel (ctx.cancelled) and returned stopped early: what it
            # did is kept, and the job is cancelled, not complete.
            self._end(job, Status.CANCELLED if stopped else Status.COMPLETE, result=stored)

    def _runs_elsewhere(self, job_type: str, me: str) -> bool:
        live = self.services.store.live_consumers(self.services.settings.heartbeat_seconds)
        return any(job_type in c.job_types for c in live if c.id != me)

    def _failed(self, job: Job, job_type: JobType, me: str, error: str) -> None:
        store = self.services.store
        # Attempts cut short by a shutdown or a crash were not the job's failures.
        failures = store.count_attempts(job.id, "failed") + 1
        delay = min(job.retry_delay * job_type.retry_backoff ** (failures - 1), LONGEST)
        if store.get(job.id).cancel_requested_at is not None:
            self._end(job, Status.CANCELLED, error=error)  # no retry
        elif failures <= job.retries and store.retry_later(job.id, error, delay, me):
            self.services.queue.enqueue(
                job.id, priority=job.priority, delay=delay, timeout=job.timeout
            )
            log.info("job %s will run again in %.1fs", job.id, delay)
        else:
            self._end(job, Status.FAILED, error=error)

    @staticmethod
    def _storable(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The handler's result as stored: a JSON object, or None."""
        if result is None:
            return None
        if not isinstance(result, Mapping):
            raise TypeError(f"handler returned {type(result).__name__}, expected a dict or None")
        # NaN and infinities are not JSON: PostgreSQL would refuse them, and clients too.
        value: dict[str, Any] = json.loads(json.dumps(dict(result), allow_nan=False))
        return value
