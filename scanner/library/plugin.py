"""The built-in ``scan`` job type, registered through the core's own ``scanner.plugins`` entry
point exactly as a third-party plugin registers its types."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validates

from scanner.config import Settings
from scanner.errors import ProbeError, ScanRootError
from scanner.jobs.context import JobContext
from scanner.jobs.types import JobType
from scanner.library.probe import VideoInfo, probe
from scanner.library.scan import Scanner, check_root
from scanner.library.walk import within
from scanner.plugins.hookspecs import hookimpl


class ScanPayload(Schema):
    path = fields.String(
        required=True, metadata={"description": "Absolute path of the directory to scan."}
    )
    recursive = fields.Boolean(load_default=True)

    def __init__(self, allowed_roots: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed_roots = allowed_roots

    @validates("path")
    def _root_can_be_scanned(self, value: str, **kwargs: Any) -> None:
        # Checked when the job is submitted and again when it runs: a drive may be unmounted
        # in between, and a root gone with it must never empty the library. (A mount point
        # itself is left behind as an empty directory: docs/operations.md, known gaps.)
        try:
            check_root(value, self.allowed_roots)
        except ScanRootError as exc:
            raise ValidationError(str(exc)) from exc


def scan(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    services = ctx.services
    settings = services.settings
    hook = services.plugins.hook

    def probe_through_plugins(path: str, timeout: float) -> VideoInfo:
        info: VideoInfo | None = hook.scanner_probe(path=path, timeout=timeout)
        if info is None:
            raise ProbeError("no probe could read it")
        return info

    def tell_plugins(
        added: list[dict[str, Any]], updated: list[dict[str, Any]], removed: list[dict[str, Any]]
    ) -> None:
        services.plugins.call_each(
            "scanner_library_changed",
            added=added,
            updated=updated,
            removed=removed,
            services=services,
        )

    listening = bool(hook.scanner_library_changed.get_hookimpls())
    scanner = Scanner(
        services.library,
        extensions=settings.video_extensions,
        probe_timeout=settings.probe_timeout_seconds,
        progress=ctx.progress,
        probe=probe_through_plugins,
        on_change=tell_plugins if listening else None,
    )
    root = check_root(payload["path"], tuple(map(str, settings.allowed_roots)))
    result = scanner.scan(root, recursive=payload["recursive"]).as_dict()
    services.plugins.call_each("scanner_scan_finished", root=root, result=result, services=services)
    return result


@hookimpl(trylast=True)
def scanner_probe(path: str, timeout: float) -> VideoInfo:
    """The built-in probe: PyAV, in-process. Plugins' probes are asked first."""
    return probe(path, timeout)


def scans_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two scans overlap when one's tree holds the other's root: the second would redo work."""
    first, second = (os.path.realpath(str(p["path"])) for p in (a, b))
    return within(first, second) or within(second, first)


@hookimpl
def scanner_job_types(settings: Settings) -> list[JobType]:
    return [
        JobType(
            "scan",
            scan,
            ScanPayload(allowed_roots=tuple(map(str, settings.allowed_roots))),
            description="Walk a directory and bring the video library in step with it.",
            overlaps=scans_overlap,
        )
    ]
