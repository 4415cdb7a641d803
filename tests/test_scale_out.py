"""The scale-out path for real: PostgreSQL as the database, Redis or PostgreSQL as the queue."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scanner.app import create_app
from scanner.config import Settings
from scanner.db import create_engine, migrate, schema_version
from scanner.errors import ConfigError
from scanner.jobs.store import Job
from scanner.queue import create_huey
from scanner.schema import MIGRATIONS
from scanner.services import build_services

from conftest import ConsumerProcess, submit_at_once


def run_echo_jobs(env: dict[str, str], start_consumer: Callable[..., ConsumerProcess]) -> None:
    client = create_app(Settings.from_env(env)).test_client()
    ids = [
        client.post("/api/v1/jobs", json={"type": "echo", "payload": {"text": str(n)}}).json[
            "job_id"
        ]
        for n in range(10)
    ]
    start_consumer()
    for n, job_id in enumerate(ids):
        job = client.get(f"/api/v1/jobs/{job_id}/wait?timeout=20").json
        assert job["status"] == "complete" and job["result"]["echo"] == str(n)
    health = client.get("/api/v1/health").json
    assert health["database"]["backend"] == "postgresql"
    assert health["queue"]["backend"] == env["SCANNER_QUEUE_URL"].split(":")[0]  # redis, ...


def test_postgres_database_with_redis_queue(
    env: dict[str, str],
    postgres_url: str,
    redis_url: str,
    start_consumer: Callable[..., ConsumerProcess],
) -> None:
    env.update(SCANNER_DATABASE_URL=postgres_url, SCANNER_QUEUE_URL=redis_url)
    run_echo_jobs(env, start_consumer)


def test_postgres_database_and_queue(
    env: dict[str, str], postgres_url: str, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    env.update(SCANNER_DATABASE_URL=postgres_url, SCANNER_QUEUE_URL=postgres_url)
    run_echo_jobs(env, start_consumer)


def test_postgres_migrations_are_versioned(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    assert schema_version(engine) == 0
    assert migrate(engine) == len(MIGRATIONS) and migrate(engine) == len(MIGRATIONS)
    assert schema_version(engine) == len(MIGRATIONS)
    engine.dispose()


@pytest.mark.parametrize("url", ["amqp://localhost", "sqlite://", "sqlite:///"])
def test_unknown_queue_urls_are_refused_with_the_forms_that_work(url: str) -> None:
    with pytest.raises(ConfigError, match="SCANNER_QUEUE_URL"):
        create_huey(url)


def test_postgres_admits_one_of_simultaneous_overlapping_scans(
    env: dict[str, str], postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    env.update(SCANNER_DATABASE_URL=postgres_url, SCANNER_QUEUE_URL=redis_url)
    services = build_services(Settings.from_env(env))
    create = services.store.create

    def create_slowly(*args: Any, unless: Callable[[list[Job]], None], **options: Any) -> Job:
        # The overlap check takes its time, as on a busy server: without the lock around it,
        # every submission would find no scan active and all six would be admitted.
        def check(active: list[Job]) -> None:
            time.sleep(0.2)
            unless(active)

        return create(*args, unless=check, **options)

    services.store.create = create_slowly  # type: ignore[method-assign]
    outcomes = submit_at_once(services, 6, "scan", {"path": str(tmp_path)})
    services.engine.dispose()
    assert outcomes == ["accepted"] + ["refused"] * 5
