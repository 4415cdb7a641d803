"""Fixtures: a fresh data directory, app and database per test; real consumer processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from scanner import hookimpl
from scanner.config import Settings
from scanner.plugins.manager import get_plugin_manager
from scanner.services import Services, build_services
from scanner.testing import BIN, ConsumerProcess, wait_until

__all__ = ["BIN", "ConsumerProcess", "wait_until"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scanner_env(tmp_path: Path) -> dict[str, str]:
    """scanner.testing's, but core tests count jobs: the first-party plugins stay loaded
    but queue nothing by themselves here (their own tests cover that)."""
    return {
        "SCANNER_DATA_DIR": str(tmp_path / "data"),
        "SCANNER_HEARTBEAT": "0.2s",
        "SCANNER_THUMBNAILS_AUTO": "0",
        "SCANNER_CHECKSUM_AUTO": "0",
    }


# Short names for the fixtures of scanner.testing, which this suite uses everywhere.


@pytest.fixture
def env(scanner_env: dict[str, str]) -> dict[str, str]:
    return scanner_env


@pytest.fixture
def settings(scanner_settings: Settings) -> Settings:
    return scanner_settings


@pytest.fixture
def services(scanner_services: Services) -> Services:
    return scanner_services


@pytest.fixture
def client(scanner_client: FlaskClient) -> FlaskClient:
    return scanner_client


@pytest.fixture
def start_consumer(
    scanner_start_consumer: Callable[..., ConsumerProcess],
) -> Callable[..., ConsumerProcess]:
    return scanner_start_consumer


@pytest.fixture
def consumer(start_consumer: Callable[..., ConsumerProcess]) -> ConsumerProcess:
    return start_consumer()


def fake_plugin(**hooks: Any) -> SimpleNamespace:
    """A plugin module made here: each keyword a hook implementation."""
    return SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def services_with(settings: Settings, name: str = "test-plugin", **hooks: Any) -> Services:
    """Services whose plugins are the installed ones plus one made here from ``hooks``."""
    plugins = get_plugin_manager(settings, extra=[(name, fake_plugin(**hooks))])
    return build_services(settings, plugins)


def submit_at_once(services: Services, n: int, type: str, payload: dict[str, Any]) -> list[str]:
    """Submit the same job from ``n`` threads at the same instant: "accepted" or "refused"
    (a ``JobConflict``) for each, sorted."""
    from scanner.jobs.service import JobConflict

    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def submit() -> None:
        barrier.wait()
        try:
            services.jobs.submit(type, payload)
            outcomes.append("accepted")
        except JobConflict:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def submit_job(client: FlaskClient, type: str, payload: dict[str, Any], **options: Any) -> str:
    """``POST /api/v1/jobs``, which must be accepted; the job's id."""
    response = client.post("/api/v1/jobs", json={"type": type, "payload": payload, **options})
    assert response.status_code == 202, response.json
    return str(response.json["job_id"])


def get_job(client: FlaskClient, job_id: str) -> dict[str, Any]:
    """``GET /api/v1/jobs/{id}``: the job with its history."""
    job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json
    return job


def wait_job(client: FlaskClient, job_id: str, timeout: float = 15) -> dict[str, Any]:
    """``GET /api/v1/jobs/{id}/wait``, which must see the job finish within ``timeout``."""
    response = client.get(f"/api/v1/jobs/{job_id}/wait?timeout={timeout}")
    assert response.status_code == 200, response.json
    job: dict[str, Any] = response.json
    return job


def health(base: str) -> dict[str, Any] | None:
    """``GET /api/v1/health`` of the service at ``base``: its body, or None while nothing
    answers there."""
    try:
        body: dict[str, Any] = requests.get(f"{base}/api/v1/health", timeout=5).json()
    except (requests.RequestException, ValueError):
        return None
    return body


def procfile() -> dict[str, str]:
    """The commands of the Procfile, by process type: tests run exactly what operators run."""
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceProcess:
    """A Procfile command (or honcho itself) run through /bin/sh, as honcho does."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.env = {**os.environ, **env, "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {self.command}"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    started: list[ServiceProcess] = []

    def start(command: str, env: dict[str, str]) -> ServiceProcess:
        service = ServiceProcess(command, env, tmp_path / f"service-{len(started)}.log")
        started.append(service)
        return service.start()

    yield start
    for service in started:
        # SIGTERM: gunicorn's gthread workers can hang on a SIGINT sent to the whole group
        # (each gets it twice, and the second re-enters its pool's shutdown); honcho passes
        # SIGTERM on, and a consumer hands its jobs back on it.
        service.stop(signal.SIGTERM)


def _unavailable(what: str, error: Exception) -> None:
    """Scale-out tests need real servers: CI fails without them; a laptop may skip."""
    message = f"{what} is not reachable ({error}); start it to run the scale-out tests"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


POSTGRES_ADMIN = os.environ.get(
    "SCANNER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SCANNER_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards."""
    import psycopg

    name = f"scanner_test_{os.getpid()}_{time.monotonic_ns()}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        _unavailable("PostgreSQL", exc)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_ADMIN.rsplit("/", 1)[0]
        yield f"{base}/{name}"
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database emptied before and after this test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        _unavailable("Redis", exc)
    yield REDIS_URL
    client.flushdb()
