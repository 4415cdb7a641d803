"""The job store against a real SQLite file."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from scanner.db import create_engine, migrate, schema_version
from scanner.errors import ConfigError, InvalidTransition, JobNotFound
from scanner.jobs.states import Status
from scanner.jobs.store import JobStore, utcnow
from scanner.schema import MIGRATIONS, job_attempts
from scanner.services import Services


@pytest.fixture
def store(services: Services) -> JobStore:
    return services.store


def test_create_then_get_round_trips_every_field(store: JobStore) -> None:
    job = store.create("echo", {"text": "hi"}, retries=2, retry_delay=1.5, timeout=9, priority=3)
    again = store.get(job.id)
    assert again == job
    assert again.status is Status.PENDING
    assert again.created_at.tzinfo is not None
    assert (again.attempts, again.retries, again.priority, again.timeout) == (0, 2, 3, 9)


def test_get_unknown_id_raises(store: JobStore) -> None:
    with pytest.raises(JobNotFound, match="no job has the id 'nope'"):
        store.get("nope")


def test_list_filters_and_orders_newest_first(store: JobStore) -> None:
    a = store.create("echo", {})
    b = store.create("sleep", {})
    c = store.create("echo", {})
    store.claim(b.id, "w")
    jobs, total = store.list_jobs()
    assert [j.id for j in jobs] == [c.id, b.id, a.id] and total == 3
    jobs, total = store.list_jobs(type="echo")
    assert [j.id for j in jobs] == [c.id, a.id] and total == 2
    jobs, total = store.list_jobs(status=[Status.RUNNING])
    assert [j.id for j in jobs] == [b.id] and total == 1
    jobs, total = store.list_jobs(limit=1, offset=1)
    assert [j.id for j in jobs] == [b.id] and total == 3


def test_claim_takes_a_pending_job_once(store: JobStore) -> None:
    job = store.create("echo", {})
    claimed = store.claim(job.id, "consumer-a")
    assert claimed is not None
    assert claimed.status is Status.RUNNING
    assert claimed.attempts == 1 and claimed.consumer == "consumer-a"
    assert claimed.started_at is not None
    assert store.claim(job.id, "consumer-b") is None


def test_only_one_of_many_racing_claims_wins(store: JobStore) -> None:
    job = store.create("echo", {})
    wins: list[object] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        barrier.wait()
        if store.claim(job.id, f"c{n}") is not None:
            wins.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get(job.id).attempts == 1


def test_finish_records_result_and_is_final(store: JobStore) -> None:
    job = store.create("echo", {})
    store.claim(job.id, "w")
    assert store.finish(job.id, Status.COMPLETE, result={"ok": True})
    done = store.get(job.id)
    assert done.status is Status.COMPLETE and done.result == {"ok": True}
    assert done.progress == 1.0 and done.finished_at is not None
    assert not store.finish(job.id, Status.FAILED, error="late")
    assert store.get(job.id).status is Status.COMPLETE


def test_the_attempt_that_ends_a_job_is_told_by_its_row_alone(store: JobStore) -> None:
    retried = store.create("scan", {})
    store.claim(retried.id, "c1")
    store.retry_later(retried.id, "boom", delay=0, consumer="c1")
    store.claim(retried.id, "c2")
    store.finish(retried.id, Status.COMPLETE, consumer="c2")
    plain = store.create("scan", {})
    store.claim(plain.id, "c1")
    store.finish(plain.id, Status.COMPLETE, consumer="c1")

    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(job_attempts.c.job_id, job_attempts.c.outcome)).all()
    assert rows == [(retried.id, "failed")]  # no INSERT for an attempt that ended its job
    job, history = store.detail(retried.id)
    assert [(a["number"], a["consumer"], a["outcome"]) for a in history] == [
        (1, "c1", "failed"),
        (2, "c2", "complete"),
    ]
    assert history[1]["finished_at"] == job.finished_at
    assert history[1]["started_at"] == job.started_at
    assert [a["outcome"] for a in store.detail(plain.id)[1]] == ["complete"]


def test_retry_later_returns_job_to_pending_with_next_attempt_time(store: JobStore) -> None:
    job = store.create("fail", {}, retries=1)
    store.claim(job.id, "w")
    before = utcnow()
    assert store.retry_later(job.id, "boom", delay=30)
    waiting = store.get(job.id)
    assert waiting.status is Status.PENDING and waiting.error == "boom"
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at >= before + timedelta(seconds=29)
    again = store.claim(job.id, "w")
    assert again is not None and again.attempts == 2 and again.next_attempt_at is None


def test_cancel_pending_is_immediate(store: JobStore) -> None:
    job = store.create("echo", {})
    cancelled = store.cancel(job.id)
    assert cancelled.status is Status.CANCELLED and cancelled.finished_at is not None
    assert store.claim(job.id, "w") is None


def test_cancel_running_asks_it_to_stop(store: JobStore) -> None:
    job = store.create("sleep", {})
    store.claim(job.id, "w")
    asked = store.cancel(job.id)
    assert asked.status is Status.RUNNING and asked.cancel_requested_at is not None
    assert store.report_progress(job.id, "w", 0.5) is True
    assert store.cancel(job.id).status is Status.RUNNING  # asking twice is harmless


def test_cancel_finished_job_is_refused(store: JobStore) -> None:
    job = store.create("echo", {})
    store.claim(job.id, "w")
    store.finish(job.id, Status.COMPLETE)
    with pytest.raises(InvalidTransition, match="already complete"):
        store.cancel(job.id)
    with pytest.raises(JobNotFound):
        store.cancel("missing")


def test_report_progress_only_while_running(store: JobStore) -> None:
    job = store.create("sleep", {})
    assert store.report_progress(job.id, "w", 0.5) is True  # not running: the caller should stop
    assert store.get(job.id).progress is None
    store.claim(job.id, "w")
    assert store.report_progress(job.id, "w", 0.25) is False
    assert store.report_progress(job.id, "someone-else", 0.5) is True  # not theirs
    assert store.get(job.id).progress == 0.25


def test_heartbeats_list_live_consumers(store: JobStore) -> None:
    store.heartbeat("host:1", "host", 1, ["b", "a"])
    store.heartbeat("host:1", "host", 1, ["c"])
    store.heartbeat("host:2", "host", 2, [])
    live = store.live_consumers(heartbeat=20)
    assert {c.id for c in live} == {"host:1", "host:2"}
    assert next(c for c in live if c.id == "host:1").job_types == ["c"]
    assert store.live_consumers(heartbeat=-1) == []


def test_migrate_is_idempotent_and_versioned(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/x.db")
    assert schema_version(engine) == 0
    assert migrate(engine) == len(MIGRATIONS)
    assert migrate(engine) == len(MIGRATIONS)
    assert schema_version(engine) == len(MIGRATIONS)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert {"jobs", "consumers", "videos", "schema_version", "job_attempts"} <= tables
    assert mode == "wal"


def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/z.db")
    migrate(engine, [lambda c: None, lambda c: None])
    with pytest.raises(ConfigError, match="schema version 2, newer than this scanner knows"):
        migrate(engine, [lambda c: None])


def test_migrations_apply_in_order_and_only_once(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/y.db")
    applied: list[int] = []
    steps = [lambda c: applied.append(1), lambda c: applied.append(2)]
    assert migrate(engine, steps[:1]) == 1
    assert migrate(engine, steps) == 2
    assert applied == [1, 2]
