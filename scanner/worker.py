"""The consumer side: ``huey_consumer scanner.worker.huey -w 4`` runs jobs.

``huey_consumer`` imports a Huey instance by dotted name, so this module offers one; it is
built on first access (from SCANNER_* variables), not at import, so importing is free.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from huey import Huey
from huey.api import Task
from huey.signals import SIGNAL_INTERRUPTED

from scanner.config import Settings
from scanner.jobs.housekeeping import Housekeeper, consumer_id
from scanner.jobs.runner import Runner, requeue
from scanner.plugins.manager import Plugins
from scanner.services import Services, build_services

log = logging.getLogger(__name__)


class Housekeeping:
    """Beats, and runs ``Housekeeper`` rounds, every heartbeat interval: two threads per
    process, so a slow round (a busy database) never delays the heartbeat."""

    def __init__(self, housekeeper: Housekeeper, interval: float) -> None:
        self.housekeeper = housekeeper
        self.interval = interval
        self._lock = threading.Lock()
        self._pid: int | None = None

    def ensure_running(self) -> None:
        """Start once per process: workers may be threads of one process or forked ones."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.housekeeper.beat()  # before this process takes any job
            for name, step in (
                ("heartbeat", self.housekeeper.beat),
                ("housekeeping", self.housekeeper.run_once),
            ):
                threading.Thread(
                    target=self._every_interval, args=(step,), name=f"scanner-{name}", daemon=True
                ).start()

    def _every_interval(self, step: Callable[[], None]) -> None:
        while True:
            time.sleep(self.interval)
            try:
                step()
            except Exception:
                log.exception("%s failed; trying again in %gs", step.__name__, self.interval)


def create_consumer(settings: Settings | None = None, plugins: Plugins | None = None) -> Services:
    """Services for a consumer process, with the job task wired to a runner."""
    services = build_services(settings or Settings.from_env(), plugins, role="consumer")
    huey = services.queue.huey
    # A handler that checks (ctx.check, ctx.progress) sees the consumer stopping and hands
    # its job back to the queue.
    # Endings ride in the next claim's transaction only where a dequeue answers at once:
    # a Redis or PostgreSQL queue may wait a second for a message, and an ending held that
    # long would keep the job's waiting clients waiting.
    runner = Runner(services, consumer_id, huey.stopping, hold_endings=not huey.storage.blocking)
    services.queue.execute = runner.run
    huey.settle = runner.settle
    housekeeper = Housekeeper(services, holds=runner.holds)
    housekeeping = Housekeeping(housekeeper, services.settings.heartbeat_seconds)

    @huey.on_startup()
    def _worker_started() -> None:
        # Forked workers must not reuse connections opened in the parent process.
        services.engine.dispose(close=False)
        _skip_huey_task_lines()  # here: huey_consumer sets its logger up after loading us
        housekeeping.ensure_running()

    @huey.on_shutdown()
    def _worker_stopped() -> None:
        runner.settle()  # a forked worker's endings live in its own process

    @huey.signal(SIGNAL_INTERRUPTED)
    def _interrupted(signal: str, task: Task) -> None:
        # SIGTERM stops the consumer without waiting: the jobs its workers still hold go back
        # to the queue now, rather than waiting to be found orphaned.
        for job_id in task.args:
            try:
                job = services.store.get(job_id)
                requeue(services, job, consumer_id(), "shutdown", "the consumer was stopped")
            except Exception:
                log.exception("could not hand job %s back to the queue", job_id)

    return services


_huey: Huey | None = None


def _skip_huey_task_lines() -> None:
    """Huey logs two INFO lines a task under the "huey" logger ("Executing <message id>",
    "<message id> executed in", and a line when it schedules a retry); they name Huey's
    message id, which nothing else knows, and the runner logs one line a job instead.
    Raising "huey" to WARNING skips making those records at all: a filter dropped them only
    after Huey had built them, 9% of a no-op job's CPU (docs/benchmarks.md). The consumer's
    own lines ("huey.consumer") keep INFO; under ``-v`` (DEBUG) every line stays."""
    huey_log = logging.getLogger("huey")
    if huey_log.level == logging.INFO:
        logging.getLogger("huey.consumer").setLevel(logging.INFO)
        huey_log.setLevel(logging.WARNING)


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
