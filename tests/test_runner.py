"""The runner in-process against real SQLite and Huey storage, with plugins made here."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from huey.exceptions import TaskTimeout
from marshmallow import Schema, fields, validate

from scanner import JobContext, JobType
from scanner.config import Settings
from scanner.errors import JobCancelled
from scanner.jobs.housekeeping import Housekeeper
from scanner.jobs.runner import Runner, requeue
from scanner.jobs.states import Status
from scanner.jobs.types import LONGEST
from scanner.services import Services
from scanner.testing import run_job

from conftest import services_with


def returns_a_list(ctx: JobContext, payload: dict[str, Any]) -> Any:
    return [1, 2]


def cancels_itself_then_fails(ctx: JobContext, payload: dict[str, Any]) -> None:
    ctx.services.store.cancel(ctx.job_id)
    raise RuntimeError("failed after the cancel")


def raises_huey_timeout(ctx: JobContext, payload: dict[str, Any]) -> None:
    raise TaskTimeout("timeout (1s)")


def spins_until_checked(ctx: JobContext, payload: dict[str, Any]) -> None:
    while True:
        ctx.check()
        time.sleep(0.01)


def queues_a_follow_up(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(0.5)
    assert ctx.time_left is None
    return {"follow_up": ctx.submit("noop").id}


def flaky(ctx: JobContext, payload: dict[str, Any]) -> None:
    raise ValueError("")


def returns_nan(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    return {"ratio": float("nan")}


def fails_with_a_nul_byte(ctx: JobContext, payload: dict[str, Any]) -> None:
    raise ValueError("bad\x00byte in caf\udce9.mp4")  # a name that is not UTF-8, as Python has it


def stops_when_told(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.services.store.cancel(ctx.job_id)  # as a client would, while it runs
    steps = 0
    while not ctx.cancelled and steps < 1000:
        steps += 1
        time.sleep(0.01)
    return {"stopped_after": steps}


def never_looks(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.services.store.cancel(ctx.job_id)
    return {"done": True}


def reports_progress(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(1, 2)
    return {"ok": True}


SECOND_RUN = threading.Event()
LET_GO = threading.Event()


def fails_then_waits(ctx: JobContext, payload: dict[str, Any]) -> None:
    if ctx.attempt == 1:
        raise ValueError("first attempt fails")
    SECOND_RUN.set()
    LET_GO.wait(10)


MEETING = threading.Barrier(3)


def meets_the_others(ctx: JobContext, payload: dict[str, Any]) -> None:
    MEETING.wait(timeout=10)


class Positive(Schema):
    n = fields.Integer(required=True, validate=validate.Range(min=1))


TYPES = [
    JobType("list", returns_a_list),
    JobType("self-cancel", cancels_itself_then_fails, retries=3),
    JobType("huey-timeout", raises_huey_timeout, timeout=1),
    JobType("spin", spins_until_checked, timeout=0.2),
    JobType("follow", queues_a_follow_up),
    JobType("flaky", flaky, retries=2, retry_delay=10, retry_backoff=3),
    JobType("positive", returns_a_list, Positive),
    JobType("meet", meets_the_others),
    JobType("nul", fails_with_a_nul_byte),
    JobType("nan", returns_nan),
    JobType("backs-off-far", flaky, retries=2, retry_delay=LONGEST, retry_backoff=1e9),
    JobType("polite", stops_when_told),
    JobType("reports", reports_progress),
    JobType("fails-then-waits", fails_then_waits, retries=1),
    JobType("deaf", never_looks),
]


@pytest.fixture
def services(settings: Settings) -> Services:
    return services_with(settings, "local", scanner_job_types=lambda: TYPES)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_an_error_with_a_nul_byte_or_a_name_not_utf8_is_recorded_on_every_database(
    database: str, env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    if database == "postgresql":  # whose text refuses the byte itself
        env = {**env, "SCANNER_DATABASE_URL": request.getfixturevalue("postgres_url")}
    services = services_with(Settings.from_env(env), "local", scanner_job_types=lambda: TYPES)
    job = run_job(services, "nul")
    assert job.status is Status.FAILED
    assert job.error == "ValueError: bad\\x00byte in caf\\udce9.mp4"


def test_a_result_that_is_not_json_fails_the_job_with_the_reason(services: Services) -> None:
    job = run_job(services, "nan")
    assert job.status is Status.FAILED and job.result is None
    assert job.error == "ValueError: Out of range float values are not JSON compliant"


def test_a_result_that_is_not_a_dict_fails_the_job(services: Services) -> None:
    job = run_job(services, "list")
    assert job.status is Status.FAILED
    assert job.error == "TypeError: handler returned list, expected a dict or None"


def test_a_cancel_wins_over_a_failure_with_retries_left(services: Services) -> None:
    job = run_job(services, "self-cancel")
    assert job.status is Status.CANCELLED and job.attempts == 1
    assert job.error == "RuntimeError: failed after the cancel"


def test_a_handler_that_stops_when_told_ends_cancelled_with_what_it_did(
    services: Services,
) -> None:
    job = run_job(services, "polite")
    assert job.status is Status.CANCELLED and job.result["stopped_after"] < 1000
    # One that never looked did all its work: complete, though the cancel came meanwhile.
    assert run_job(services, "deaf").status is Status.COMPLETE


def test_a_job_handed_back_after_its_cancel_was_asked_ends_cancelled(services: Services) -> None:
    job = services.jobs.submit("list", {})
    claimed = services.store.claim(job.id, "gone:1:x")
    assert claimed is not None
    services.store.cancel(job.id)  # asked while it ran; then its consumer stopped
    queued = services.queue.pending_count()
    assert requeue(services, claimed, "gone:1:x", "shutdown", "the consumer was stopped")
    after, history = services.store.detail(job.id)
    assert after.status is Status.CANCELLED and after.finished_at is not None
    assert [a["outcome"] for a in history] == ["shutdown"]
    assert services.queue.pending_count() == queued  # not queued to run again


def test_a_cancel_outranks_a_shutdown(services: Services) -> None:
    # Both at once: handed back, the job would only run again; cancelled, it is done.
    job = services.jobs.submit("list", {})
    claimed = services.store.claim(job.id, "test:1")
    assert claimed is not None
    services.store.cancel(job.id)
    with pytest.raises(JobCancelled):
        JobContext(claimed, services, stopping=lambda: True).check()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_cancel_racing_a_retry_always_takes(
    database: str, env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    # A failing job with retries goes running -> pending -> running... A cancel that found it
    # running, then tried to flag it once it was pending again, was lost (and answered 202).
    if database == "postgresql":  # where the row lock, not a database lock, keeps it
        env = {**env, "SCANNER_DATABASE_URL": request.getfixturevalue("postgres_url")}
    services = services_with(Settings.from_env(env), "local", scanner_job_types=lambda: TYPES)
    store = services.store

    def flip(job_id: str, stop: threading.Event) -> None:
        while not stop.is_set():
            if store.claim(job_id, "test:1"):
                store.retry_later(job_id, "again", 0, "test:1")

    for _ in range(60):
        job = services.jobs.submit("flaky", {}, retries=100, retry_delay=0)
        stop = threading.Event()
        flipper = threading.Thread(target=flip, args=(job.id, stop))
        flipper.start()
        time.sleep(0.005)
        asked = store.cancel(job.id)
        stop.set()
        flipper.join(5)
        assert asked.status is Status.CANCELLED or asked.cancel_requested_at is not None


def refuse(services: Services, what: str, when: str) -> None:
    """A real database error on some writes of the job store, as a full disk gives."""
    with services.engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TRIGGER refuse_{what} BEFORE UPDATE ON jobs WHEN {when}"
            " BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )


def test_a_progress_write_that_fails_does_not_fail_the_job(services: Services) -> None:
    refuse(services, "progress", "NEW.status = 'running' AND NEW.progress IS NOT NULL")
    job = run_job(services, "reports")
    assert job.status is Status.COMPLETE and job.result == {"ok": True}


def test_a_job_left_running_by_a_failed_write_is_recovered_by_its_own_consumer(
    services: Services,
) -> None:
    job = services.jobs.submit("flaky", {})
    refuse(services, "retry", "NEW.status = 'pending'")  # its retry cannot be recorded
    runner = Runner(services, lambda: "test:1")
    with pytest.raises(sa.exc.IntegrityError):
        runner.run(job.id)  # as Huey sees it: "unhandled exception in task"
    assert services.store.get(job.id).status is Status.RUNNING
    keeper = Housekeeper(services, me=lambda: "test:1", holds=runner.holds)
    assert keeper.recover_lost() == 0  # seen once: it might be an ending being written
    with services.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_retry")  # the disk has room again
    assert keeper.recover_lost() == 1
    after, history = services.store.detail(job.id)
    assert after.status is Status.PENDING and [a["outcome"] for a in history] == ["crashed"]
    assert keeper.recover_lost() == 0


def test_a_job_claimed_again_before_its_first_worker_left_is_still_held(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retried at once, a job can be claimed by a second worker while the first is still on
    # its way out of run(): the first must not let go of the second's claim.
    runner = Runner(services, lambda: "test:1")
    job = services.jobs.submit("fails-then-waits", {})
    second = threading.Thread(target=runner.run, args=(job.id,))
    enqueue = services.queue.enqueue

    def retry_taken_at_once(job_id: str, **options: Any) -> None:
        enqueue(job_id, **options)
        second.start()  # another worker takes the retry before the first worker is done
        assert SECOND_RUN.wait(10)

    monkeypatch.setattr(services.queue, "enqueue", retry_taken_at_once)
    runner.run(job.id)
    try:
        assert runner.holds(job.id)  # the second worker's claim
        keeper = Housekeeper(services, me=lambda: "test:1", holds=runner.holds)
        assert keeper.recover_lost() == 0 and keeper.recover_lost() == 0
    finally:
        LET_GO.set()
        second.join(10)
    assert services.store.get(job.id).status is Status.COMPLETE


def test_a_progress_write_lets_hueys_own_timeout_through(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under -k process Huey's SIGALRM raises TaskTimeout wherever the handler is, a progress
    # write included; taken for a store error there, the job would have no hard limit left.
    job = services.jobs.submit("list", {})
    claimed = services.store.claim(job.id, "test:1")
    assert claimed is not None

    def alarm(*args: Any) -> bool:
        raise TaskTimeout("timeout (1s)")

    monkeypatch.setattr(services.store, "report_progress", alarm)
    with pytest.raises(TaskTimeout):
        JobContext(claimed, services).progress(1, 2)


def test_a_job_left_to_another_consumer_is_not_counted_or_run_if_cancelled(
    services: Services,
) -> None:
    runner = Runner(services, lambda: "test:1")
    elsewhere = services.store.create("elsewhere", {})  # a type this consumer lacks
    services.store.heartbeat("other:2:x", "other", 2, ["elsewhere"])  # a live one has it
    queued = services.queue.pending_count()
    runner.run(elsewhere.id)
    left = services.store.get(elsewhere.id)
    assert left.status is Status.PENDING and left.attempts == 0 and left.consumer is None
    assert services.queue.pending_count() == queued + 1  # offered again, a second later
    # A cancel asked between the claim and its undoing is kept: it ends cancelled.
    assert services.store.claim(elsewhere.id, "test:1") is not None
    services.store.cancel(elsewhere.id)
    assert services.store.unclaim(elsewhere.id, "test:1") is Status.CANCELLED
    # With no live consumer that has the type, the job fails at once.
    lonely = services.store.create("nowhere", {})
    runner.run(lonely.id)
    assert services.store.get(lonely.id).status is Status.FAILED


def test_a_job_its_runner_holds_is_never_taken_for_lost(services: Services) -> None:
    runner = holding(services)
    job = services.jobs.submit("list", {})
    runner.run(job.id)  # its ending is held, not yet written: running in the store
    keeper = Housekeeper(services, me=lambda: "test:1", holds=runner.holds)
    assert keeper.recover_lost() == 0 and keeper.recover_lost() == 0
    assert services.store.get(job.id).status is Status.RUNNING


def test_hueys_own_timeout_ends_the_job_as_timeout(services: Services) -> None:
    job = run_job(services, "huey-timeout")
    assert job.status is Status.TIMEOUT and job.error == "timed out after 1s"


def test_a_handler_that_checks_stops_at_its_deadline(services: Services) -> None:
    started = time.monotonic()
    job = run_job(services, "spin")
    assert job.status is Status.TIMEOUT and job.error == "timed out after 0.2s"
    assert 0.2 <= time.monotonic() - started < 1


def test_a_handler_can_queue_more_work(services: Services) -> None:
    job = run_job(services, "follow")
    assert job.status is Status.COMPLETE
    follow_up = services.store.get(job.result["follow_up"])
    assert follow_up.type == "noop" and follow_up.status is Status.PENDING


def test_retries_wait_the_jobs_delay_with_backoff(services: Services) -> None:
    job = services.jobs.submit("flaky", {}, retry_delay=5)
    runner = Runner(services, lambda: "test:1")
    waits = []
    for attempt in (1, 2):
        runner.run(job.id)
        after = services.store.get(job.id)
        assert after.status is Status.PENDING and after.attempts == attempt
        assert after.error == "ValueError"
        assert after.next_attempt_at is not None
        waits.append(after.next_attempt_at - after.updated_at)
    assert waits[0] == pytest.approx(timedelta(seconds=5), abs=timedelta(seconds=0.1))
    assert waits[1] == pytest.approx(timedelta(seconds=15), abs=timedelta(seconds=0.1))
    delayed = [t for t in services.queue.huey.pending() if t.eta is not None]
    assert len(delayed) == 2 and all(t.args == (job.id,) for t in delayed)
    runner.run(job.id)
    assert services.store.get(job.id).status is Status.FAILED


def test_a_retry_waits_at_most_the_longest_delay(services: Services) -> None:
    """30 days: a billion times that would overflow the retry's date in Huey's scheduler."""
    job = services.jobs.submit("backs-off-far", {})
    runner = Runner(services, lambda: "test:1")
    for attempt in (1, 2):
        runner.run(job.id)
        after = services.store.get(job.id)
        assert after.status is Status.PENDING and after.attempts == attempt
        assert after.next_attempt_at is not None
        wait = after.next_attempt_at - after.updated_at
        assert wait == pytest.approx(timedelta(seconds=LONGEST), abs=timedelta(seconds=1))


def test_a_payload_invalid_by_run_time_fails_with_the_field(services: Services) -> None:
    job = services.jobs.submit("positive", {"n": 1})
    with services.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE jobs SET payload = '{\"n\": -1}' WHERE id = ?", (job.id,))
    Runner(services, lambda: "test:1").run(job.id)
    failed = services.store.get(job.id)
    assert failed.status is Status.FAILED
    assert failed.error == "invalid payload: n: Must be greater than or equal to 1."


def test_a_job_no_longer_pending_is_skipped(services: Services) -> None:
    job = services.jobs.submit("list", {})
    services.store.cancel(job.id)
    Runner(services, lambda: "test:1").run(job.id)
    assert services.store.get(job.id).attempts == 0


def test_attempts_cut_short_by_a_shutdown_do_not_use_up_retries(services: Services) -> None:
    job = services.jobs.submit("flaky", {}, retries=1, retry_delay=5)
    services.store.claim(job.id, "old:1:x")
    services.store.release(job.id, "old:1:x", "shutdown", "the consumer shut down")
    runner = Runner(services, lambda: "test:1")
    runner.run(job.id)  # attempt 2, the first failure: retried, after the first delay
    after = services.store.get(job.id)
    assert after.status is Status.PENDING and after.attempts == 2
    assert after.next_attempt_at - after.updated_at == pytest.approx(
        timedelta(seconds=5), abs=timedelta(seconds=0.1)
    )
    runner.run(job.id)
    assert services.store.get(job.id).status is Status.FAILED
    outcomes = [a["outcome"] for a in services.store.detail(job.id)[1]]
    assert outcomes == ["shutdown", "failed", "failed"]


# A consumer's runner holds each ending for the transaction of the next claim.


def holding(services: Services, stopping: bool = False) -> Runner:
    return Runner(services, lambda: "test:1", lambda: stopping, hold_endings=True)


def status(services: Services, job_id: str) -> Status:
    return services.store.get(job_id).status


def test_a_held_ending_is_written_with_the_next_claim(services: Services) -> None:
    first, second = (services.jobs.submit("list", {}).id for _ in range(2))
    runner = holding(services)
    runner.run(first)
    assert status(services, first) is Status.RUNNING  # its ending is held
    runner.run(second)
    assert status(services, first) is Status.FAILED  # "list" returns a list: a failure
    assert (
        services.store.get(first).error
        == "TypeError: handler returned list, expected a dict or None"
    )
    assert status(services, second) is Status.RUNNING
    runner.settle()
    assert status(services, second) is Status.FAILED


def test_a_held_ending_is_written_even_if_the_next_job_is_not_pending(services: Services) -> None:
    done = services.jobs.submit("follow", {}).id
    gone = services.jobs.submit("list", {}).id
    services.store.cancel(gone)
    runner = holding(services)
    runner.run(done)
    runner.run(gone)
    assert status(services, done) is Status.COMPLETE
    assert status(services, gone) is Status.CANCELLED


def test_settle_writes_what_every_worker_holds(services: Services) -> None:
    ids = [services.jobs.submit("meet", {}).id for _ in range(MEETING.parties)]
    runner = holding(services)
    MEETING.reset()
    workers = [threading.Thread(target=runner.run, args=(job_id,)) for job_id in ids]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    # All were claimed before any ended, so no claim carried an ending.
    assert {status(services, job_id) for job_id in ids} == {Status.RUNNING}
    runner.settle()
    assert {status(services, job_id) for job_id in ids} == {Status.COMPLETE}


def test_an_ending_written_at_once_and_refused_is_held_for_the_next_claim(
    services: Services,
) -> None:
    """As on a Redis or PostgreSQL queue, where endings are not held to begin with."""
    first, second = (services.jobs.submit("follow", {}).id for _ in range(2))
    runner = Runner(services, lambda: "test:1")
    refuse = f"""CREATE TRIGGER refuse BEFORE UPDATE OF status ON jobs
                 WHEN OLD.id = '{first}' AND NEW.status = 'complete'
                 BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"""
    with services.engine.begin() as conn:
        conn.exec_driver_sql(refuse)
    runner.run(first)
    assert status(services, first) is Status.RUNNING  # its ending refused, and held
    with services.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
    runner.run(second)
    assert status(services, first) is Status.COMPLETE  # carried by the next claim
    assert status(services, second) is Status.COMPLETE


def test_a_stopping_consumer_writes_endings_at_once(services: Services) -> None:
    job = services.jobs.submit("list", {}).id
    holding(services, stopping=True).run(job)
    assert status(services, job) is Status.FAILED


def test_an_ending_the_database_refuses_is_held_and_the_next_job_runs(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = (services.jobs.submit("follow", {}).id for _ in range(3))
    runner = holding(services)
    runner.run(first)
    refuse = f"""CREATE TRIGGER refuse BEFORE UPDATE ON jobs WHEN OLD.id = '{first}'
                 BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"""
    with services.engine.begin() as conn:
        conn.exec_driver_sql(refuse)
    runner.run(second)  # its claim carried the first's ending, refused: claimed alone
    assert f"could not record how job {first} ended" in caplog.text
    assert status(services, first) is Status.RUNNING
    assert status(services, second) is Status.RUNNING  # ran, its ending held
    runner.settle()  # writes the second's, and keeps the first's, refused again
    assert status(services, second) is Status.COMPLETE
    assert status(services, first) is Status.RUNNING
    with services.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
    runner.run(third)
    assert status(services, first) is Status.COMPLETE
