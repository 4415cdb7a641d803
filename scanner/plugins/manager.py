"""Plugin discovery: every plugin, built-in or third-party, comes through one entry-point group.

A plugin that fails to import, or raises in a hook that sets it up, is reported (logged and
listed with its error), takes no further part (its hooks, job types and routes are gone) and
the others go on; one broken package never takes the service down.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from scanner.config import Settings
from scanner.errors import PluginError
from scanner.jobs.types import JobType
from scanner.plugins import hookspecs

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "scanner.plugins"
CORE_DISTRIBUTION = "scanner"
# The hooks that set a plugin up in a process: one that raises leaves it "failed" (and the
# service degraded). The others run as the service works; an error there is that call's.
START_HOOKS = frozenset({"scanner_job_types", "scanner_blueprints", "scanner_startup"})


@dataclass
class PluginInfo:
    """What ``GET /plugins`` and ``scanner plugins`` show about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    job_types: list[str] = field(default_factory=list)
    error: str | None = None  # why it failed to start: it is "failed"
    last_error: str | None = None  # the latest a hook raised while it ran; it stays loaded

    @property
    def status(self) -> str:
        return "failed" if self.error else "loaded"


class Plugins:
    """The loaded plugins, what each provides, and what went wrong with which."""

    def __init__(
        self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo], settings: Settings
    ) -> None:
        self.pm = pm
        self.infos = infos
        self.job_types: dict[str, JobType] = {}
        self._collect_job_types(settings)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a hook on each plugin separately, so one plugin's error spares the rest."""
        results = []
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                results.append((impl.plugin_name, impl.function(**args)))
            except Exception as exc:
                error = f"{hook_name} raised {type(exc).__name__}: {exc}"
                if hook_name in START_HOOKS:
                    self.fail(impl.plugin_name, error)
                else:
                    log.exception("plugin %s: %s", impl.plugin_name, error)
                    self._info(impl.plugin_name).last_error = error
        return results

    def fail(self, name: str, error: str) -> None:
        """Record (and log) what went wrong with a plugin, which shows in ``GET /plugins``,
        and take it out: its hooks no longer run and its job types are not offered, so it
        is never half there (a job type whose table its failed start-up never made)."""
        log.error("plugin %s: %s", name, error)
        info = self._info(name)
        info.error = error if info.error is None else f"{info.error}; {error}"
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        for job_type in info.job_types:
            del self.job_types[job_type]
        info.job_types = []

    def _info(self, name: str) -> PluginInfo:
        return self.infos.setdefault(name, PluginInfo(name))

    def _collect_job_types(self, settings: Settings) -> None:
        for plugin, provided in self.call_each("scanner_job_types", settings=settings):
            if provided is None:
                continue
            if not isinstance(provided, list | tuple):
                self.fail(plugin, f"scanner_job_types returned {provided!r}, not a list")
                continue
            for job_type in provided:
                if not isinstance(job_type, JobType):
                    self.fail(plugin, f"scanner_job_types returned {job_type!r}, not a JobType")
                elif job_type.name in self.job_types:
                    self.fail(plugin, f"job type {job_type.name!r} is already registered")
                else:
                    self.job_types[job_type.name] = job_type
                    self.infos[plugin].job_types.append(job_type.name)
                    continue
                break  # failed: none of its types stay


KNOWN_HOOKS = frozenset(n for n in dir(hookspecs) if n.startswith("scanner_"))


def _hook_names(plugin: object) -> list[str]:
    return sorted(n for n in dir(plugin) if n.startswith("scanner_"))


def _itself(plugin: object) -> object:
    return plugin


def _register(pm: pluggy.PluginManager, info: PluginInfo, load: Callable[[], object]) -> None:
    """Load and register one plugin; on any error record it in ``info`` and go on."""
    try:
        plugin = load()
        hooks = _hook_names(plugin)
        unknown = sorted(set(hooks) - KNOWN_HOOKS)
        if unknown:
            raise PluginError(
                f"implements unknown hooks {', '.join(unknown)}; "
                f"known hooks: {', '.join(sorted(KNOWN_HOOKS))}"
            )
        pm.register(plugin, name=info.name)
    except Exception as exc:
        info.error = f"could not be loaded: {type(exc).__name__}: {exc}"
        log.error("plugin %s %s", info.name, info.error)
        return
    info.hooks = hooks


def _load_order(ep: EntryPoint) -> tuple[bool, str, str]:
    """The core's own plugins first, so no other takes their job type names (``scan``);
    then by entry-point name, and distribution for one name given twice."""
    dist = ep.dist.name if ep.dist else ""
    return dist != CORE_DISTRIBUTION, ep.name, dist


def get_plugin_manager(
    settings: Settings,
    *,
    disabled: Iterable[str] = (),
    extra: Iterable[tuple[str, object]] = (),
    entry_point_group: str | None = ENTRY_POINT_GROUP,
) -> Plugins:
    """A fresh plugin manager: the installed plugins (less ``disabled``) plus ``extra``.

    ``extra`` (name, module) pairs register plugins directly, for tests and embedding.
    """
    pm = pluggy.PluginManager("scanner")
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    off = set(disabled)
    eps: list[EntryPoint] = list(entry_points(group=entry_point_group)) if entry_point_group else []
    for ep in sorted(eps, key=_load_order):
        if ep.name in off:
            log.info("plugin %s is disabled", ep.name)
            continue
        dist = ep.dist
        info = PluginInfo(
            ep.name,
            distribution=dist.name if dist else None,
            version=dist.version if dist else None,
        )
        if ep.name in infos:  # another distribution took the name first
            info.name = f"{ep.name} ({info.distribution})"
            info.error = (
                f"its entry-point name {ep.name!r} is taken by "
                f"{infos[ep.name].distribution}; rename one of them"
            )
            log.error("plugin %s: %s", info.name, info.error)
            infos[info.name] = info
            continue
        infos[ep.name] = info
        _register(pm, info, ep.load)
    for name, plugin in extra:
        if name not in off:
            infos[name] = PluginInfo(name)
            _register(pm, infos[name], functools.partial(_itself, plugin))
    return Plugins(pm, infos, settings)
