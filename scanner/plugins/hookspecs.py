"""Every hook a plugin may implement, each documented here and in docs/plugins.md.

Hooks are named ``scanner_*``. A plugin module implements any of them with ``@hookimpl``
(``from scanner import hookimpl``) and is found through the ``scanner.plugins`` entry point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from scanner.config import Settings
    from scanner.jobs.types import JobType

hookspec = pluggy.HookspecMarker("scanner")
hookimpl = pluggy.HookimplMarker("scanner")


@hookspec
def scanner_job_types(settings: Settings) -> list[JobType]:  # type: ignore[empty-body]
    """Return the job types this plugin provides, as a list of ``JobType``.

    Called once when the web process and each consumer start; both must see the same set.
    ``settings`` (optional to accept) is the process's configuration. A name already taken
    by another plugin is refused and reported, the first one kept.
    """


@hookspec
def scanner_startup(role: str, services: Any) -> None:
    """Called once when a process is ready: ``role`` is ``"web"`` or ``"consumer"``.

    ``services`` gives the settings, the database engine and the job service. Use it to open
    resources a plugin needs; an exception is logged and does not stop the process.
    """
