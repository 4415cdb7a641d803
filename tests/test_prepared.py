"""Prepared statements read and write exactly what SQLAlchemy's own execution would, on SQLite
and on PostgreSQL (a real server: CI fails without one)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from scanner.db import Prepared, create_engine, migrate, write
from scanner.schema import jobs


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/prepared.db"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = create_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


def a_job(**values: Any) -> dict[str, Any]:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    job = {
        "id": "job-1",
        "type": "echo",
        "status": "pending",
        "payload": {"text": "héllo", "nested": [1, 2.5, None, {"x": True}]},
        "progress": 0.25,
        "result": None,
        "error": None,
        "attempts": 0,
        "retries": 2,
        "retry_delay": 1.5,
        "timeout": None,
        "priority": -3,
        "created_at": moment,
        "updated_at": moment,
        "started_at": None,
        "finished_at": None,
        "next_attempt_at": moment + timedelta(seconds=1),
        "cancel_requested_at": None,
        "consumer": None,
    }
    return job | values


def test_a_prepared_insert_reads_back_as_sqlalchemy_reads_it(engine: Engine) -> None:
    with write(engine) as conn:
        assert Prepared(engine.dialect, jobs.insert()).rowcount(conn, a_job()) == 1

    by_id = jobs.select().where(jobs.c.id == sa.bindparam("job_id"))
    with engine.connect() as conn:
        ours = Prepared(engine.dialect, by_id).first(conn, {"job_id": "job-1"})
        theirs = conn.execute(by_id, {"job_id": "job-1"}).one()._asdict()
    assert ours == theirs
    assert ours is not None
    assert ours["payload"] == a_job()["payload"]
    assert ours["created_at"] == a_job()["created_at"]
    assert ours["created_at"].tzinfo is UTC


def test_prepared_update_returns_rows_and_counts_only_what_matched(engine: Engine) -> None:
    with write(engine) as conn:
        conn.execute(jobs.insert(), [a_job(), a_job(id="job-2")])
    start = (
        jobs.update()
        .where(jobs.c.id == sa.bindparam("job_id"), jobs.c.status == "pending")
        .values(status="running", attempts=jobs.c.attempts + 1, result=sa.bindparam("r"))
        .returning(jobs.c.id, jobs.c.attempts, jobs.c.result)
    )
    prepared = Prepared(engine.dialect, start)
    with write(engine) as conn:
        row = prepared.first(conn, {"job_id": "job-1", "r": {"n": 1}})
        again = prepared.first(conn, {"job_id": "job-1", "r": {"n": 2}})
    assert row == {"id": "job-1", "attempts": 1, "result": {"n": 1}}
    assert again is None  # no longer pending

    remove = Prepared(engine.dialect, jobs.delete().where(jobs.c.status == sa.bindparam("s")))
    with write(engine) as conn:
        assert remove.rowcount(conn, {"s": "pending"}) == 1
        assert remove.rowcount(conn, {"s": "pending"}) == 0


def test_prepared_reads_many_rows_in_order(engine: Engine) -> None:
    with write(engine) as conn:
        conn.execute(jobs.insert(), [a_job(id=f"job-{n}", priority=n) for n in range(3)])
    by_priority = jobs.select().where(jobs.c.priority >= sa.bindparam("p")).order_by(jobs.c.id)
    with engine.connect() as conn:
        rows = Prepared(engine.dialect, by_priority).all(conn, {"p": 1})
    assert [(r["id"], r["priority"]) for r in rows] == [("job-1", 1), ("job-2", 2)]


def test_a_statement_sqlalchemy_completes_at_run_time_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="completes this statement at run time"):
        Prepared(engine.dialect, jobs.select().where(jobs.c.status.in_(["a", "b"])))


def test_errors_are_raised_as_sqlalchemy_raises_them(engine: Engine) -> None:
    insert = Prepared(engine.dialect, jobs.insert())
    with write(engine) as conn:
        insert.rowcount(conn, a_job())
    with pytest.raises(sa.exc.IntegrityError), write(engine) as conn:
        insert.rowcount(conn, a_job())  # the same id again
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 1
