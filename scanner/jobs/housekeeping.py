"""What every consumer does now and then: heartbeats, recovering jobs whose consumer died,
re-queueing jobs that lost their message, and pruning old jobs.

Each step is safe to run in many consumers at once: every change is a conditional UPDATE
that only one of them can win.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from scanner.jobs.runner import requeue
from scanner.jobs.states import Status
from scanner.jobs.store import utcnow

if TYPE_CHECKING:
    from scanner.services import Services

log = logging.getLogger(__name__)

# A job whose consumer died this many times while running it is not run again.
MAX_CRASHES = 3
# A pending job untouched for this many heartbeat intervals, while no message waits in the
# queue, has lost its message (its web process died between the row and the message).
STRANDED_INTERVALS = 6
PURGE_EVERY = 600.0  # seconds between retention sweeps


_me: tuple[int, str] = (0, "")  # (pid, its id)


def consumer_id() -> str:
    """This consumer process, as heartbeats and job rows name it: ``host:pid:token``.

    The random token tells apart two processes that get the same pid (a restarted container
    usually does), so a new consumer never mistakes a dead one's job for its own.
    """
    global _me
    pid = os.getpid()
    if _me[0] != pid:  # a new process, or a forked worker
        # Made once a process: every job the consumer runs asks for it, and a consumer must
        # keep one name for life, even if the host is renamed meanwhile.
        _me = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
    return _me[1]


def _process_gone(consumer: str) -> bool:
    """True if ``consumer`` ran on this host and its process no longer exists."""
    parts = consumer.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = parts[1]
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Housekeeper:
    """``holds(job_id)``: whether this consumer's runner is running the job or holds its
    ending; by default it holds every job it claimed, and none is taken for lost."""

    def __init__(
        self,
        services: Services,
        me: Callable[[], str] = consumer_id,
        holds: Callable[[str], bool] = lambda job_id: True,
    ) -> None:
        self.services = services
        self.me = me
        self.holds = holds
        self._purged_at = float("-inf")
        self._lost: dict[str, int] = {}  # job id: attempt, as the last round saw it lost

    def run_once(self) -> None:
        """One round: each step logged and skipped on error, so one failure stops none."""
        steps = (self.recover_orphans, self.recover_lost, self.requeue_stranded, self.purge_if_due)
        for step in steps:
            try:
                step()
            except Exception:
                log.exception("housekeeping step %s failed; trying again next round", step)

    def beat(self) -> None:
        me = self.me()
        host, pid, _ = me.rsplit(":", 2)
        self.services.store.heartbeat(me, host, int(pid), list(self.services.plugins.job_types))

    def recover_orphans(self) -> int:
        """Requeue running jobs whose consumer is dead; fail those that keep killing it."""
        store, settings = self.services.store, self.services.settings
        alive = {c.id for c in store.live_consumers(settings.heartbeat_seconds)}
        recovered = 0
        for job in store.running():
            dead = job.consumer not in alive or _process_gone(job.consumer or "")
            if job.consumer == self.me() or not dead:
                continue
            crashes = store.count_attempts(job.id, "crashed") + 1
            error = f"its consumer {job.consumer} died while running it"
            if crashes >= MAX_CRASHES:
                failed = store.finish(
                    job.id,
                    Status.FAILED,
                    consumer=job.consumer,
                    outcome="crashed",
                    error=f"{error}, {crashes} times; it is not run again",
                )
                if failed:
                    log.error("job %s failed: its consumer died %d times", job.id, crashes)
            elif requeue(self.services, job, job.consumer or "", "crashed", error):
                log.warning("job %s recovered from dead consumer %s", job.id, job.consumer)
                recovered += 1
        return recovered

    def recover_lost(self) -> int:
        """Requeue jobs the store says this consumer runs but its runner no longer holds: a
        write that failed after the handler (a full disk, a lost connection) left them
        ``running`` under a live consumer, which no other consumer would recover. A job must
        be seen so in two rounds running, at the same attempt: an ending being written as
        this round looked is not lost."""
        me = self.me()
        lost = {
            job.id: job
            for job in self.services.store.running()
            if job.consumer == me and not self.holds(job.id)
        }
        confirmed = [job for job in lost.values() if self._lost.get(job.id) == job.attempts]
        self._lost = {job.id: job.attempts for job in lost.values()}
        recovered = 0
        for job in confirmed:
            error = "its consumer lost track of it (a write to the job store failed)"
            if requeue(self.services, job, me, "crashed", error):
                log.warning("job %s was lost by its consumer; recovered", job.id)
                recovered += 1
        return recovered

    def requeue_stranded(self) -> int:
        """Queue pending jobs that have no message, if the queue is empty enough to tell."""
        services = self.services
        if services.queue.pending_count():
            return 0  # messages are waiting: they may be these jobs' own
        idle = services.settings.heartbeat_seconds * STRANDED_INTERVALS
        stranded = services.store.stranded(utcnow() - timedelta(seconds=idle))
        for job in stranded:
            services.queue.enqueue(job.id, priority=job.priority, timeout=job.timeout)
            log.warning("job %s was pending with no message; queued it again", job.id)
        return len(stranded)

    def purge_if_due(self) -> int:
        now = time.monotonic()
        if now - self._purged_at < PURGE_EVERY:
            return 0
        self._purged_at = now
        keep = self.services.settings.job_retention_seconds
        removed = self.services.store.purge(utcnow() - timedelta(seconds=keep))
        if removed:
            log.info("removed %d jobs finished more than %gs ago", removed, keep)
        return removed
