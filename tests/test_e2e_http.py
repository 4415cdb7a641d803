"""The service as operators run it: the Procfile's processes, over real HTTP."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable

import requests

from conftest import ServiceProcess, free_port, health, procfile, wait_until

JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


def test_make_run_serves_and_runs_jobs(
    env: dict[str, str], start_service: Callable[..., ServiceProcess]
) -> None:
    port = free_port()
    start_service("honcho start", {**env, "PORT": str(port)})
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: health(base), timeout=30, what="the web process")
    report = wait_until(
        lambda: (h := health(base)) and h["status"] == "ok" and h,
        timeout=30,
        what="a consumer heartbeat",
    )
    assert report["consumers"]["alive"] == 1
    response = requests.post(
        f"{base}/api/v1/jobs", json={"type": "echo", "payload": {"text": "over http"}}, timeout=5
    )
    assert response.status_code == 202
    job = requests.get(f"{base}{response.headers['Location']}/wait?timeout=15", timeout=20).json()
    assert job["status"] == "complete" and job["result"]["echo"] == "over http"
    html = requests.get(f"{base}/api/v1/jobs/nope", timeout=5)
    assert html.status_code == 404 and html.headers["Content-Type"] == "application/json"
    # A body sent in chunks (no Content-Length, as from a generator) is checked all the same.
    chunked = requests.post(
        f"{base}/api/v1/jobs", data=iter([b'{"type": "echo"}']), headers=TEXT, timeout=5
    )
    assert chunked.status_code == 415 and "JSON" in chunked.json()["message"]
    # An empty body in chunks is no body: the cancel is judged, not its body (409: finished).
    cancel = f"{base}{response.headers['Location']}/cancel"
    bodiless = requests.post(cancel, data=iter([]), timeout=5)
    assert bodiless.status_code == 409, bodiless.text
    big = json.dumps({"type": "echo", "payload": {"text": "x" * (1 << 20)}}).encode()
    too_big = requests.post(f"{base}/api/v1/jobs", data=iter([big]), headers=JSON, timeout=10)
    assert too_big.status_code == 413 and "1,048,576 bytes" in too_big.json()["message"]


def test_jobs_submitted_while_no_consumer_runs_survive_a_web_restart(
    env: dict[str, str], start_service: Callable[..., ServiceProcess]
) -> None:
    port = free_port()
    commands = procfile()
    web_env = {**env, "PORT": str(port)}
    base = f"http://127.0.0.1:{port}"
    web = start_service(commands["web"], web_env)
    wait_until(lambda: health(base), timeout=30, what="the web process")
    ids = []
    for n in range(50):
        response = requests.post(
            f"{base}/api/v1/jobs", json={"type": "echo", "payload": {"text": str(n)}}, timeout=5
        )
        assert response.status_code == 202
        ids.append(response.json()["job_id"])
    assert web.stop(signal.SIGTERM) == 0
    assert health(base) is None

    start_service(commands["web"], web_env)
    wait_until(lambda: health(base), timeout=30, what="the web process to come back")
    pending = requests.get(f"{base}/api/v1/jobs?status=pending&limit=100", timeout=5).json()
    assert pending["total"] == 50

    start_service(commands["worker"], env)
    wait_until(
        lambda: (
            requests.get(f"{base}/api/v1/jobs?status=complete", timeout=5).json()["total"] == 50
        ),
        timeout=60,
        what="all 50 jobs to complete",
    )
    for n, job_id in enumerate(ids):
        job = requests.get(f"{base}/api/v1/jobs/{job_id}", timeout=5).json()
        assert job["status"] == "complete" and job["result"]["echo"] == str(n)
