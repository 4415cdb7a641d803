"""Thumbnails: a ``thumbnail`` job type that grabs a frame with PyAV and writes a JPEG with
Pillow, queued for every new or changed video, served at ``/api/v1/videos/{id}/thumbnail``.

Built only on scanner's public plugin API. ``SCANNER_THUMBNAILS_AUTO=0`` stops the automatic
queueing; thumbnails can still be asked for with ``POST /api/v1/jobs``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import av
from flask import send_file
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from scanner import JobContext, JobType, Services, hookimpl
from scanner.api import LARGEST_ID, abort
from scanner.config import Settings

WIDTH = 320
BATCH = 1000  # videos a job at most: a scan queues one job per batch it writes


class ThumbnailPayload(Schema):
    video_ids = fields.List(
        fields.Integer(validate=validate.Range(1, LARGEST_ID)),
        required=True,
        validate=validate.Length(min=1, max=BATCH),
    )
    at = fields.Float(
        load_default=0.1,
        validate=validate.Range(0, 1),
        metadata={"description": "Where to take the frame, as a fraction of the duration."},
    )


def thumbnail_path(settings: Settings, video_id: int) -> Path:
    return settings.data_dir / "thumbnails" / f"{video_id}.jpg"


def make_thumbnails(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Thumbnail each video; one that cannot be read is listed in ``errors`` and skipped."""
    ids = payload["video_ids"]
    made, errors = 0, []
    for n, video in enumerate(ctx.services.library.by_ids(ids), start=1):
        try:
            make_thumbnail(video, thumbnail_path(ctx.settings, video["id"]), payload["at"])
            made += 1
        except (av.FFmpegError, OSError, StopIteration) as exc:
            errors.append({"video_id": video["id"], "error": f"{type(exc).__name__}: {exc}"})
        ctx.progress(n, len(ids))
    missing = len(ids) - made - len(errors)
    return {"made": made, "missing_videos": missing, "errors": errors}


def make_thumbnail(video: dict[str, Any], target: Path, at: float) -> tuple[int, int]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(video["path"]) as container:
        stream = next(
            s
            for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic
        )
        stream.thread_type = "AUTO"
        seconds = (video["duration_seconds"] or 0) * at
        if seconds and stream.time_base:
            container.seek(int(seconds / stream.time_base), stream=stream)
        frame = next(container.decode(stream))
        image = frame.to_image()
    image.thumbnail((WIDTH, WIDTH * 4))
    # A name of its own: two jobs may thumbnail one video at once (two scans queued it).
    partial = target.with_name(f"{target.stem}.{uuid.uuid4().hex}.part")
    try:
        image.save(partial, "JPEG", quality=85)
        os.replace(partial, target)  # readers never see half a file
    finally:
        partial.unlink(missing_ok=True)
    return image.width, image.height


@hookimpl
def scanner_job_types() -> list[JobType]:
    return [
        JobType(
            "thumbnail",
            make_thumbnails,
            ThumbnailPayload,
            description="Grab a frame of each video and store it as a JPEG thumbnail.",
            priority=-1,  # after scans and other interactive work
        )
    ]


@hookimpl
def scanner_library_changed(
    added: list[dict[str, Any]],
    updated: list[dict[str, Any]],
    removed: list[dict[str, Any]],
    services: Services,
) -> None:
    changed = [video["id"] for video in added + updated]
    if changed and services.settings.flag("SCANNER_THUMBNAILS_AUTO"):
        services.jobs.submit("thumbnail", {"video_ids": changed})
    for video in removed:
        thumbnail_path(services.settings, video["id"]).unlink(missing_ok=True)


@hookimpl
def scanner_blueprints(services: Services) -> list[Blueprint]:
    blp = Blueprint("thumbnails", __name__, description="Video thumbnails (scanner-thumbnails).")

    @blp.route("/videos/<int:video_id>/thumbnail")
    @blp.response(200, {"type": "string", "format": "binary"}, content_type="image/jpeg")
    @blp.alt_response(404, description="No such video, or no thumbnail made yet.")
    def thumbnail(video_id: int) -> ResponseReturnValue:
        """The video's thumbnail, a JPEG 320 pixels wide."""
        path = thumbnail_path(services.settings, video_id)
        if not path.exists():
            if services.library.get(video_id) is None:
                abort(404, message=f"no video has the id {video_id}")
            abort(
                404,
                message=f"no thumbnail for video {video_id} yet; one is made after each scan, "
                f'or ask: POST /api/v1/jobs {{"type": "thumbnail", "payload": '
                f'{{"video_ids": [{video_id}]}}}}',
            )
        return send_file(path, mimetype="image/jpeg", max_age=60)

    return [blp]
