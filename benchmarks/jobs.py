"""The price of tracking a job (issue #6): throughput against bare Huey on the same storage,
progress reports, and how long processes take to start."""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from marshmallow import Schema, fields

from benchmarks.common import REPO, consumer, data_dir, report, timer
from scanner import JobContext, JobType, hookimpl
from scanner.config import Settings
from scanner.jobs.runner import Runner
from scanner.plugins.manager import get_plugin_manager
from scanner.schema import jobs
from scanner.services import build_services

JOBS = 5000
WORKERS = 4
# A single drain's rate moves by 15% or more from run to run on a shared machine: each figure
# is the median of this many runs, the three kinds alternated so they see the same drift.
ROUNDS = 3

# A bare Huey app on the very storage the service uses (scanner.queue.QueueStorage), or on
# Huey's default SQLite storage (synchronous=FULL) for the figure the issue quotes.
BARE_APP = """
import os
from huey import Huey
from huey.storage import SqliteStorage
from scanner.queue import QueueStorage

storage = QueueStorage if os.environ["BARE_STORAGE"] == "ours" else SqliteStorage
huey = Huey("bare", storage_class=storage, filename=os.environ["BARE_QUEUE"],
            results=False, timeout=30)


@huey.task()
def noop():
    return None
"""


def bare_huey_rate(tmp: Path, storage: str) -> float:
    """No-op tasks a second through bare Huey; ``storage``: "ours" or "default"."""
    app = tmp / f"bare-{storage}"
    app.mkdir()
    (app / "bareapp.py").write_text(BARE_APP)
    env = {"BARE_QUEUE": str(app / "bare.db"), "PYTHONPATH": str(app), "BARE_STORAGE": storage}
    os.environ.update(env)
    sys.path.insert(0, str(app))
    sys.modules.pop("bareapp", None)
    import bareapp  # type: ignore[import-not-found]

    for _ in range(JOBS):
        bareapp.noop()
    with consumer(env, WORKERS, app / "bare.log", app="bareapp.huey"), timer() as t:
        while bareapp.huey.pending_count():
            time.sleep(0.002)
    return JOBS / t[0]


def tracked_rate(tmp: Path) -> float:
    env = {"SCANNER_DATA_DIR": str(tmp / "tracked")}
    services = build_services(Settings.from_env(env))
    for _ in range(JOBS):
        services.jobs.submit("noop", {})
    done = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "complete")
    with consumer(env, workers=WORKERS), timer() as t:
        while True:
            with services.engine.connect() as conn:
                if conn.execute(done).scalar() == JOBS:
                    break
            time.sleep(0.002)
    return JOBS / t[0]


class WorkPayload(Schema):
    units = fields.Integer(required=True)
    reports = fields.Integer(required=True)


def work(ctx: JobContext, payload: dict[str, Any]) -> None:
    """The same work (hashing 10,000 blocks of 4 KiB) whatever the number of reports."""
    units, every = payload["units"], payload["units"] // payload["reports"]
    digest, block = hashlib.sha256(), b"x" * 4096
    for n in range(1, units + 1):
        digest.update(block)
        if n % every == 0:
            ctx.progress(n, units)


def progress_cost(tmp: Path) -> tuple[float, float]:
    """Median seconds of one job reporting progress 100 times, and 10,000 times."""
    settings = Settings.from_env({"SCANNER_DATA_DIR": str(tmp / "progress")})
    plugin = SimpleNamespace(
        scanner_job_types=hookimpl(lambda: [JobType("work", work, WorkPayload)])
    )
    services = build_services(settings, get_plugin_manager(settings, extra=[("bench", plugin)]))
    runner = Runner(services, lambda: "bench:0:x")
    medians = []
    for reports in (100, 10_000):
        times = []
        for _ in range(5):
            job = services.jobs.submit("work", {"units": 10_000, "reports": reports})
            with timer() as t:
                runner.run(job.id)
            times.append(t[0])
        medians.append(statistics.median(times))
    return medians[0], medians[1]


def startup_seconds(tmp: Path) -> tuple[float, float]:
    """Seconds from exec to ready: a consumer (its log line) and a web app (create_app)."""
    env = {"SCANNER_DATA_DIR": str(tmp / "startup")}
    consumer_times, web_times = [], []
    for n in range(3):
        began = time.perf_counter()
        with consumer(env, WORKERS, tmp / f"startup-{n}.log"):
            consumer_times.append(time.perf_counter() - began)
        with timer() as t:
            subprocess.run(
                [sys.executable, "-c", "from scanner.app import create_app; create_app()"],
                env={**os.environ, **env},
                check=True,
                cwd=REPO,
            )
        web_times.append(t[0])
    return min(consumer_times), min(web_times)


def main() -> None:
    print(
        f"== jobs: {JOBS:,} no-op jobs, one consumer, {WORKERS} thread workers, SQLite;"
        f" medians of {ROUNDS} runs"
    )
    rates: dict[str, list[float]] = {"default": [], "ours": [], "tracked": []}
    for _ in range(ROUNDS):
        for kind, runs in rates.items():
            with data_dir() as tmp:
                runs.append(tracked_rate(tmp) if kind == "tracked" else bare_huey_rate(tmp, kind))
    default, bare, ours = (statistics.median(runs) for runs in rates.values())
    each = {kind: "/".join(f"{r:,.0f}" for r in runs) for kind, runs in rates.items()}
    report("bare Huey, Huey's default SQLite storage", default, "tasks/s", each["default"])
    report("bare Huey, the service's SQLite storage", bare, "tasks/s", each["ours"])
    report(
        "tracked jobs (claim, run, finish)",
        ours,
        "jobs/s",
        f"{each['tracked']}: {ours / bare:.0%} of bare on the same storage,"
        f" {ours / default:.0%} of default (target >= 80%)",
    )
    with data_dir() as tmp:
        few, many = progress_cost(tmp)
        report("one job's work, reporting progress 100 times", few * 1000, "ms")
        report(
            "the same work, reporting 10,000 times",
            many * 1000,
            "ms",
            f"{many / few:.2f}x (target < 2x)",
        )
        consumer_s, web_s = startup_seconds(tmp)
        report("consumer start, exec to ready", consumer_s, "s", "(target < 1.5)")
        report("web app start, exec to create_app() done", web_s, "s", "(target < 1.5)")
