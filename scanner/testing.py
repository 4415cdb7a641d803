"""pytest fixtures for testing scanner and its plugins, loaded by pytest automatically once
scanner is installed (the ``pytest11`` entry point).

- ``scanner_env``: SCANNER_* variables for a fresh data directory (override it to add more);
- ``scanner_settings``, ``scanner_services``, ``scanner_app``, ``scanner_client``: the parts
  built on it (``scanner_client`` is a Flask test client of the whole API, plugins included);
- ``scanner_run_job(type, payload)``: submit a job and run it here, now, through the real
  runner and store; returns the finished ``Job`` (``run_job(services, ...)`` does the same
  with services of a test's own making);
- ``scanner_start_consumer(workers=4, options=())``: start a real ``huey_consumer`` process
  on the same data directory, with more consumer ``options`` if given (stopped after the
  test).
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from scanner.app import create_app
from scanner.config import Settings
from scanner.jobs.runner import Runner
from scanner.jobs.store import Job
from scanner.services import Services, build_services

BIN = Path(sys.executable).parent


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class ConsumerProcess:
    """A real ``huey_consumer`` process on a test's data directory."""

    def __init__(
        self, env: dict[str, str], log_path: Path, workers: int = 4, options: Sequence[str] = ()
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.workers = workers
        self.options = options  # more huey_consumer options, such as -v
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ConsumerProcess:
        args = [str(BIN / "huey_consumer"), "scanner.worker.huey", "-w", str(self.workers)]
        # Poll the queue often so tests do not wait on an idle consumer's back-off.
        args += ["-k", "thread", "-d", "0.01", "-m", "0.05", "-b", "1.05", "-s", "1"]
        args += self.options
        # The test's settings only: a developer's shell may export the real service's
        # (SCANNER_DATABASE_URL...), and a test consumer must never run its jobs.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("SCANNER_")}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, env={**inherited, **self.env}, stdout=log, stderr=log
            )
        wait_until(
            lambda: b"Huey consumer started" in self.log_path.read_bytes(),
            what="the consumer to start",
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Stop with ``sig`` (SIGINT: graceful) and return the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@pytest.fixture
def scanner_env(tmp_path: Path) -> dict[str, str]:
    """SCANNER_* variables for this test; consumers started by the test get the same."""
    return {"SCANNER_DATA_DIR": str(tmp_path / "scanner-data"), "SCANNER_HEARTBEAT": "0.2s"}


@pytest.fixture
def scanner_settings(scanner_env: dict[str, str]) -> Settings:
    return Settings.from_env(scanner_env)


@pytest.fixture
def scanner_services(scanner_settings: Settings) -> Services:
    return build_services(scanner_settings)


@pytest.fixture
def scanner_app(scanner_services: Services) -> Flask:
    app = create_app(services=scanner_services)
    app.testing = True
    return app


@pytest.fixture
def scanner_client(scanner_app: Flask) -> FlaskClient:
    return scanner_app.test_client()


def run_job(
    services: Services, type: str, payload: dict[str, Any] | None = None, **options: Any
) -> Job:
    """Submit a job and run it here and now, through the real runner and store; the job as
    it ended. (The message it put on the queue stays there, and is skipped if run later.)"""
    job = services.jobs.submit(type, payload or {}, **options)
    Runner(services, lambda: "pytest:0:0").run(job.id)
    return services.store.get(job.id)


@pytest.fixture
def scanner_run_job(scanner_services: Services) -> Callable[..., Job]:
    return functools.partial(run_job, scanner_services)


@pytest.fixture
def scanner_start_consumer(
    scanner_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., ConsumerProcess]]:
    started: list[ConsumerProcess] = []

    def start(workers: int = 4, options: Sequence[str] = ()) -> ConsumerProcess:
        log = tmp_path / f"consumer-{len(started)}.log"
        consumer = ConsumerProcess(scanner_env, log, workers, options)
        started.append(consumer)
        return consumer.start()

    yield start
    for consumer in started:
        consumer.stop()
