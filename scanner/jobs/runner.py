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
from scanner.jobs.store import Job
from scanner.jobs.types import JobType

if TYPE_CHECKING:
    from scanner.services import Services

log = logging.getLogger(__name__)


def requeue(services: Services, job: Job, consumer: str, outcome: str, error: str) -> bool:
    """Put a job that ``consumer`` was running back in the queue, its attempt cut short by a
    shutdown or a crash. False (and nothing queued) if the consumer no longer held it."""
    if not services.store.release(job.id, consumer, outcome, error):
        return False
    services.queue.enqueue(job.id, priority=job.priority, timeout=job.timeout)
    log.info("job %s goes back to the queue (%s)", job.id, outcome)
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
    """

    def __init__(
        self,
        services: Services,
        consumer_id: Callable[[], str],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.services = services
        self.consumer_id = consumer_id
        self.stopping = stopping

    def run(self, job_id: str) -> None:
        store = self.services.store
        me = self.consumer_id()
        job = store.claim(job_id, me)
        if job is None:
            # Cancelled while queued, already taken, or removed: nothing to do.
            log.info("job %s is not pending; skipped", job_id)
            return
        job_type = self.services.plugins.job_types.get(job.type)
        if job_type is None:
            store.finish(
                job.id,
                Status.FAILED,
                consumer=me,
                error=f"no plugin in this consumer provides the job type {job.type!r}; "
                "install the plugin on every consumer and restart it",
            )
            return
        ctx = JobContext(job, self.services, stopping=self.stopping)
        try:
            try:
                payload = job_type.payload_schema.load(job.payload)
                result = job_type.handler(ctx, payload)
            finally:
                ctx.flush()  # the last progress reported stays visible, however it ended
            stored = self._storable(result)
        except JobShutdown:
            requeue(self.services, job, me, "shutdown", "the consumer shut down while it ran")
        except JobCancelled:
            store.finish(job.id, Status.CANCELLED, consumer=me)
        except (JobTimedOut, TaskTimeout):
            error = f"timed out after {job.timeout:g}s"
            store.finish(job.id, Status.TIMEOUT, consumer=me, error=error)
        except ValidationError as exc:
            error = f"invalid payload: {_flatten(exc.messages)}"
            store.finish(job.id, Status.FAILED, consumer=me, error=error)
        except Exception as exc:
            log.exception("job %s (%s) failed on attempt %d", job.id, job.type, job.attempts)
            self._failed(job, job_type, me, _describe(exc))
        else:
            store.finish(job.id, Status.COMPLETE, consumer=me, result=stored)

    def _failed(self, job: Job, job_type: JobType, me: str, error: str) -> None:
        store = self.services.store
        # Attempts cut short by a shutdown or a crash were not the job's failures.
        failures = store.count_attempts(job.id, "failed") + 1
        delay = job.retry_delay * job_type.retry_backoff ** (failures - 1)
        if store.get(job.id).cancel_requested_at is not None:
            store.finish(job.id, Status.CANCELLED, consumer=me, error=error)  # no retry
        elif failures <= job.retries and store.retry_later(job.id, error, delay, me):
            self.services.queue.enqueue(
                job.id, priority=job.priority, delay=delay, timeout=job.timeout
            )
            log.info("job %s will run again in %.1fs", job.id, delay)
        else:
            store.finish(job.id, Status.FAILED, consumer=me, error=error)

    @staticmethod
    def _storable(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The handler's result as stored: a JSON object, or None."""
        if result is None:
            return None
        if not isinstance(result, Mapping):
            raise TypeError(f"handler returned {type(result).__name__}, expected a dict or None")
        value: dict[str, Any] = json.loads(json.dumps(dict(result)))
        return value
