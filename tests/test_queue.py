"""When Huey hands a consumer's runner the moment to settle the endings it holds: a worker
about to wait for work, and the consumer on its way out (real storages, no consumer)."""

from __future__ import annotations

from pathlib import Path

from scanner.queue import JobHuey, JobQueue, create_huey


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


def test_a_worker_settles_before_a_read_that_may_block(redis_url: str) -> None:
    huey = create_huey(redis_url)
    assert huey.storage.blocking
    settled = counting(huey)
    JobQueue(huey).enqueue("job-1")
    assert huey.dequeue() is not None
    assert settled == [1]


def test_a_stopping_consumer_settles(tmp_path: Path) -> None:
    huey = create_huey(f"sqlite:///{tmp_path}/queue.db")
    settled = counting(huey)
    huey.notify_interrupted_tasks()  # the consumer's last call, however it was stopped
    assert settled == [1]
