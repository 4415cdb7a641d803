"""Jobs survive consumers that die, stop or restart: real processes, real signals."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from scanner.jobs.states import Status
from scanner.schema import job_attempts
from scanner.services import Services

from conftest import ConsumerProcess, get_job, submit_job, wait_until
from media import make_slow_tree

JOBS = "/api/v1/jobs"


def wait_running(client: FlaskClient, job_id: str, attempt: int = 1) -> dict[str, Any]:
    def running() -> dict[str, Any] | None:
        job = get_job(client, job_id)
        ok = job["status"] == "running" and job["attempts"] == attempt and job["progress"]
        return job if ok else None

    job: dict[str, Any] = wait_until(running, timeout=20, what=f"attempt {attempt} to run")
    return job


def wait_done(client: FlaskClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    """The finished job as ``GET /jobs/{id}`` shows it: these tests read its ``history``,
    which the answer of ``/wait`` (conftest's ``wait_job``) leaves out."""
    return wait_until(
        lambda: (j := get_job(client, job_id))["status"] not in ("pending", "running") and j,
        timeout=timeout,
        what=f"job {job_id} to finish",
    )


def outcomes(job: dict[str, Any]) -> list[str | None]:
    return [attempt["outcome"] for attempt in job["history"]]


def test_kill_9_mid_job_then_restart_runs_it_again(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    first = start_consumer()
    job_id = submit_job(client, "sleep", {"seconds": 2, "steps": 20})
    wait_running(client, job_id)
    first.stop(signal.SIGKILL)
    second = start_consumer()
    job = wait_done(client, job_id)
    assert job["status"] == "complete" and job["attempts"] == 2
    assert outcomes(job) == ["crashed", "complete"]
    crashed, done = job["history"]
    assert crashed["consumer"].split(":")[1] == str(first.pid)
    assert done["consumer"].split(":")[1] == str(second.pid)
    assert crashed["error"] == f"its consumer {crashed['consumer']} died while running it"


def test_a_live_consumer_recovers_the_jobs_of_one_that_died(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    consumers = [start_consumer(workers=1), start_consumer(workers=1)]
    job_id = submit_job(client, "sleep", {"seconds": 2, "steps": 20})
    running = wait_running(client, job_id)
    victim = next(c for c in consumers if running["consumer"].split(":")[1] == str(c.pid))
    survivor = next(c for c in consumers if c is not victim)
    victim.stop(signal.SIGKILL)
    job = wait_done(client, job_id)
    assert job["status"] == "complete" and outcomes(job) == ["crashed", "complete"]
    assert job["history"][1]["consumer"].split(":")[1] == str(survivor.pid)


def test_a_job_that_keeps_killing_its_consumer_ends_failed(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    job_id = submit_job(client, "sleep", {"seconds": 5, "steps": 50})
    for attempt in (1, 2, 3):
        consumer = start_consumer()
        wait_running(client, job_id, attempt)
        consumer.stop(signal.SIGKILL)
    start_consumer()
    job = wait_done(client, job_id)
    assert job["status"] == "failed" and job["attempts"] == 3
    assert outcomes(job) == ["crashed", "crashed", "crashed"]
    assert job["error"].endswith("died while running it, 3 times; it is not run again")


def test_sigint_hands_running_jobs_back_and_they_run_on_the_next_start(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    consumer = start_consumer()
    job_id = submit_job(client, "sleep", {"seconds": 2, "steps": 40})
    wait_running(client, job_id)
    assert consumer.stop(signal.SIGINT, timeout=5) == 0  # it does not wait for the job
    job = get_job(client, job_id)
    assert job["status"] == "pending" and outcomes(job) == ["shutdown"]
    assert job["history"][0]["error"] == "the consumer shut down while it ran"
    start_consumer()
    job = wait_done(client, job_id)
    assert job["status"] == "complete" and outcomes(job) == ["shutdown", "complete"]


def test_sigterm_hands_back_even_a_handler_that_never_checks(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    consumer = start_consumer()
    job_id = submit_job(client, "sleep", {"seconds": 1.5, "steps": 15, "check": False})
    wait_until(lambda: get_job(client, job_id)["status"] == "running", what="the job to run")
    consumer.stop(signal.SIGTERM, timeout=5)
    job = get_job(client, job_id)
    assert job["status"] == "pending" and outcomes(job) == ["shutdown"]
    assert job["history"][0]["error"] == "the consumer was stopped"
    start_consumer()
    assert wait_done(client, job_id)["status"] == "complete"


def test_a_job_that_lost_its_message_is_queued_again(
    client: FlaskClient, services: Services, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    # As if the web process died between writing the row and queueing the message.
    job = services.store.create("echo", {"text": "orphan"})
    assert services.queue.pending_count() == 0
    start_consumer()
    done = wait_done(client, job.id, timeout=20)
    assert done["status"] == "complete" and done["result"]["echo"] == "orphan"


def test_kill_9_mid_scan_leaves_each_file_in_the_library_once(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess], tmp_path: Path
) -> None:
    root = make_slow_tree(tmp_path / "slow", 41)
    consumer = start_consumer()
    response = client.post("/api/v1/videos/scan", json={"path": str(root)})
    job_id = response.json["job_id"]
    wait_until(
        lambda: (get_job(client, job_id)["progress"] or 0) > 0.1, timeout=20, what="progress"
    )
    consumer.stop(signal.SIGKILL)
    start_consumer()
    job = wait_done(client, job_id, timeout=60)
    assert job["status"] == "complete" and outcomes(job) == ["crashed", "complete"]
    assert job["result"]["scanned"] == 41
    videos = client.get("/api/v1/videos?limit=100").json
    assert videos["total"] == 41
    assert len({v["path"] for v in videos["videos"]}) == 41


def test_a_second_scan_of_an_overlapping_tree_is_refused_naming_the_first(
    client: FlaskClient, tmp_path: Path
) -> None:
    (tmp_path / "media" / "films").mkdir(parents=True)
    first = client.post("/api/v1/videos/scan", json={"path": str(tmp_path / "media")})
    assert first.status_code == 202
    for path in (tmp_path / "media", tmp_path / "media" / "films", tmp_path):
        again = client.post("/api/v1/videos/scan", json={"path": str(path)})
        assert again.status_code == 409
        assert f"a scan job ({first.json['job_id']}) is already pending" in again.json["message"]
    through_jobs = client.post(JOBS, json={"type": "scan", "payload": {"path": str(tmp_path)}})
    assert through_jobs.status_code == 409  # the same rule, whichever route submits it
    assert through_jobs.json["errors"]["json"]["job_id"] == [first.json["job_id"]]
    (tmp_path / "other").mkdir()
    assert (
        client.post("/api/v1/videos/scan", json={"path": str(tmp_path / "other")}).status_code
        == 202
    )
    client.post(f"{JOBS}/{first.json['job_id']}/cancel")
    assert (
        client.post("/api/v1/videos/scan", json={"path": str(tmp_path / "media")}).status_code
        == 202
    )


def test_a_consumer_stopped_mid_stream_leaves_no_finished_job_running(
    services: Services, start_consumer: Callable[..., ConsumerProcess]
) -> None:
    """A consumer holds each ending for its worker's next claim; a graceful stop in the middle
    of a stream of short jobs writes them all, so none is left running or later recovered."""
    ids = [services.jobs.submit("noop", {}).id for _ in range(3000)]

    def count(status: Status) -> int:
        return services.store.list_jobs(status=[status], limit=1)[1]

    consumer = start_consumer()
    wait_until(lambda: count(Status.COMPLETE) >= 300, what="300 jobs to complete")
    assert consumer.stop(signal.SIGINT) == 0
    assert count(Status.RUNNING) == 0
    assert count(Status.PENDING) > 0, "the consumer finished every job before it was stopped"
    start_consumer()
    wait_until(lambda: count(Status.COMPLETE) == len(ids), what="every job to complete")
    with services.engine.connect() as conn:
        crashed = job_attempts.select().where(job_attempts.c.outcome == "crashed")
        assert conn.execute(crashed).all() == []
