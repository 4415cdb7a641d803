"""The Huey side of jobs: which storage, and the one task that runs a job by its id.

Huey messages carry only the job id; everything else about a job lives in the job store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huey import Huey
from huey.storage import PostgresStorage, PriorityRedisStorage, RedisStorage, SqliteStorage
from sqlalchemy import make_url

from scanner.errors import ConfigError

log = logging.getLogger(__name__)

QUEUE_NAME = "scanner"
# Huey's own timeout (SIGALRM, process workers only) fires this long after a job's: the
# handler's cooperative ctx.check() stops it first, and the hard stop is for those that never
# check; never in the middle of the runner's own writes around the handler.
HARD_TIMEOUT_GRACE = 5.0


class QueueStorage(SqliteStorage):  # type: ignore[misc]
    """Huey's SQLite storage with the durability of the job store: WAL and synchronous=NORMAL.

    Huey's default (FULL) fsyncs on every commit, and on Linux each fsync also flushes the job
    store's writes to the same disk: it made every dequeue several times slower. Under WAL,
    NORMAL loses nothing when a process crashes; a power cut may lose the last commits,
    never consistency, the same promise the job store makes.
    """

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("pragma synchronous=NORMAL")
        return conn


class JobHuey(Huey):  # type: ignore[misc]
    """Huey without revocation, that tells when its consumer is stopping, and settles a
    runner's held endings (``Runner.settle``) whenever a worker finds the queue empty and
    when the consumer stops.

    A job is cancelled in the job store, never in Huey.
    Huey checks every message against its revocation keys before running it and deletes the
    message's key after: a read and a write to the queue storage per job, for a feature this
    service does not use. Skipping both is a good part of what keeps a tracked job close to a
    bare Huey task (docs/benchmarks.md).
    """

    stop_flag: Any = None
    settle: Callable[[], None] = staticmethod(lambda: None)

    def dequeue(self) -> Any:
        task = super().dequeue()
        if task is None:  # no claim comes along to carry what the runner holds
            self.settle()
        return task

    def notify_interrupted_tasks(self) -> None:
        # The consumer's last call on its way out, after SIGINT, SIGTERM or SIGHUP alike.
        super().notify_interrupted_tasks()
        self.settle()

    def create_consumer(self, **options: Any) -> Any:
        consumer = super().create_consumer(**options)
        # Set by the consumer on SIGINT, SIGTERM and SIGHUP, and shared with forked workers.
        self.stop_flag = consumer.stop_flag
        return consumer

    def stopping(self) -> bool:
        """True once this process's consumer has been told to stop."""
        return self.stop_flag is not None and bool(self.stop_flag.is_set())

    def is_revoked(self, task: Any, timestamp: Any = None, peek: bool = True) -> bool:
        return False

    def delete(self, key: str) -> Any:
        if key.startswith("r:"):  # a revocation key (Task.revoke_id): there are none
            return None
        return super().delete(key)


def create_huey(url: str, *, name: str = QUEUE_NAME) -> JobHuey:
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
        return JobHuey(
            name, storage_class=QueueStorage, filename=str(path), results=False, timeout=30
        )
    if scheme in ("redis", "rediss"):
        # The plain Redis storage refuses any priority; this one honours them.
        return JobHuey(name, storage_class=PriorityRedisStorage, url=url, results=False)
    if scheme in ("postgresql", "postgres"):
        dsn = url.replace("postgresql+psycopg", "postgresql")
        return JobHuey(name, storage_class=PostgresStorage, dsn=dsn, results=False)
    raise ConfigError(
        f"SCANNER_QUEUE_URL={url!r}: use sqlite:///path, redis://host:port/db or postgresql://..."
    )


class JobQueue:
    """Puts job ids on the queue; in a consumer, runs them with ``execute``.

    The web process builds one without ``execute``: it only enqueues. The task is registered
    under one fixed name so both processes agree on it.
    """

    def __init__(self, huey: JobHuey, execute: Callable[[str], None] | None = None) -> None:
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

    @property
    def backend(self) -> str:
        """The storage, named as in SCANNER_QUEUE_URL: sqlite, redis or postgresql."""
        storage = self.huey.storage
        if isinstance(storage, SqliteStorage):
            return "sqlite"
        return "redis" if isinstance(storage, RedisStorage) else "postgresql"

    def pending_count(self) -> int:
        return int(self.huey.pending_count()) + int(self.huey.scheduled_count())
