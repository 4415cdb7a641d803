"""The API under load: submitting against a bare Flask + Huey app, reading a job's status while
a consumer works, and listing the running jobs among 1,000,000.

Servers run as the Procfile's web line runs them (gunicorn, 2 gthread workers of 8 threads,
access log on; status reads also with 2 threads a worker); load comes from wrk (Debian's
``wrk`` package) with 16 connections.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from flask import Flask, request
from sqlalchemy.engine import Engine

from benchmarks.common import BIN, REPO, consumer, data_dir, report, timer
from scanner.config import Settings
from scanner.db import create_engine, migrate
from scanner.jobs.states import Status
from scanner.jobs.store import JobStore
from scanner.queue import create_huey
from scanner.schema import jobs
from scanner.services import build_services

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "api.lua"
CONNECTIONS = 16
SECONDS = 10
WARMUP = 2
OURS = "scanner.app:create_app()"
BARE = "benchmarks.api:create_bare_app()"
JOBS = "/api/v1/jobs"
# The Procfile's web line, but for --bind.
GUNICORN = ["--workers", "2", "--worker-class", "gthread", "--access-logfile", "-"]
THREADS = 8  # the Procfile's; status reads are also measured with FEW_THREADS
FEW_THREADS = 2
# Each figure is the median of this many runs: on a 2-core machine one 10 s run's p99 moves
# by a third, and gthread may hand one worker most of wrk's connections in any of them.
ROUNDS = 3


# The bare app: what a submit costs with nothing of ours in the way.


def noop_task(job_id: str) -> None:
    """The task the bare app enqueues (nothing ever runs it)."""


def create_bare_app() -> Flask:
    """One POST route that reads the JSON body and enqueues a task into the same kind of
    Huey storage as ours (``create_huey``: SQLite, WAL, synchronous=NORMAL)."""
    huey = create_huey(os.environ["SCANNER_QUEUE_URL"])
    task = huey.task()(noop_task)
    app = Flask(__name__)

    @app.post("/enqueue")
    def enqueue() -> tuple[dict[str, Any], int]:
        request.get_json()
        job_id = str(uuid.uuid4())
        task(job_id)
        return {"job_id": job_id}, 202

    return app


# Processes and load.


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(
            "the api benchmark needs wrk (HTTP load generator): apt-get install -y wrk"
        )
    return found


def scanner_env(tmp: Path) -> dict[str, str]:
    return {
        "SCANNER_DATA_DIR": str(tmp),
        "SCANNER_DATABASE_URL": f"sqlite:///{tmp}/scanner.db",
        "SCANNER_QUEUE_URL": f"sqlite:///{tmp}/queue.db",
        "SCANNER_API_TOKEN": "",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    base: str
    pid: int  # gunicorn's master

    def workers(self) -> list[int]:
        """The master's children, from /proc."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                    found.append(int(stat.parent.name))
        return sorted(found)


def cpu_seconds(pids: list[int]) -> list[float]:
    """User + system CPU time of each process so far."""
    tick = os.sysconf("SC_CLK_TCK")
    times = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        times.append((int(fields[11]) + int(fields[12])) / tick)
    return times


@contextlib.contextmanager
def gunicorn(app: str, env: dict[str, str], ready: str, threads: int = THREADS) -> Iterator[Server]:
    """gunicorn serving ``app`` on a free port, once ``ready`` answers."""
    port = free_port()
    log = Path(env["SCANNER_DATA_DIR"]) / f"gunicorn-{port}.log"
    args = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", *GUNICORN]
    args += ["--threads", str(threads), app]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=out)
    server = Server(f"http://127.0.0.1:{port}", proc.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(server.base + ready, timeout=30)  # the first answer waits for the app
                break
            except (requests.ConnectionError, requests.Timeout):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            for pid in server.workers():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()


def wrk(server: Server, path: str, *script_args: str, seconds: float = SECONDS) -> dict[str, Any]:
    """Run wrk on ``path`` with benchmarks/wrk/api.lua; its figures (times in ms) and the CPU
    the gunicorn workers spent meanwhile."""
    args = [wrk_binary(), "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds:g}s"]
    args += ["--timeout", "10s", "-s", str(WRK_SCRIPT), server.base + path, "--", *script_args]
    workers = server.workers()
    before = cpu_seconds(workers)
    out = subprocess.run(
        args, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    used = [b - a for a, b in zip(before, cpu_seconds(workers), strict=True)]
    found = re.search(r"^WRK (.*)$", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no result line:\n{out}")
    raw = {k: int(v) for k, v in (pair.split("=") for pair in found.group(1).split())}
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    if errors > raw["requests"] // 100:
        raise RuntimeError(f"wrk: {errors} of {raw['requests']} requests failed:\n{out}")
    wall = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": errors,
        "rps": raw["requests"] / wall,
        "p50": raw["p50_us"] / 1000,
        "p90": raw["p90_us"] / 1000,
        "p99": raw["p99_us"] / 1000,
        "max": raw["max_us"] / 1000,
        "cpu_us": sum(used) / raw["requests"] * 1e6,
        "split": "+".join(f"{100 * u / wall:.0f}%" for u in used),
        "uneven": min(used) < 0.25 * sum(used),
    }


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the even ones of ``runs`` (all, if none is even), and
    how the p99 spread. A run is uneven when one gunicorn worker took most of wrk's
    connections (gthread keeps a keep-alive connection on the worker that accepted it): it
    measured one worker, not the two the Procfile runs."""
    even = [r for r in runs if not r["uneven"]] or runs
    figures = {k: statistics.median(r[k] for r in even) for k in ("rps", "p50", "p99", "cpu_us")}
    return {
        **figures,
        "p99s": "/".join(f"{r['p99']:.1f}{'*' if r['uneven'] else ''}" for r in runs),
        "uneven": sum(r["uneven"] for r in runs),
        "runs": len(runs),
    }


def cpu_note(f: dict[str, Any]) -> str:
    note = f"p99 of each run {f['p99s']} ms; workers' CPU {f['cpu_us']:,.0f} us a request"
    if f["uneven"]:
        note += f" (*: {f['uneven']} of {f['runs']} runs UNEVEN, left out if any run was even)"
    return note


def count_rows(db: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(sql).fetchone()[0])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


# 1. Submit.


def submit_one(app: str, path: str) -> dict[str, Any]:
    body = json.dumps({"type": "noop", "payload": {}})
    with data_dir() as tmp:
        env = scanner_env(tmp)
        with gunicorn(app, env, "/api/v1/health" if app == OURS else path) as server:
            wrk(server, path, "post", path, body, seconds=WARMUP)
            figures = wrk(server, path, "post", path, body)
        # Every answered request left a message (and, for ours, a job row) behind.
        queued = count_rows(tmp / "queue.db", "SELECT count(*) FROM task")
        assert queued >= figures["requests"], (app, queued, figures["requests"])
        if app == OURS:
            recorded = count_rows(tmp / "scanner.db", "SELECT count(*) FROM jobs")
            assert recorded == queued, (recorded, queued)
    return figures


def submit_throughput() -> None:
    runs: dict[str, list[dict[str, Any]]] = {BARE: [], OURS: []}
    for _ in range(ROUNDS):  # alternated, so both see the same drift of the machine
        runs[BARE].append(submit_one(BARE, "/enqueue"))
        runs[OURS].append(submit_one(OURS, JOBS))
    bare, ours = median(runs[BARE]), median(runs[OURS])
    for label, f in (("bare Flask + Huey enqueue", bare), ("POST /api/v1/jobs (noop)", ours)):
        report(f"submit, {label}", f["rps"], "req/s", f"median of {ROUNDS} runs")
        report("  latency p50", f["p50"], "ms")
        report("  latency p99", f["p99"], "ms", cpu_note(f))
    report("submit, ours / bare", 100 * ours["rps"] / bare["rps"], "%", "(target >= 80%)")
    report("submit, worker CPU a request, ours / bare", ours["cpu_us"] / bare["cpu_us"], "x")


# 2. Status reads while a consumer works.


def status_reads(count: int = 800) -> None:
    with data_dir() as tmp:
        env = scanner_env(tmp)
        services = build_services(Settings.from_env(env))
        sleep = {"seconds": 0.5, "steps": 50}
        ids = [services.jobs.submit("sleep", sleep).id for _ in range(count)]
        ids_file = tmp / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n")
        store = services.store
        reads = (f"{JOBS}/{ids[0]}", "get", f"{JOBS}/", str(ids_file))

        def counts() -> tuple[int, int]:
            running = len(store.list_jobs(status=[Status.RUNNING], limit=1000)[0])
            return running, store.list_jobs(status=[Status.COMPLETE], limit=1)[1]

        with gunicorn(OURS, env, "/api/v1/health") as server:
            wrk(server, *reads, seconds=WARMUP)
            idle = median([wrk(server, *reads) for _ in range(ROUNDS)])
            with consumer(env, workers=4):
                deadline = time.monotonic() + 10
                while counts()[0] < 4 and time.monotonic() < deadline:
                    time.sleep(0.05)
                running_before, done_before = counts()
                busy = median([wrk(server, *reads) for _ in range(ROUNDS)])
                running_after, done_after = counts()
                with gunicorn(OURS, env, "/api/v1/health", threads=FEW_THREADS) as few:
                    wrk(few, *reads, seconds=WARMUP)
                    busy_few = median([wrk(few, *reads) for _ in range(ROUNDS)])
                still_pending = counts()[1] < count
        services.engine.dispose()
    finished = done_after - done_before
    assert still_pending, "the consumer ran out of jobs before the reads ended"
    report("GET /api/v1/jobs/{id}, no consumer", idle["rps"], "req/s")
    report("  latency p50", idle["p50"], "ms")
    report("  latency p99", idle["p99"], "ms", cpu_note(idle))
    report("GET /api/v1/jobs/{id}, consumer busy", busy["rps"], "req/s")
    report("  latency p50", busy["p50"], "ms")
    report("  latency p99", busy["p99"], "ms", f"(target < 20) {cpu_note(busy)}")
    report(f"  the same, gthread workers of {FEW_THREADS} threads", busy_few["rps"], "req/s")
    report("    latency p50", busy_few["p50"], "ms")
    report("    latency p99", busy_few["p99"], "ms", f"(target < 20) {cpu_note(busy_few)}")
    report(
        "  consumer meanwhile: sleep jobs finished",
        finished,
        "jobs",
        f"{running_before} and {running_after} running at start and end, "
        f"~{finished * sleep['steps'] / (ROUNDS * SECONDS):,.0f} progress writes/s",
    )


# 3. Listing running jobs among 1,000,000.


def fill_jobs(db: Path, total: int, running: int) -> None:
    """``total`` jobs, newest last, half a second apart: ``running`` of them (anywhere in
    time) running, one in 500 failed, the rest complete. Straight through sqlite3, in the
    format SQLAlchemy writes (text datetimes, JSON text)."""
    columns = [c.name for c in jobs.c]
    insert = f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    rng = random.Random(7)
    running_at = set(rng.sample(range(total), running))
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=total / 2 + 60)
    step, second = timedelta(seconds=0.5), timedelta(seconds=1)

    def stamp(moment: datetime) -> str:
        return moment.isoformat(" ", "microseconds")

    def rows(first: int, last: int) -> Iterator[tuple[Any, ...]]:
        for i in range(first, last):
            created = start + i * step
            c, s, f = stamp(created), stamp(created + step), stamp(created + second)
            uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if i in running_at:
                yield (uid, "sleep", "running", '{"seconds": 600}', 0.5, "null", None,
                       1, 0, 0.0, None, 0, c, f, s, None, None, None, "bench:1")  # fmt: skip
            elif i % 500 == 0:
                yield (uid, "fail", "failed", "{}", None, "null", "failed on purpose",
                       1, 0, 0.0, None, 0, c, f, s, f, None, None, "bench:1")  # fmt: skip
            else:
                yield (uid, "noop", "complete", "{}", 1.0, "null", None,
                       1, 0, 0.0, None, 0, c, f, s, f, None, None, "bench:1")  # fmt: skip

    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("PRAGMA cache_size=-262144")  # 256 MB: the id index is in random order
        chunk = 50_000
        for first in range(0, total, chunk):
            conn.execute("BEGIN")
            conn.executemany(insert, rows(first, min(first + chunk, total)))
            conn.execute("COMMIT")


def route_statements(engine: Engine) -> list[tuple[str, tuple[Any, ...]]]:
    """The SELECTs that ``GET /jobs?status=running`` runs, as JobStore.list_jobs sends them."""
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def capture(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: Any) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, tuple(params)))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        JobStore(engine).list_jobs(status=[Status.RUNNING], limit=50, offset=0)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    return seen


def show_plans(engine: Engine, statements: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    plans = []
    with engine.connect() as conn:
        for sql, params in statements:
            shown = " ".join(sql.split())
            for value in params:
                shown = shown.replace("?", repr(value), 1)
            print(textwrap.fill(shown, 100, initial_indent="  ", subsequent_indent="    "))
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
            depth = {0: 0}
            for node, parent, _, detail in rows:
                depth[node] = depth.get(parent, 0) + 1
                print(f"  {'    ' * depth[node]}{detail}")
            plans.append("\n".join(r[3] for r in rows))
    return plans


def time_requests(session: requests.Session, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = session.get(url, timeout=30)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return times


def list_running(total: int = 1_000_000, running: int = 300, n: int = 50) -> None:
    with data_dir() as tmp:
        env = scanner_env(tmp)
        engine = create_engine(env["SCANNER_DATABASE_URL"])
        migrate(engine)
        with timer() as t:
            fill_jobs(tmp / "scanner.db", total, running)
        report(f"{total:,} jobs inserted (sqlite3 executemany)", t[0], "s")
        store = JobStore(engine)
        found, count = store.list_jobs(status=[Status.RUNNING])
        assert count == running and len(found) == 50, (count, len(found))
        assert all(a.created_at > b.created_at for a, b in itertools.pairwise(found))
        in_process = []
        for _ in range(n):
            with timer() as t:
                store.list_jobs(status=[Status.RUNNING])
            in_process.append(t[0] * 1000)
        with gunicorn(OURS, env, "/api/v1/health") as server, requests.Session() as session:
            url = f"{server.base}{JOBS}?status=running"
            time_requests(session, url, 5)
            body = session.get(url, timeout=30).json()
            assert body["total"] == running and len(body["jobs"]) == 50, body["total"]
            times = time_requests(session, url, n)
        print(f"  GET /api/v1/jobs?status=running among {total:,} jobs, {n} requests one at a time")
        report("  latency p50", statistics.median(times), "ms")
        report("  latency p99", percentile(times, 99), "ms")
        report("  JobStore.list_jobs alone, p50", statistics.median(in_process), "ms")
        print("  query plans (EXPLAIN QUERY PLAN) of the statements the route runs:")
        plans = show_plans(engine, route_statements(engine))
        engine.dispose()
    assert len(plans) == 2, plans
    for plan in plans:
        if "ix_jobs_status_created" not in plan:
            raise AssertionError(f"the (status, created_at) index is not used:\n{plan}")


def main() -> None:
    wrk_binary()
    print(f"== api: gunicorn as in the Procfile, wrk with {CONNECTIONS} connections")
    load = os.getloadavg()[0]
    print(
        f"  (load average {load:.1f} on {os.cpu_count()} CPUs at the start: figures move with it)"
    )
    with timer() as t:
        submit_throughput()
        status_reads()
        list_running()
    report("api suite took", t[0], "s")
