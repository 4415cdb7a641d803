"""The job store: one row per job, the single source of truth for its state.

Huey carries only job ids. Every change of state here is one conditional UPDATE, so two
processes racing (a cancel and a claim, two consumers taking one message) cannot both win.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from scanner.db import Prepared, write
from scanner.errors import InvalidTransition, JobNotFound
from scanner.jobs.states import TERMINAL, Status, sources
from scanner.schema import UtcDateTime, consumers, job_attempts, jobs


def utcnow() -> datetime:
    return datetime.now(UTC)


def _storable_text(text: str) -> str:
    """``text`` as every database can store it: a lone surrogate (from a file name that is
    not UTF-8; no driver can encode one) and a NUL byte (PostgreSQL's text refuses it)
    escaped. A job's error often quotes such a name."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    type: str
    status: Status
    payload: dict[str, Any]
    progress: float | None
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    retries: int
    retry_delay: float
    timeout: float | None
    priority: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    cancel_requested_at: datetime | None
    consumer: str | None

    @property
    def job_id(self) -> str:
        return self.id

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: sa.Row[Any] | dict[str, Any]) -> Job:
        values = row if isinstance(row, dict) else row._asdict()
        values["status"] = Status(values["status"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a job ended, as ``finish`` writes it: held by a runner to ride in the transaction
    of its next claim (see ``JobStore.claim``)."""

    job_id: str
    status: Status
    consumer: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


# A consumer is alive while its last heartbeat is younger than this many intervals.
ALIVE_INTERVALS = 3


@dataclass(frozen=True, slots=True)
class Consumer:
    id: str
    hostname: str
    pid: int
    job_types: list[str]
    started_at: datetime
    last_seen: datetime


# The statements of the hot path (submit, claim, finish, progress, the status read), built
# once and run as ``Prepared``: building a statement, and SQLAlchemy's execution of it, cost
# more than running it (see docs/benchmarks.md).
_INSERT = jobs.insert()
_GET = jobs.select().where(jobs.c.id == sa.bindparam("job_id"))
# A job and its recorded attempts in one statement, so a status read needs no transaction:
# one row per attempt (or one with no attempt). The attempt's columns are labelled apart
# from the job's, which share some of their names (consumer, started_at, error...).
_JOB_COLUMNS = tuple(c.key for c in jobs.c)
_ATTEMPT_COLUMNS = {f"attempt_{c.key}": c.key for c in job_attempts.c}
_DETAIL = (
    sa.select(jobs, *(job_attempts.c[key].label(label) for label, key in _ATTEMPT_COLUMNS.items()))
    .select_from(jobs.outerjoin(job_attempts, job_attempts.c.job_id == jobs.c.id))
    .where(jobs.c.id == sa.bindparam("job_id"))
    .order_by(job_attempts.c.number)
)
_CLAIM = (
    jobs.update()
    .where(jobs.c.id == sa.bindparam("job_id"), jobs.c.status == Status.PENDING.value)
    .values(
        status=Status.RUNNING.value,
        attempts=jobs.c.attempts + 1,
        started_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
        finished_at=None,
        next_attempt_at=None,
        progress=None,
        consumer=sa.bindparam("b_consumer"),
    )
    .returning(*jobs.c)
)
_PROGRESS = (
    jobs.update()
    .where(
        jobs.c.id == sa.bindparam("job_id"),
        jobs.c.status == Status.RUNNING.value,
        jobs.c.consumer == sa.bindparam("b_consumer"),
    )
    .values(progress=sa.bindparam("b_progress"), updated_at=sa.bindparam("now"))
    .returning(jobs.c.cancel_requested_at)
)
# The attempt that just ended goes on record from the job row's own account of it.
_RECORD_ATTEMPT = job_attempts.insert().from_select(
    ["job_id", "number", "consumer", "started_at", "finished_at", "outcome", "error"],
    sa.select(
        jobs.c.id,
        jobs.c.attempts,
        jobs.c.consumer,
        jobs.c.started_at,
        sa.bindparam("now", type_=UtcDateTime()),
        sa.bindparam("outcome", type_=sa.String()),
        sa.bindparam("error", type_=sa.Text()),
    ).where(jobs.c.id == sa.bindparam("job_id"), jobs.c.attempts > 0),
)


def _move_statement(
    target: Status,
    allowed: frozenset[Status],
    by_consumer: bool,
    cancel_asked: bool,
    columns: tuple[str, ...],
) -> sa.Update:
    # Not IN (...): SQLAlchemy completes an IN list at run time, so it could not be prepared.
    state = sa.or_(*(jobs.c.status == s.value for s in sorted(allowed)))
    where = [jobs.c.id == sa.bindparam("job_id"), state]
    if by_consumer:
        where.append(jobs.c.consumer == sa.bindparam("b_consumer"))
    if cancel_asked:
        where.append(jobs.c.cancel_requested_at.is_not(None))
    return (
        jobs.update()
        .where(*where)
        .values(
            status=target.value,
            updated_at=sa.bindparam("now"),
            **{c: sa.bindparam(f"v_{c}") for c in columns},
        )
    )


class JobStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = Prepared(engine.dialect, _INSERT)
        self._get = Prepared(engine.dialect, _GET)
        self._detail = Prepared(engine.dialect, _DETAIL)
        self._claim = Prepared(engine.dialect, _CLAIM)
        self._progress = Prepared(engine.dialect, _PROGRESS)
        self._record_attempt = Prepared(engine.dialect, _RECORD_ATTEMPT)
        self._moves: dict[tuple[Any, ...], Prepared] = {}

    def create(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        priority: int = 0,
        unless: Callable[[list[Job]], None] | None = None,
    ) -> Job:
        """Record a new pending job.

        ``unless(active)``, when given, sees the pending and running jobs of the same type in
        the same transaction as the insert, and may raise to refuse this one: on SQLite the
        transaction holds the write lock, on PostgreSQL a lock per job type, so two
        submissions cannot both pass the check.
        """
        now = utcnow()
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": type,
            "status": Status.PENDING.value,
            "payload": payload,
            "progress": None,
            "result": None,
            "error": None,
            "attempts": 0,
            "retries": retries,
            "retry_delay": retry_delay,
            "timeout": timeout,
            "priority": priority,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "next_attempt_at": None,
            "cancel_requested_at": None,
            "consumer": None,
        }
        with write(self.engine) as conn:
            if unless is not None:
                if self.engine.dialect.name == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(type))))
                active = conn.execute(
                    jobs.select().where(
                        jobs.c.type == type,
                        jobs.c.status.in_([Status.PENDING.value, Status.RUNNING.value]),
                    )
                )
                unless([Job.from_row(row) for row in active])
            self._insert.rowcount(conn, values)
        values["status"] = Status.PENDING
        return Job(**values)

    def get(self, job_id: str) -> Job:
        with self.engine.connect() as conn:
            row = self._get.first(conn, {"job_id": job_id})
        if row is None:
            raise JobNotFound(f"no job has the id {job_id!r}")
        return Job.from_row(row)

    def list_jobs(
        self,
        *,
        status: Iterable[Status] = (),
        type: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """Jobs newest first, and how many match in all."""
        where: list[sa.ColumnElement[bool]] = []
        statuses = [s.value for s in status]
        if statuses:
            where.append(jobs.c.status.in_(statuses))
        if type is not None:
            where.append(jobs.c.type == type)
        query = (
            jobs.select()
            .where(*where)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(jobs).where(*where)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            total = conn.execute(count).scalar_one()
        return [Job.from_row(r) for r in rows], total

    def delete(self, job_id: str) -> None:
        with write(self.engine) as conn:
            conn.execute(jobs.delete().where(jobs.c.id == job_id))

    @staticmethod
    def _lock_row(conn: Connection, job_id: str) -> None:
        """Lock the job's row for the rest of ``conn``'s transaction, so that a decision
        taken over two statements stands: PostgreSQL's ``FOR UPDATE`` (SQLite's write lock,
        taken by ``write``, already holds the whole database)."""
        conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id).with_for_update())

    def _move(self, job_id: str, target: Status, **options: Any) -> bool:
        """``_move_in`` in a write transaction of its own."""
        with write(self.engine) as conn:
            return self._move_in(conn, job_id, target, **options)

    def _move_in(
        self,
        conn: Connection,
        job_id: str,
        target: Status,
        *,
        only_from: Iterable[Status] = (),
        consumer: str | None = None,
        outcome: str | None = None,
        cancel_asked: bool = False,
        **values: Any,
    ) -> bool:
        """Move a job to ``target`` if its state allows it, in the transaction of ``conn``;
        False when it did not.

        ``consumer``: only if that consumer holds it. ``outcome``: also record the attempt
        that ends here with it (an attempt the job row can tell, see ``finish``, needs none).
        ``cancel_asked``: only if a cancel was asked for.
        """
        if values.get("error") is not None:
            values["error"] = _storable_text(values["error"])
        allowed = frozenset(only_from) or sources(target)
        key = (target, allowed, consumer is not None, cancel_asked, tuple(sorted(values)))
        statement = self._moves.get(key)
        if statement is None:
            statement = self._moves[key] = Prepared(self.engine.dialect, _move_statement(*key))
        now = utcnow()
        params = {"job_id": job_id, "now": now, "b_consumer": consumer}
        params.update((f"v_{c}", v) for c, v in values.items())
        moved = statement.rowcount(conn, params)
        if moved and outcome:
            self._record_attempt.rowcount(
                conn,
                {"job_id": job_id, "now": now, "outcome": outcome, "error": values.get("error")},
            )
        return moved == 1

    def claim(self, job_id: str, consumer: str, *, after: Ending | None = None) -> Job | None:
        """Take a pending job to run it; None if it is not pending (cancelled, taken, gone).

        One statement: the attempt it starts is recorded when it ends (see ``_move``).
        ``after``: the ending of the consumer's previous job, written first in the same
        transaction (whatever becomes of the claim): one commit for both.
        """
        params = {"job_id": job_id, "now": utcnow(), "b_consumer": consumer}
        with write(self.engine) as conn:
            if after is not None:
                self._end(conn, after)
            row = self._claim.first(conn, params)
        return None if row is None else Job.from_row(row)

    def finish(
        self,
        job_id: str,
        status: Status,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        consumer: str | None = None,
        outcome: str | None = None,
    ) -> bool:
        """End a job as ``status`` (terminal), closing its running attempt with ``outcome``
        (by default the status).

        The attempt that ends a job as its status says is told by the job row itself (see
        ``detail``): only an ending such as ``crashed`` needs a record of its own, which
        spares every job an INSERT.
        """
        with write(self.engine) as conn:
            return self._end(conn, Ending(job_id, status, consumer, result, error), outcome)

    def _end(self, conn: Connection, ending: Ending, outcome: str | None = None) -> bool:
        status = ending.status
        assert status in TERMINAL
        values: dict[str, Any] = {
            "finished_at": utcnow(),
            "result": ending.result,
            "error": ending.error,
        }
        if status is Status.COMPLETE:
            values["progress"] = 1.0
        if outcome == status.value:
            outcome = None
        return self._move_in(
            conn, ending.job_id, status, consumer=ending.consumer, outcome=outcome, **values
        )

    def retry_later(
        self, job_id: str, error: str, delay: float, consumer: str | None = None
    ) -> bool:
        """Hand a failed attempt back to the queue, to run again after ``delay`` seconds."""
        return self._move(
            job_id,
            Status.PENDING,
            consumer=consumer,
            outcome="failed",
            error=error,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )

    def release(self, job_id: str, consumer: str, outcome: str, error: str) -> Status | None:
        """Hand a job that ``consumer`` was running back to the queue (``PENDING``), its
        attempt cut short (``outcome``: ``shutdown`` or ``crashed``); or, if a cancel was
        asked for meanwhile, end it ``CANCELLED``: a cancelled job is not run again.
        None if that consumer no longer holds it.
        """
        with write(self.engine) as conn:
            self._lock_row(conn, job_id)  # no cancel may land between the two moves
            if self._move_in(
                conn,
                job_id,
                Status.CANCELLED,
                only_from={Status.RUNNING},
                consumer=consumer,
                outcome=outcome,
                cancel_asked=True,
                error=error,
                finished_at=utcnow(),
            ):
                return Status.CANCELLED
            if self._move_in(
                conn,
                job_id,
                Status.PENDING,
                consumer=consumer,
                outcome=outcome,
                error=error,
                progress=None,
            ):
                return Status.PENDING
        return None

    def detail(self, job_id: str) -> tuple[Job, list[dict[str, Any]]]:
        """A job and every attempt at it, oldest first (the one running has no outcome yet),
        read in one go."""
        with self.engine.connect() as conn:
            rows = self._detail.all(conn, {"job_id": job_id})
        if not rows:
            raise JobNotFound(f"no job has the id {job_id!r}")
        job = Job.from_row({key: rows[0][key] for key in _JOB_COLUMNS})
        recorded = [
            {key: row[label] for label, key in _ATTEMPT_COLUMNS.items()}
            for row in rows
            if row["attempt_number"] is not None
        ]
        return job, self._attempts(job, recorded)

    @staticmethod
    def _attempts(job: Job, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The recorded attempts, and the job's latest one as its row tells it: running, or
        the one that ended the job (recorded only when it ended otherwise, as ``crashed``)."""
        recorded = attempts[-1]["number"] if attempts else 0
        if job.attempts > recorded and (job.status is Status.RUNNING or job.terminal):
            ended = job.terminal
            attempts.append(
                {
                    "job_id": job.id,
                    "number": job.attempts,
                    "consumer": job.consumer,
                    "started_at": job.started_at,
                    "finished_at": job.finished_at if ended else None,
                    "outcome": job.status.value if ended else None,
                    "error": job.error if ended else None,
                }
            )
        return attempts

    def count_attempts(self, job_id: str, outcome: str) -> int:
        """How many attempts at the job ended with ``outcome`` (``failed``, ``crashed``...)."""
        with self.engine.connect() as conn:
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(job_attempts)
                .where(job_attempts.c.job_id == job_id, job_attempts.c.outcome == outcome)
            ).scalar_one()
        return int(count)

    def running(self) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(jobs.select().where(jobs.c.status == Status.RUNNING.value))
            return [Job.from_row(r) for r in rows]

    def stranded(self, idle_since: datetime) -> list[Job]:
        """Pending jobs due to run that nothing has touched since ``idle_since``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                jobs.select().where(
                    jobs.c.status == Status.PENDING.value,
                    jobs.c.updated_at < idle_since,
                    sa.or_(jobs.c.next_attempt_at.is_(None), jobs.c.next_attempt_at < idle_since),
                )
            )
            return [Job.from_row(r) for r in rows]

    def purge(self, finished_before: datetime) -> int:
        """Delete finished jobs (and their attempts) older than ``finished_before``, and
        consumers silent since then. Pending and running jobs are never touched."""
        old = sa.select(jobs.c.id).where(
            jobs.c.status.in_([s.value for s in TERMINAL]), jobs.c.finished_at < finished_before
        )
        with write(self.engine) as conn:
            conn.execute(job_attempts.delete().where(job_attempts.c.job_id.in_(old)))
            removed = conn.execute(jobs.delete().where(jobs.c.id.in_(old))).rowcount
            conn.execute(consumers.delete().where(consumers.c.last_seen < finished_before))
        return int(removed)

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending job at once, or ask a running one to stop.

        Raises ``InvalidTransition`` for a job that has already finished.
        """
        now = utcnow()
        with write(self.engine) as conn:
            # A job going between running and pending (a retry) cannot slip between the two.
            self._lock_row(conn, job_id)
            moved = self._move_in(
                conn, job_id, Status.CANCELLED, only_from={Status.PENDING}, finished_at=now
            )
            asked = (
                moved
                or conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.id == job_id,
                        jobs.c.status == Status.RUNNING.value,
                        jobs.c.cancel_requested_at.is_(None),
                    )
                    .values(cancel_requested_at=now, updated_at=now)
                ).rowcount
            )
        job = self.get(job_id)
        if job.terminal and not asked:
            raise InvalidTransition(f"job {job_id} is already {job.status}")
        return job

    def unclaim(self, job_id: str, consumer: str) -> Status | None:
        """Undo ``consumer``'s claim as if it had not been made: the job is ``PENDING`` again
        and that attempt not counted (a consumer that cannot run it leaves it to one that
        can); or ``CANCELLED``, if a cancel was asked for since. None if it does not hold it."""
        where = (
            jobs.c.id == job_id,
            jobs.c.status == Status.RUNNING.value,
            jobs.c.consumer == consumer,
        )
        now = utcnow()
        undo = {"attempts": jobs.c.attempts - 1, "consumer": None, "updated_at": now}
        with write(self.engine) as conn:
            self._lock_row(conn, job_id)
            cancelled = conn.execute(
                jobs.update()
                .where(*where, jobs.c.cancel_requested_at.is_not(None))
                .values(status=Status.CANCELLED.value, finished_at=now, **undo)
            ).rowcount
            if cancelled:
                return Status.CANCELLED
            pending = conn.execute(
                jobs.update()
                .where(*where)
                .values(status=Status.PENDING.value, started_at=None, **undo)
            ).rowcount
        return Status.PENDING if pending else None

    def report_progress(self, job_id: str, consumer: str, progress: float | None) -> bool:
        """Record progress of a job ``consumer`` runs; True when the job should stop.

        It should stop when a cancel was asked for, or when ``consumer`` no longer holds it
        (it was presumed dead and another consumer recovered the job, say).
        """
        params = {"job_id": job_id, "b_consumer": consumer, "b_progress": progress, "now": utcnow()}
        with write(self.engine) as conn:
            row = self._progress.first(conn, params)
        return row is None or row["cancel_requested_at"] is not None

    # Consumer heartbeats: how the web process knows a consumer is alive and what it runs.

    def heartbeat(
        self, consumer_id: str, hostname: str, pid: int, job_types: Sequence[str]
    ) -> None:
        now = utcnow()
        with write(self.engine) as conn:
            updated = conn.execute(
                consumers.update()
                .where(consumers.c.id == consumer_id)
                .values(last_seen=now, job_types=sorted(job_types))
            ).rowcount
            if not updated:
                conn.execute(
                    consumers.insert().values(
                        id=consumer_id,
                        hostname=hostname,
                        pid=pid,
                        job_types=sorted(job_types),
                        started_at=now,
                        last_seen=now,
                    )
                )

    def live_consumers(self, heartbeat: float) -> list[Consumer]:
        """Consumers alive when each beats every ``heartbeat`` seconds: heard from within the
        last ``ALIVE_INTERVALS`` beats. Most recent first."""
        since = utcnow() - timedelta(seconds=heartbeat * ALIVE_INTERVALS)
        with self.engine.connect() as conn:
            rows = conn.execute(
                consumers.select()
                .where(consumers.c.last_seen >= since)
                .order_by(consumers.c.last_seen.desc())
            ).all()
        return [Consumer(**r._asdict()) for r in rows]
