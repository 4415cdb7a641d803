"""Fault injection with real processes and real signals: seeded, repeatable, fast enough for CI.

Consumers are killed with SIGKILL at random moments while they run many jobs and a scan;
the web process is killed while clients submit. Whatever dies when, every job the store
knows reaches a terminal state, no file is in the library twice, and the counts add up.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from conftest import ConsumerProcess, ServiceProcess, free_port, health, procfile, wait_until
from media import make_corpus, make_slow_tree

SEED = 20261129
TERMINAL = {"complete", "failed", "timeout", "cancelled"}


def all_jobs(client: FlaskClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = client.get(f"/api/v1/jobs?limit=1000&offset={len(found)}").json
        found += page["jobs"]
        if len(found) >= page["total"]:
            return found


def test_consumers_killed_at_random_lose_no_job_and_duplicate_no_video(
    client: FlaskClient,
    start_consumer: Callable[..., ConsumerProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(SEED)
    media = tmp_path / "media"
    make_corpus(media / "plain", 200)
    make_slow_tree(media / "slow", 30)
    files = 230

    ids = [
        client.post(
            "/api/v1/jobs",
            json={"type": "sleep", "payload": {"seconds": rng.uniform(0.2, 1.0), "steps": 10}},
        ).json["job_id"]
        for _ in range(40)
    ]
    ids += [
        client.post("/api/v1/jobs", json={"type": "echo", "payload": {"text": str(n)}}).json[
            "job_id"
        ]
        for n in range(10)
    ]
    scan_id = client.post("/api/v1/videos/scan", json={"path": str(media)}).json["job_id"]

    kills = 6
    for _ in range(kills):
        consumer = start_consumer()
        time.sleep(rng.uniform(0.3, 1.5))
        consumer.stop(signal.SIGKILL)
    start_consumer()
    wait_until(
        lambda: all(j["status"] in TERMINAL for j in all_jobs(client)),
        timeout=90,
        what="every job to finish",
    )

    jobs = all_jobs(client)
    details = [client.get(f"/api/v1/jobs/{j['job_id']}").json for j in jobs]
    recoveries = sum(a["outcome"] == "crashed" for d in details for a in d["history"])
    lost = [j["job_id"] for j in jobs if j["status"] not in TERMINAL]
    duplicate_jobs = [i for i, n in Counter(j["job_id"] for j in jobs).items() if n > 1]
    videos = client.get("/api/v1/videos?limit=1000").json
    duplicate_videos = [p for p, n in Counter(v["path"] for v in videos["videos"]).items() if n > 1]
    crashed_out = [d for d in details if d["status"] == "failed"]
    with capsys.disabled():
        print(
            f"\nfault injection (seed {SEED}): kills={kills} jobs={len(jobs)} "
            f"recoveries={recoveries} failed_after_3_crashes={len(crashed_out)} "
            f"jobs_lost={len(lost)} duplicate_jobs={len(duplicate_jobs)} "
            f"duplicate_videos={len(duplicate_videos)}"
        )
    assert len(jobs) == len(ids) + 1 and not lost and not duplicate_jobs
    assert not duplicate_videos and videos["total"] == files
    assert recoveries > 0  # the kills did land in the middle of work
    for job in crashed_out:  # the only way a job may fail here: killed three times
        assert [a["outcome"] for a in job["history"]] == ["crashed"] * 3
    for job in details:
        if job["status"] == "complete" and job["type"] == "echo":
            assert job["result"]["echo"] is not None
    scan = next(d for d in details if d["job_id"] == scan_id)
    if scan["status"] == "complete":
        r = scan["result"]
        assert r["scanned"] == files and r["error_count"] == 0
        assert r["new"] + r["updated"] + r["unchanged"] + r["moved"] == files


def test_a_web_process_killed_mid_submit_loses_no_job_it_answered_for(
    env: dict[str, str],
    client: FlaskClient,
    start_service: Callable[..., ServiceProcess],
    start_consumer: Callable[..., ConsumerProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web_env = {**env, "PORT": str(port)}
    web = start_service(procfile()["web"], web_env)

    wait_until(lambda: health(base) is not None, timeout=30, what="the web process")
    told: list[str] = []
    errors = Counter[str]()
    stop = threading.Event()

    def client_loop(n: int) -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                r = session.post(
                    f"{base}/api/v1/jobs",
                    json={"type": "echo", "payload": {"text": str(n)}},
                    timeout=5,
                )
            except requests.RequestException as exc:
                errors[type(exc).__name__] += 1
                if stop.wait(0.05):
                    return
                continue
            assert r.status_code == 202, r.text
            told.append(r.json()["job_id"])

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(told) >= 50, timeout=30, what="submissions")
    web.stop(signal.SIGKILL)  # the whole process group: master and workers
    stop.set()
    for t in threads:
        t.join()

    start_service(procfile()["web"], web_env)
    start_consumer()
    wait_until(
        lambda: all(j["status"] in TERMINAL for j in all_jobs(client)),
        timeout=60,
        what="every job to finish",
    )
    jobs = {j["job_id"]: j for j in all_jobs(client)}
    lost = [i for i in told if i not in jobs]
    with capsys.disabled():
        print(
            f"\nweb killed mid-submit: answered={len(told)} in_store={len(jobs)} "
            f"client_errors={dict(errors)} lost={len(lost)} "
            f"complete={sum(j['status'] == 'complete' for j in jobs.values())}"
        )
    assert not lost
    assert all(j["status"] == "complete" for j in jobs.values())
