"""Submitting jobs: validate the payload, record the job, then put its id on the queue."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError

from scanner.errors import ScannerError
from scanner.jobs.store import Job, JobStore
from scanner.jobs.types import JobType
from scanner.queue import JobQueue

log = logging.getLogger(__name__)


class UnknownJobType(ScannerError):
    """No loaded plugin provides a job type of that name."""


class JobConflict(ScannerError):
    """A job of the same type is already pending or running on overlapping work."""

    def __init__(self, job: Job) -> None:
        super().__init__(
            f"a {job.type} job ({job.id}) is already {job.status} on overlapping work; "
            "wait for it or cancel it"
        )
        self.job = job


class QueueUnavailable(ScannerError):
    """The queue storage could not take the job; nothing was recorded."""


class JobService:
    def __init__(self, store: JobStore, queue: JobQueue, types: Mapping[str, JobType]) -> None:
        self.store = store
        self.queue = queue
        self.types = types

    def job_type(self, name: str) -> JobType:
        try:
            return self.types[name]
        except KeyError:
            known = ", ".join(sorted(self.types)) or "none"
            raise UnknownJobType(f"unknown job type {name!r}; registered types: {known}") from None

    def submit(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry_delay: float | None = None,
    ) -> Job:
        """Record a job and queue it. Raises ``UnknownJobType``, ``ValidationError`` or
        ``JobConflict``.

        The row is written before the message so a consumer never sees an id it cannot find.
        If the queue refuses the message the row is removed, so a client that got an error
        never finds the job later.
        """
        job_type = self.job_type(type)
        job_type.payload_schema.load(payload)  # raises ValidationError
        overlaps = job_type.overlaps

        def refuse_overlaps(active: list[Job]) -> None:
            for other in active:
                if overlaps is not None and overlaps(other.payload, payload):
                    raise JobConflict(other)

        job = self.store.create(
            type,
            dict(payload),
            priority=job_type.priority if priority is None else priority,
            timeout=job_type.timeout if timeout is None else timeout,
            retries=job_type.retries if retries is None else retries,
            retry_delay=job_type.retry_delay if retry_delay is None else retry_delay,
            unless=refuse_overlaps if overlaps is not None else None,
        )
        try:
            self.queue.enqueue(job.id, priority=job.priority, timeout=job.timeout)
        except Exception as exc:
            self.store.delete(job.id)
            log.exception("queue refused job %s", job.id)
            raise QueueUnavailable(f"the job queue is unavailable: {exc}") from exc
        return job


__all__ = ["JobService", "QueueUnavailable", "UnknownJobType", "ValidationError"]
