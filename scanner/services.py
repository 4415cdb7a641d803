"""The parts both processes share, built once per process and passed in where needed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from scanner.config import Settings
from scanner.db import create_engine, migrate
from scanner.jobs.service import JobService
from scanner.jobs.store import JobStore
from scanner.library.store import VideoStore
from scanner.plugins.manager import Plugins, get_plugin_manager
from scanner.queue import JobQueue, create_huey


@dataclass
class Services:
    """What a process has to work with; plugins get it in hooks and as ``ctx.services``.

    ``settings``: the configuration. ``engine``: the SQLAlchemy engine of the application
    database (a plugin may keep its own tables there). ``jobs.submit(type, payload)``: queue
    a job. ``library``: the videos (``get(id)``, ``search(...)``, ``by_ids(ids)``).
    ``store``, ``queue`` and ``plugins`` are the internals these are built on.
    """

    settings: Settings
    engine: Engine
    store: JobStore
    queue: JobQueue
    plugins: Plugins
    jobs: JobService
    library: VideoStore


def build_services(
    settings: Settings, plugins: Plugins | None = None, *, role: str = "script"
) -> Services:
    """Open the database (migrating it), the queue and the plugins for ``settings``, then
    tell the plugins (``scanner_startup``) that a process of ``role`` is ready: ``web``,
    ``consumer``, or ``script`` for anything else (tests, benchmarks, tools)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.database_url)
    migrate(engine)
    store = JobStore(engine)
    queue = JobQueue(create_huey(settings.queue_url))
    if plugins is None:
        plugins = get_plugin_manager(settings, disabled=settings.disabled_plugins)
    services = Services(
        settings=settings,
        engine=engine,
        store=store,
        queue=queue,
        plugins=plugins,
        jobs=JobService(store, queue, plugins.job_types),
        library=VideoStore(engine),
    )
    plugins.call_each("scanner_startup", role=role, services=services)
    return services
