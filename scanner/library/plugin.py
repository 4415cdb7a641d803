"""The built-in ``scan`` job type, registered through the core's own ``scanner.plugins`` entry
point exactly as a third-party plugin registers its types."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validates

from scanner.config import Settings
from scanner.errors import ScanRootError
from scanner.jobs.context import JobContext
from scanner.jobs.types import JobType
from scanner.library.scan import Scanner, check_root
from scanner.library.store import VideoStore
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
        # in between, and a scan of an empty mount point must never empty the library.
        try:
            check_root(value, self.allowed_roots)
        except ScanRootError as exc:
            raise ValidationError(str(exc)) from exc


def scan(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    settings = ctx.settings
    scanner = Scanner(
        VideoStore(ctx.services.engine),
        extensions=settings.video_extensions,
        probe_timeout=settings.probe_timeout_seconds,
        progress=ctx.progress,
    )
    root = check_root(payload["path"], tuple(map(str, settings.allowed_roots)))
    return scanner.scan(root, recursive=payload["recursive"]).as_dict()


@hookimpl
def scanner_job_types(settings: Settings) -> list[JobType]:
    return [
        JobType(
            "scan",
            scan,
            ScanPayload(allowed_roots=tuple(map(str, settings.allowed_roots))),
            description="Walk a directory and bring the video library in step with it.",
        )
    ]
