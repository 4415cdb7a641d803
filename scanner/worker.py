"""The consumer side: ``huey_consumer scanner.worker.huey -w 4`` runs jobs.

``huey_consumer`` imports a Huey instance by dotted name, so this module offers one; it is
built on first access (from SCANNER_* variables), not at import, so importing is free.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from huey import Huey

from scanner.config import Settings
from scanner.jobs.runner import Runner
from scanner.plugins.manager import Plugins
from scanner.services import Services, build_services

log = logging.getLogger(__name__)


def consumer_id() -> str:
    """This consumer process, as heartbeats and job rows name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Tells the job store, every few seconds, that this consumer is alive and what it runs."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()

    def beat(self) -> None:
        self.services.store.heartbeat(
            consumer_id(), socket.gethostname(), os.getpid(), list(self.services.plugins.job_types)
        )

    def ensure_running(self) -> None:
        """Start the heartbeat thread once per process (workers may be forked processes)."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.beat()
            threading.Thread(target=self._loop, name="scanner-heartbeat", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.services.settings.heartbeat_seconds):
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed; retrying")

    def stop(self) -> None:
        self._stop.set()


def create_consumer(settings: Settings | None = None, plugins: Plugins | None = None) -> Services:
    """Services for a consumer process, with the job task wired to a runner."""
    services = build_services(settings or Settings.from_env(), plugins)
    runner = Runner(services, consumer_id)
    services.queue.execute = runner.run
    heartbeat = Heartbeat(services)
    huey = services.queue.huey

    @huey.on_startup()
    def _worker_started() -> None:
        # Forked workers must not reuse connections opened in the parent process.
        services.engine.dispose(close=False)
        heartbeat.ensure_running()

    services.plugins.call_each("scanner_startup", role="consumer", services=services)
    return services


_huey: Huey | None = None


def _log_to_stderr() -> None:
    # huey_consumer configures the "huey" logger only; scanner's own lines go out beside it.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s:%(name)s:%(message)s"))
    root = logging.getLogger("scanner")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def __getattr__(name: str) -> Any:
    global _huey
    if name != "huey":
        raise AttributeError(name)
    if _huey is None:
        _log_to_stderr()
        _huey = create_consumer().queue.huey
    return _huey
