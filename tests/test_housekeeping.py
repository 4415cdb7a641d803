"""Housekeeping against a real store and queue: orphans, lost messages, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from scanner.jobs.housekeeping import Housekeeper
from scanner.jobs.states import Status
from scanner.jobs.store import utcnow
from scanner.schema import consumers, job_attempts, jobs
from scanner.services import Services


@pytest.fixture
def keeper(services: Services) -> Housekeeper:
    return Housekeeper(services, me=lambda: "testhost:1:abc")


def age(services: Services, table: sa.Table, column: str, days: float) -> None:
    with services.engine.begin() as conn:
        conn.execute(table.update().values({column: utcnow() - timedelta(days=days)}))


def test_a_job_held_by_a_silent_consumer_is_requeued(
    services: Services, keeper: Housekeeper
) -> None:
    job = services.jobs.submit("echo", {"text": "x"})
    services.queue.huey.flush()  # the message was taken by the consumer that died
    services.store.claim(job.id, "gone-host:123")
    assert keeper.recover_orphans() == 1
    again = services.store.get(job.id)
    assert again.status is Status.PENDING and again.consumer == "gone-host:123"
    assert [a["outcome"] for a in services.store.detail(job.id)[1]] == ["crashed"]
    assert services.queue.pending_count() == 1
    assert keeper.recover_orphans() == 0  # already recovered: nothing twice


def test_jobs_of_live_consumers_and_of_this_one_are_left_alone(
    services: Services, keeper: Housekeeper
) -> None:
    mine = services.jobs.submit("echo", {"text": "x"})
    theirs = services.jobs.submit("echo", {"text": "y"})
    services.store.claim(mine.id, "testhost:1:abc")
    services.store.claim(theirs.id, "alive-host:7")
    services.store.heartbeat("alive-host:7", "alive-host", 7, [])
    assert keeper.recover_orphans() == 0
    assert services.store.get(mine.id).status is Status.RUNNING
    assert services.store.get(theirs.id).status is Status.RUNNING


def test_pending_jobs_without_a_message_are_queued_once_the_queue_is_empty(
    services: Services, keeper: Housekeeper
) -> None:
    lost = services.store.create("echo", {"text": "lost"})
    queued = services.jobs.submit("echo", {"text": "queued"})
    age(services, jobs, "updated_at", days=1)
    assert keeper.requeue_stranded() == 0  # a message waits: it may be the lost job's own
    services.queue.huey.flush()
    services.store.cancel(queued.id)
    assert keeper.requeue_stranded() == 1
    (task,) = services.queue.huey.pending()
    assert task.args == (lost.id,)


def test_retention_removes_old_finished_jobs_only(services: Services, keeper: Housekeeper) -> None:
    old_done = services.jobs.submit("echo", {"text": "a"})
    services.store.claim(old_done.id, "testhost:1:abc")
    services.store.retry_later(old_done.id, "failed once", 0, "testhost:1:abc")  # an attempt row
    services.store.claim(old_done.id, "testhost:1:abc")
    services.store.finish(old_done.id, Status.COMPLETE)
    old_pending = services.jobs.submit("echo", {"text": "b"})
    old_running = services.jobs.submit("echo", {"text": "c"})
    services.store.claim(old_running.id, "testhost:1:abc")
    services.store.heartbeat("old-host:1", "old-host", 1, [])
    for table, column in ((jobs, "finished_at"), (jobs, "created_at"), (consumers, "last_seen")):
        age(services, table, column, days=8)
    recent = services.jobs.submit("echo", {"text": "d"})
    services.store.claim(recent.id, "testhost:1:abc")
    services.store.retry_later(recent.id, "failed once", 0, "testhost:1:abc")
    services.store.claim(recent.id, "testhost:1:abc")
    services.store.finish(recent.id, Status.COMPLETE)

    assert keeper.purge_if_due() == 1
    remaining = {j.id for j in services.store.list_jobs()[0]}
    assert remaining == {old_pending.id, old_running.id, recent.id}
    with services.engine.connect() as conn:
        attempts = conn.execute(sa.select(job_attempts.c.job_id)).scalars().all()
        silent = conn.execute(sa.select(consumers.c.id)).scalars().all()
    assert old_done.id not in attempts and recent.id in attempts
    assert silent == []
    assert keeper.purge_if_due() == 0  # not again until PURGE_EVERY has passed


def test_a_failing_step_does_not_stop_the_others(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    old = services.store.create("echo", {})
    services.store.cancel(old.id)
    age(services, jobs, "finished_at", days=8)
    services.queue.huey.storage.filename = "/proc/no/such/dir/queue.db"  # the queue is gone
    services.queue.huey.storage.close()
    keeper = Housekeeper(services, me=lambda: "testhost:1:abc")
    keeper.run_once()  # requeue_stranded cannot reach the queue
    assert "housekeeping step" in caplog.text
    assert services.store.list_jobs()[1] == 0  # the purge step still ran
