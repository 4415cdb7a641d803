"""The parts both processes share, built once per process and passed in where needed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from scanner.config import Settings
from scanner.db import create_engine, migrate
from scanner.jobs.service import JobService
from scanner.jobs.store import JobStore
from scanner.plugins.manager import Plugins, get_plugin_manager
from scanner.queue import JobQueue, create_huey


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: JobStore
    queue: JobQueue
    plugins: Plugins
    jobs: JobService


def build_services(settings: Settings, plugins: Plugins | None = None) -> Services:
    """Open the database (migrating it), the queue and the plugins for ``settings``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url)
    migrate(engine)
    store = JobStore(engine)
    queue = JobQueue(create_huey(settings.queue_url))
    if plugins is None:
        plugins = get_plugin_manager(settings, disabled=settings.disabled_plugins)
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        queue=queue,
        plugins=plugins,
        jobs=JobService(store, queue, plugins.job_types),
    )
