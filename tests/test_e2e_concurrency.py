"""Load: 16 HTTP clients against the Procfile's web and worker sharing one SQLite data directory.

The requirement: with the web process under load (at least 16 concurrent clients submitting
and polling) while a consumer with 4 workers runs jobs that report progress, there are no
"database is locked" errors, no lost or duplicated jobs and no duplicate videos. Real
processes, real HTTP; the figures are printed to the terminal (and repeated in any failure).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ServiceProcess, free_port, health, procfile, wait_until
from media import make_corpus

CLIENTS = 16
JOBS_PER_CLIENT = 25
POLLS_PER_JOB = 3
CORPUS_FILES = 300
LOCKED = "database is locked"

# The answers each kind of request may get; anything else (and every 5xx) is a failure.
# A scan may be refused with 409 while an overlapping scan is pending or running.
EXPECTED = {
    "submit": {202},
    "poll": {200},
    "list": {200},
    "scan": {202, 409},
    "final scan": {202},
    "wait": {200},
    "page": {200},
}


@dataclass
class Recorder:
    """Every HTTP request the test makes: its answer and how long it took."""

    statuses: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self, http: requests.Session, kind: str, method: str, url: str, **kwargs: Any
    ) -> requests.Response | None:
        started = time.perf_counter()
        try:
            response = http.request(method, url, timeout=30, **kwargs)
        except requests.RequestException as exc:
            with self.lock:
                self.statuses[kind, type(exc).__name__] += 1
                self.unexpected.append(f"{method} {url}: {exc!r}")
            return None
        took = time.perf_counter() - started
        with self.lock:
            self.statuses[kind, response.status_code] += 1
            self.latencies[kind].append(took)
            if response.status_code not in EXPECTED[kind] or LOCKED in response.text:
                self.unexpected.append(
                    f"{method} {url}: {response.status_code} {response.text[:300]}"
                )
        return response

    def count(self, kinds: tuple[str, ...] = tuple(EXPECTED)) -> int:
        return sum(n for (kind, _), n in self.statuses.items() if kind in kinds)

    def server_errors(self) -> int:
        return sum(n for (_, s), n in self.statuses.items() if isinstance(s, int) and s >= 500)

    def percentile(self, kind: str, q: float) -> float:
        values = sorted(self.latencies[kind])
        return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else 0.0


def job_body(rng: random.Random, client: int, n: int) -> dict[str, Any]:
    """Mostly short ``sleep`` jobs with many steps (progress after each), one in five ``echo``."""
    if n % 5 == 4:
        return {"type": "echo", "payload": {"text": f"client {client} job {n}"}}
    seconds = round(rng.uniform(0.03, 0.12), 3)
    return {"type": "sleep", "payload": {"seconds": seconds, "steps": rng.randint(20, 50)}}


def run_client(client: int, base: str, rec: Recorder) -> dict[str, dict[str, Any]]:
    """Submit JOBS_PER_CLIENT jobs, polling each a few times; the accepted ones, by id."""
    rng = random.Random(client)
    accepted: dict[str, dict[str, Any]] = {}
    with requests.Session() as http:
        for n in range(JOBS_PER_CLIENT):
            body = job_body(rng, client, n)
            response = rec.call(http, "submit", "POST", f"{base}/api/v1/jobs", json=body)
            if response is None or response.status_code != 202:
                continue
            job_id = response.json()["job_id"]
            accepted[job_id] = body
            for _ in range(POLLS_PER_JOB):
                rec.call(http, "poll", "GET", f"{base}/api/v1/jobs/{job_id}")
            if n % 5 == 0:
                params = {"status": "running,pending", "limit": 20}
                rec.call(http, "list", "GET", f"{base}/api/v1/jobs", params=params)
    return accepted


def submit_scans(base: str, rec: Recorder, media: Path, subdir: Path) -> dict[str, Any]:
    """Scans of overlapping trees while the clients run; the accepted ones, by id.

    A scan that overlaps one pending or running is refused with 409. Every scan here overlaps
    every other, so no two may ever run at once. The check runs in the transaction of the
    insert, and the first six race it (four ahead of the queue, by ``POST /jobs`` with a
    priority, so that the next free workers would take together any it let through); two more
    follow in turn.
    """
    accepted: dict[str, dict[str, Any]] = {}
    start = threading.Barrier(6)

    def scan(root: Path, *, priority: int | None = None, together: bool = False) -> None:
        body: dict[str, Any] = {"path": str(root)}
        url, job = "videos/scan", {"type": "scan", "payload": body}
        if priority is not None:
            url = "jobs"
            job = body = {**job, "priority": priority}
        with requests.Session() as http:
            if together:
                start.wait(timeout=10)
            response = rec.call(http, "scan", "POST", f"{base}/api/v1/{url}", json=body)
        if response is not None and response.status_code == 202:
            accepted[response.json()["job_id"]] = job

    time.sleep(0.3)  # let the clients get going first
    burst = [
        threading.Thread(target=scan, args=(root,), kwargs={"priority": p, "together": True})
        for root in (media, subdir)
        for p in (100, 100, None)
    ]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join()
    time.sleep(0.5)
    scan(subdir)
    scan(media)
    return accepted


def overlapping_runs(jobs: list[dict[str, Any]]) -> int:
    """How many pairs of these jobs were running at the same moment."""
    spans = sorted((stamp(j["started_at"]), stamp(j["finished_at"])) for j in jobs)
    return sum(1 for i, (_, end) in enumerate(spans) for start, _ in spans[i + 1 :] if start < end)


def wait_for(base: str, rec: Recorder, job_id: str, deadline: float) -> None:
    with requests.Session() as http:
        while time.monotonic() < deadline:
            url = f"{base}/api/v1/jobs/{job_id}/wait"
            response = rec.call(http, "wait", "GET", url, params={"timeout": 10})
            if response is not None and response.status_code == 200:
                return


def pages(base: str, rec: Recorder, what: str, limit: int) -> Iterator[dict[str, Any]]:
    """Every item of a paged listing (``jobs`` or ``videos``) with the totals it reported."""
    offset, total = 0, None
    with requests.Session() as http:
        while total is None or offset < total:
            url = f"{base}/api/v1/{what}"
            response = rec.call(http, "page", "GET", url, params={"limit": limit, "offset": offset})
            assert response is not None and response.status_code == 200, rec.unexpected[-1:]
            page = response.json()
            total = page["total"]
            if not page[what]:
                break
            for item in page[what]:
                yield {**item, "_total": total}
            offset += len(page[what])


def health_ok(base: str) -> bool:
    return (health(base) or {}).get("status") == "ok"


def lines_with(text: str, services: list[ServiceProcess]) -> int:
    found = 0
    for service in services:
        log = service.log_path.read_text(errors="replace") if service.log_path.exists() else ""
        found += sum(text.lower() in line.lower() for line in log.splitlines())
    return found


def expected_result(body: dict[str, Any]) -> dict[str, Any] | None:
    """What a job of ours returns (None: not checked here)."""
    if body["type"] == "echo":
        return {"echo": body["payload"]["text"], "attempt": 1}
    if body["type"] == "sleep":
        return {"slept": body["payload"]["seconds"]}
    return None


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_sixteen_clients_and_four_workers_lose_nothing_and_never_lock(
    env: dict[str, str],
    tmp_path: Path,
    start_service: Callable[..., ServiceProcess],
    capsys: pytest.CaptureFixture[str],
) -> None:
    began = time.monotonic()
    media = tmp_path / "media"
    corpus = make_corpus(media, CORPUS_FILES)
    subdir = corpus[150].parent  # g000/d001: 100 of the files, inside the root

    port = free_port()
    commands = procfile()
    base = f"http://127.0.0.1:{port}"
    web = start_service(commands["web"], {**env, "PORT": str(port)})
    worker = start_service(commands["worker"], env)
    wait_until(lambda: health_ok(base), timeout=30, what="health 'ok' (web and a live consumer)")

    # 1. The load: CLIENTS threads submitting and polling, scans arriving meanwhile.
    rec = Recorder()
    load_started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        scans = pool.submit(submit_scans, base, rec, media, subdir)
        clients = [pool.submit(run_client, n, base, rec) for n in range(CLIENTS)]
        accepted = {job_id: body for c in clients for job_id, body in c.result().items()}
        load_seconds = time.monotonic() - load_started
        scan_jobs = scans.result()
    load_requests = rec.count(("submit", "poll", "list", "scan"))
    accepted.update(scan_jobs)

    # 2. Every accepted job finishes. Then, with no scan left, one more of the whole tree is
    # accepted (the library is complete whichever scans won above) and is a rescan.
    deadline = time.monotonic() + 30
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job_id: wait_for(base, rec, job_id, deadline), accepted))
    with requests.Session() as http:
        body = {"path": str(media)}
        final = rec.call(http, "final scan", "POST", f"{base}/api/v1/videos/scan", json=body)
    if final is not None and final.status_code == 202:
        accepted[final.json()["job_id"]] = {"type": "scan", "payload": body}
        wait_for(base, rec, final.json()["job_id"], deadline)

    # 3. The store holds each accepted job exactly once, and nothing else.
    listed = list(pages(base, rec, "jobs", limit=200))
    seen = Counter(job["job_id"] for job in listed)
    by_id = {job["job_id"]: job for job in listed}
    duplicate_jobs = sum(n - 1 for n in seen.values() if n > 1)
    lost_jobs = len(accepted.keys() - seen.keys())
    ghosts = [by_id[job_id] for job_id in seen.keys() - accepted.keys()]
    ghost_jobs = len(ghosts)
    store_total = listed[0]["_total"] if listed else 0
    not_complete = {
        job_id: (job["type"], job["status"], job.get("error"))
        for job_id, job in by_id.items()
        if job["status"] != "complete"
    }
    wrong_results = [
        job_id
        for job_id, body in accepted.items()
        if by_id.get(job_id, {}).get("status") == "complete"
        and expected_result(body) not in (None, by_id[job_id]["result"])
    ]
    scan_errors = sum(
        (job["result"] or {}).get("error_count", 0) for job in listed if job["type"] == "scan"
    )
    final_id = final.json().get("job_id") if final is not None and final.status_code == 202 else ""
    final_job = by_id.get(final_id, {})
    final_counts = tuple((final_job.get("result") or {}).get(k) for k in ("new", "unchanged"))
    ours = [j for j in listed if j["type"] in ("sleep", "echo")]
    finished = [stamp(j["finished_at"]) for j in ours if j["finished_at"]]
    created = [stamp(j["created_at"]) for j in ours]
    busy_seconds = (max(finished) - min(created)).total_seconds() if finished else 0.0

    # 4. The library holds each corpus file once.
    videos = list(pages(base, rec, "videos", limit=100))
    video_paths = Counter(v["path"] for v in videos)
    duplicate_videos = sum(n - 1 for n in video_paths.values() if n > 1)
    expected_paths = {os.path.realpath(p) for p in corpus}
    videos_total = videos[0]["_total"] if videos else 0

    # 5. Both stop cleanly, and their logs (shutdown included) are read in full. The web gets
    # SIGTERM, gunicorn's graceful stop: SIGINT sent to the whole process group (as the
    # fixture's teardown does) reaches each gthread worker twice, and a worker that takes the
    # second one inside its first ThreadPoolExecutor.shutdown deadlocks until it is killed.
    stopping = time.monotonic()
    exit_codes = (web.stop(signal.SIGTERM), worker.stop(signal.SIGINT))
    stop_seconds = time.monotonic() - stopping

    overlapping_scans = overlapping_runs(
        [j for j in listed if j["type"] == "scan" and j["started_at"] and j["finished_at"]]
    )
    answered_202 = sum(rec.statuses[kind, 202] for kind in ("submit", "scan", "final scan"))
    locked_in_logs = lines_with(LOCKED, [web, worker])
    tracebacks_in_logs = lines_with("Traceback", [web, worker])
    locked_in_bodies = sum(LOCKED in u for u in rec.unexpected)
    statuses = Counter({f"{kind} {status}": n for (kind, status), n in rec.statuses.items()})
    figures = {
        "clients": CLIENTS,
        "jobs submitted (202)": rec.statuses["submit", 202],
        "scans accepted / refused (409)": (
            rec.statuses["scan", 202],
            rec.statuses["scan", 409],
        ),
        "final rescan (new, unchanged)": final_counts,
        "pairs of scans that ran at the same time": overlapping_scans,
        "requests during the load": load_requests,
        "load seconds": round(load_seconds, 2),
        "requests/s": round(load_requests / load_seconds, 1),
        "submit p50 / p99 ms": (
            round(rec.percentile("submit", 0.5) * 1000, 1),
            round(rec.percentile("submit", 0.99) * 1000, 1),
        ),
        "poll p50 / p99 ms": (
            round(rec.percentile("poll", 0.5) * 1000, 1),
            round(rec.percentile("poll", 0.99) * 1000, 1),
        ),
        "jobs in store": store_total,
        "sleep/echo jobs/s (first created to last finished)": round(
            len(finished) / busy_seconds if busy_seconds else 0.0, 1
        ),
        "requests in all": rec.count(),
        "5xx": rec.server_errors(),
        "unexpected answers": len(rec.unexpected),
        "'database is locked' (responses / server logs)": (locked_in_bodies, locked_in_logs),
        "tracebacks in server logs": tracebacks_in_logs,
        "lost jobs": lost_jobs,
        "duplicate jobs": duplicate_jobs,
        "jobs nobody was told about": ghost_jobs,
        "jobs not complete": len(not_complete),
        "jobs with a wrong result": len(wrong_results),
        "videos (corpus files)": (videos_total, len(expected_paths)),
        "duplicate videos": duplicate_videos,
        "errors reported by scans": scan_errors,
        "exit codes (web, worker) / seconds to stop": (exit_codes, round(stop_seconds, 2)),
        "test seconds": round(time.monotonic() - began, 1),
    }
    report = "\n".join(f"  {name}: {value}" for name, value in figures.items())
    report += f"\n  answers: {dict(sorted(statuses.items()))}"
    with capsys.disabled():
        print(f"\nconcurrency figures:\n{report}")

    detail = (
        f"\n{report}\nunexpected: {rec.unexpected[:5]}"
        f"\nnot complete: {list(not_complete.items())[:5]}"
        f"\nnobody was told about: {[(j['type'], j['payload']) for j in ghosts[:5]]}"
    )
    assert rec.server_errors() == 0, detail
    assert exit_codes == (0, 0), detail
    assert locked_in_bodies == 0 and locked_in_logs == 0, detail
    assert rec.unexpected == [], detail
    assert tracebacks_in_logs == 0, detail
    assert rec.statuses["submit", 202] == CLIENTS * JOBS_PER_CLIENT, detail
    assert rec.statuses["scan", 202] >= 1 and overlapping_scans == 0, detail
    assert (lost_jobs, duplicate_jobs, ghost_jobs) == (0, 0, 0), detail
    assert store_total == len(accepted) == answered_202, detail
    assert not_complete == {}, detail
    assert wrong_results == [], detail
    assert duplicate_videos == 0 and scan_errors == 0, detail
    assert set(video_paths) == expected_paths and videos_total == len(expected_paths), detail
