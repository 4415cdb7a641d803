"""Jobs driven over the API and run by a real huey_consumer process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from scanner.services import Services

from conftest import ConsumerProcess, get_job, submit_job, wait_job, wait_until

JOBS = "/api/v1/jobs"


def test_a_job_runs_to_complete(client: FlaskClient, consumer: ConsumerProcess) -> None:
    job = wait_job(client, submit_job(client, "echo", {"text": "hello"}))
    assert job["status"] == "complete"
    assert job["result"] == {"echo": "hello", "attempt": 1}
    assert job["attempts"] == 1 and job["progress"] == 1.0 and job["error"] is None
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert job["consumer"].split(":")[1] == str(consumer.pid)


def test_the_consumer_logs_one_line_a_job_naming_it(
    client: FlaskClient, consumer: ConsumerProcess
) -> None:
    job_id = submit_job(client, "echo", {"text": "hello"})
    wait_job(client, job_id)
    line = f"INFO:scanner.jobs.runner:job {job_id} (echo) complete in "
    wait_until(lambda: line in consumer.log(), what="the job's line in the consumer's log")
    consumer.stop()
    log = consumer.log()
    # Huey's own lines name its message id, which nothing else knows.
    assert "Executing" not in log and "executed in" not in log
    assert "INFO:huey.consumer:MainThread:All workers have stopped." in log  # its others stay


def test_a_verbose_consumer_keeps_huey_s_own_task_lines(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    consumer = start_consumer(options=["-v"])
    job_id = submit_job(client, "echo", {"text": "hello"})
    wait_job(client, job_id)
    wait_until(lambda: "executed in" in consumer.log(), what="Huey's line for the task")
    assert f"job {job_id} (echo) complete in " in consumer.log()


def test_a_failing_job_records_its_error(client: FlaskClient, consumer: ConsumerProcess) -> None:
    job = wait_job(client, submit_job(client, "fail", {"message": "disk on fire"}, retries=0))
    assert job["status"] == "failed"
    assert job["error"] == "DiagnosticFailure: disk on fire"
    assert job["attempts"] == 1 and job["result"] is None


def test_retries_go_back_to_pending_then_complete(
    client: FlaskClient, consumer: ConsumerProcess
) -> None:
    job_id = submit_job(client, "fail", {"until_attempt": 2}, retry_delay=1.0)
    waiting = wait_until(
        lambda: (j := get_job(client, job_id))["status"] == "pending" and j["attempts"] == 1 and j,
        what="the first attempt to fail",
    )
    assert waiting["next_attempt_at"] > waiting["updated_at"]
    assert waiting["error"] == "DiagnosticFailure: failed on purpose"
    job = wait_job(client, job_id)
    assert job["status"] == "complete" and job["attempts"] == 2
    assert job["result"] == {"succeeded_on_attempt": 2}
    assert job["error"] is None and job["next_attempt_at"] is None


def test_retries_run_out_and_the_job_fails(client: FlaskClient, consumer: ConsumerProcess) -> None:
    job = wait_job(client, submit_job(client, "fail", {}, retries=2, retry_delay=0.05))
    assert job["status"] == "failed" and job["attempts"] == 3


def test_a_job_past_its_timeout_ends_timeout(
    client: FlaskClient, consumer: ConsumerProcess
) -> None:
    job = wait_job(client, submit_job(client, "sleep", {"seconds": 30, "steps": 300}, timeout=0.3))
    assert job["status"] == "timeout"
    assert job["error"] == "timed out after 0.3s"
    assert 0 < job["progress"] < 0.1


def test_cancel_running_stops_it_promptly(client: FlaskClient, consumer: ConsumerProcess) -> None:
    job_id = submit_job(client, "sleep", {"seconds": 30, "steps": 300})
    running = wait_until(
        lambda: (j := get_job(client, job_id))["status"] == "running" and j["progress"] and j,
        what="progress to show",
    )
    assert 0 < running["progress"] < 1
    response = client.post(f"{JOBS}/{job_id}/cancel")
    assert response.status_code == 202
    job = wait_job(client, job_id, timeout=2)
    assert job["status"] == "cancelled"
    assert job["progress"] < 0.2
    assert client.post(f"{JOBS}/{job_id}/cancel").status_code == 409


def test_cancel_pending_means_it_never_runs(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    start_consumer(workers=1)
    blocker = submit_job(client, "sleep", {"seconds": 30, "steps": 300})
    wait_until(lambda: get_job(client, blocker)["status"] == "running", what="the blocker to run")
    queued = submit_job(client, "echo", {"text": "never"})
    assert client.post(f"{JOBS}/{queued}/cancel").json["status"] == "cancelled"
    client.post(f"{JOBS}/{blocker}/cancel")
    assert wait_job(client, blocker)["status"] == "cancelled"
    wait_until(lambda: client.get("/api/v1/health").json["queue"]["waiting"] == 0)
    job = get_job(client, queued)
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0 and job["started_at"] is None


def test_higher_priority_runs_first(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    low = [submit_job(client, "sleep", {"seconds": 0.02}, priority=0) for _ in range(5)]
    high = submit_job(client, "echo", {"text": "urgent"}, priority=10)
    start_consumer(workers=1)
    jobs = [wait_job(client, job_id) for job_id in [*low, high]]
    first = min(jobs, key=lambda j: j["started_at"])
    assert first["job_id"] == high


def test_a_consumer_without_the_plugin_fails_the_job_clearly(
    client: FlaskClient, env: dict[str, str], start_consumer: Callable[..., ConsumerProcess]
) -> None:
    env["SCANNER_DISABLED_PLUGINS"] = "diagnostics"
    start_consumer()
    job = wait_job(client, submit_job(client, "echo", {"text": "x"}))
    assert job["status"] == "failed"
    assert "no plugin in this consumer provides the job type 'echo'" in job["error"]
    health = wait_until(
        lambda: (h := client.get("/api/v1/health").json)["consumers"]["alive"] and h
    )
    assert health["status"] == "degraded"
    assert "echo" in health["consumers"]["consumers"][0]["missing_job_types"]


def test_a_test_consumer_reads_the_test_s_settings_not_the_shell_s(
    client: FlaskClient,
    start_consumer: Callable[..., ConsumerProcess],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # As in a shell where the real service's settings are exported.
    monkeypatch.setenv("SCANNER_DATABASE_URL", f"sqlite:///{tmp_path}/production.db")
    monkeypatch.setenv("SCANNER_QUEUE_URL", f"sqlite:///{tmp_path}/production-queue.db")
    start_consumer()
    assert wait_job(client, submit_job(client, "echo", {"text": "x"}))["status"] == "complete"
    assert not (tmp_path / "production.db").exists()


def test_a_job_a_consumer_cannot_run_is_left_to_one_that_can(
    client: FlaskClient,
    env: dict[str, str],
    services: Services,
    start_consumer: Callable[..., ConsumerProcess],
) -> None:
    # A rolling install: the plugin is on one consumer and not yet on the other.
    env["SCANNER_DISABLED_PLUGINS"] = "diagnostics"
    lacking = start_consumer(workers=2)
    del env["SCANNER_DISABLED_PLUGINS"]
    # The other consumer, still starting, has already said it runs echo (its heartbeat is
    # kept fresh here until its own comes): the lacking one must leave the jobs to it.
    coming = threading.Event()

    def beat() -> None:
        while not coming.is_set():
            services.store.heartbeat("coming:1:x", "coming", 1, ["echo"])
            time.sleep(0.05)

    beating = threading.Thread(target=beat)
    beating.start()
    try:
        ids = [submit_job(client, "echo", {"text": str(n)}) for n in range(5)]
        wait_until(lambda: "is left to a consumer that has its type" in lacking.log())
        # None failed: each is pending (or, for an instant, claimed before it is left).
        assert {get_job(client, job_id)["status"] for job_id in ids} <= {"pending", "running"}
        start_consumer(workers=2)
    finally:
        coming.set()
        beating.join()
    for n, job_id in enumerate(ids):
        job = wait_job(client, job_id, timeout=60)
        assert job["status"] == "complete" and job["result"]["echo"] == str(n)
        assert job["attempts"] == 1  # one left to another consumer was no attempt


def test_health_sees_the_consumer_heartbeat(client: FlaskClient, consumer: ConsumerProcess) -> None:
    health = wait_until(
        lambda: (h := client.get("/api/v1/health").json)["status"] == "ok" and h,
        what="a heartbeat",
    )
    assert health["consumers"]["alive"] == 1
    assert health["consumers"]["consumers"][0]["id"].split(":")[1] == str(consumer.pid)
    assert health["consumers"]["consumers"][0]["seconds_since_heartbeat"] < 2
