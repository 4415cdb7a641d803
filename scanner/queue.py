"""The Huey side of jobs: which storage, and the one task that runs a job by its id.

Huey messages carry only the job id; everything else about a job lives in the job store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from huey import Huey, PostgresHuey, PriorityRedisHuey, SqliteHuey
from sqlalchemy import make_url

from scanner.errors import ConfigError

log = logging.getLogger(__name__)

QUEUE_NAME = "scanner"
# Huey's own timeout (SIGALRM, process workers only) fires this long after a job's: the
# handler's cooperative ctx.check() stops it first, and the hard stop is for those that never
# check; never in the middle of the runner's own writes around the handler.
HARD_TIMEOUT_GRACE = 5.0


def create_huey(url: str, *, name: str = QUEUE_NAME) -> Huey:
    """A Huey instance for ``url``: ``sqlite:///path``, ``redis://...`` or ``postgresql://...``.

    Results are not stored in Huey: the job store keeps them, so Huey's storage holds only
    messages waiting to run.
    """
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme == "sqlite":
        path = Path(make_url(url).database or "")
        if not path.name:
            raise ConfigError(
                f"SCANNER_QUEUE_URL={url!r}: name a file, as in sqlite:///var/queue.db"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteHuey(name, filename=str(path), results=False, timeout=30)
    if scheme in ("redis", "rediss"):
        # The plain RedisHuey refuses any priority; this one honours them.
        return PriorityRedisHuey(name, url=url, results=False)
    if scheme in ("postgresql", "postgres"):
        return PostgresHuey(
            name, dsn=url.replace("postgresql+psycopg", "postgresql"), results=False
        )
    raise ConfigError(
        f"SCANNER_QUEUE_URL={url!r}: use sqlite:///path, redis://host:port/db or postgresql://..."
    )


class JobQueue:
    """Puts job ids on the queue; in a consumer, runs them with ``execute``.

    The web process builds one without ``execute``: it only enqueues. The task is registered
    under one fixed name so both processes agree on it.
    """

    def __init__(self, huey: Huey, execute: Callable[[str], None] | None = None) -> None:
        self.huey = huey
        self.execute = execute
        self._task = huey.task(name="run_job")(self._run)

    def _run(self, job_id: str) -> None:
        if self.execute is None:
            raise RuntimeError("this process only enqueues jobs; run them in a consumer")
        self.execute(job_id)

    def enqueue(
        self,
        job_id: str,
        *,
        priority: int = 0,
        delay: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Queue a run of ``job_id``; ``timeout`` lets Huey's process workers cut it off
        (SIGALRM) even when the handler never checks its own time."""
        if timeout is not None:
            timeout += HARD_TIMEOUT_GRACE
        if delay:
            self._task.schedule((job_id,), delay=delay, priority=priority, timeout=timeout)
        else:
            self._task(job_id, priority=priority, timeout=timeout)

    def pending_count(self) -> int:
        return int(self.huey.pending_count()) + int(self.huey.scheduled_count())
