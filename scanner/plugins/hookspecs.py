"""Every hook a plugin may implement, each documented here and in docs/plugins.md.

Hooks are named ``scanner_*``. A plugin module implements any of them with ``@hookimpl``
(``from scanner import hookimpl``) and is found through the ``scanner.plugins`` entry point.
An implementation may accept any subset of a hook's arguments, by name.

Every hook but ``scanner_probe`` is called once per plugin, and an exception in one plugin's
implementation is logged and recorded against that plugin (``GET /plugins``) without
stopping the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from flask_smorest import Blueprint

    from scanner.config import Settings
    from scanner.jobs.types import JobType
    from scanner.library.probe import VideoInfo
    from scanner.services import Services

hookspec = pluggy.HookspecMarker("scanner")
hookimpl = pluggy.HookimplMarker("scanner")


@hookspec
def scanner_job_types(settings: Settings) -> list[JobType]:  # type: ignore[empty-body]
    """Return the job types this plugin provides, as a list of ``JobType``.

    Called once when the web process and each consumer start; both must see the same set.
    A name already taken by another plugin is refused and reported, the first one kept.
    """


@hookspec
def scanner_startup(role: str, services: Services) -> None:
    """Called once when a process is ready: ``role`` is ``"web"``, ``"consumer"``, or
    ``"script"`` (a test, a benchmark, a tool that builds the services itself).

    ``services`` gives the settings, the database engine, the job service and the library.
    Create a plugin's own tables here (``metadata.create_all(services.engine)``).
    """


@hookspec(firstresult=True)
def scanner_probe(path: str, timeout: float) -> VideoInfo | None:
    """Read a video file's metadata; the first implementation to return a ``VideoInfo`` wins.

    Return None to leave the file to the next implementation; the built-in PyAV probe runs
    last. Raise ``scanner.errors.ProbeError`` with a plain-words reason for a file that is
    not a readable video. Called from several threads at once, for each new or changed file.
    """


@hookspec
def scanner_library_changed(
    added: list[dict[str, Any]],
    updated: list[dict[str, Any]],
    removed: list[dict[str, Any]],
    services: Services,
) -> None:
    """Videos were added to the library, changed (or moved, or came back), or removed.

    Each video is a dict of its columns (those ``GET /videos/{id}`` shows, and more). Called
    by a scan after each batch it writes (so in a consumer), and by ``DELETE /videos/{id}``
    (in the web process). A removed video is one gone from disk (kept, with
    ``missing_since``) or deleted from the library. Keep it quick: queue a job
    (``services.jobs.submit``) for slow work.
    """


@hookspec
def scanner_scan_finished(root: str, result: dict[str, Any], services: Services) -> None:
    """A scan of ``root`` completed; ``result`` is its result (the counts and errors)."""


@hookspec
def scanner_blueprints(services: Services) -> list[Blueprint]:  # type: ignore[empty-body]
    """Return flask-smorest ``Blueprint``s to serve under ``/api/v1``.

    Their routes, arguments and responses appear in the OpenAPI document like the core's.
    Use ``scanner.api.abort`` for errors so they answer in the same JSON format.
    """
