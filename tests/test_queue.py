"""When Huey hands a consumer's runner the moment to settle the endings it holds: a worker
that finds the queue empty, and the consumer on its way out; and on which queues a consumer
holds them at all (real storages, no consumer process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.config import Settings
from scanner.jobs.states import Status
from scanner.queue import JobHuey, JobQueue, create_huey
from scanner.worker import create_consumer


def counting(huey: JobHuey) -> list[int]:
    settled: list[int] = []
    huey.settle = lambda: settled.append(1)
    return settled


def test_a_worker_settles_when_it_finds_the_sqlite_queue_empty(tmp_path: Path) -> None:
    huey = create_huey(f"sqlite:///{tmp_path}/queue.db")
    settled = counting(huey)
    JobQueue(huey).enqueue("job-1")
    assert huey.dequeue() is not None
    assert settled == []  # a message came: its claim carries the ending
    assert huey.dequeue() is None
    assert settled == [1]


@pytest.mark.parametrize("queue", ["sqlite", "redis"])
def test_a_consumer_holds_endings_only_where_a_dequeue_answers_at_once(
    queue: str, env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    if queue == "redis":  # its dequeue may wait a second for a message
        env = {**env, "SCANNER_QUEUE_URL": request.getfixturevalue("redis_url")}
    services = create_consumer(Settings.from_env(env))
    job_id = services.jobs.submit("noop", {}).id
    assert services.queue.execute is not None
    services.queue.execute(job_id)  # as the consumer's task runs it
    held = services.store.get(job_id).status is Status.RUNNING
    assert held == (queue == "sqlite")


def test_a_stopping_consumer_settles(tmp_path: Path) -> None:
    huey = create_huey(f"sqlite:///{tmp_path}/queue.db")
    settled = counting(huey)
    huey.notify_interrupted_tasks()  # the consumer's last call, however it was stopped
    assert settled == [1]
