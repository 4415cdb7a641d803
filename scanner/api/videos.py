"""``/videos``: scan directories, and browse, search and prune the library."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from scanner.api import LARGEST_OFFSET, abort
from scanner.api.jobs import JobSchema, submit
from scanner.library.store import SORTABLE
from scanner.services import Services


class ScanRequestSchema(Schema):
    path = fields.String(
        required=True, metadata={"description": "Absolute path of a directory to scan."}
    )
    recursive = fields.Boolean(load_default=True)


class VideoSchema(Schema):
    id = fields.Integer()
    path = fields.String()
    filename = fields.String()
    file_size = fields.Integer(metadata={"description": "Bytes."})
    duration_seconds = fields.Float(allow_none=True)
    width = fields.Integer(allow_none=True)
    height = fields.Integer(allow_none=True)
    frame_rate = fields.Float(allow_none=True)
    video_codec = fields.String(allow_none=True)
    audio_codec = fields.String(allow_none=True, metadata={"description": "null: no audio."})
    container = fields.String(allow_none=True)
    missing_since = fields.DateTime(
        allow_none=True, metadata={"description": "Set while the file is gone from disk."}
    )
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class VideoListArgs(Schema):
    q = fields.String(metadata={"description": "Search in path and filename (any case)."})
    sort = fields.String(
        load_default="path",
        validate=validate.OneOf([*SORTABLE, *(f"-{s}" for s in SORTABLE)]),
        metadata={"description": "A field; prefix with '-' for descending."},
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, LARGEST_OFFSET))
    include_missing = fields.Boolean(
        load_default=False, metadata={"description": "Also list videos gone from disk."}
    )


class VideoListSchema(Schema):
    videos = fields.List(fields.Nested(VideoSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


def create_blueprint(services: Services) -> Blueprint:
    blp = Blueprint("videos", __name__, description="The video library.")
    library = services.library

    @blp.route("/videos/scan", methods=["POST"])
    @blp.arguments(ScanRequestSchema())
    @blp.response(202, JobSchema, headers={"Location": {"description": "The scan job's URL."}})
    @blp.alt_response(409, description="A scan of an overlapping tree is already under way.")
    def scan(body: dict[str, Any]) -> Any:
        """Scan a directory: answers at once with the scan job; follow it under /jobs.

        Refused (409, naming the job) while a scan of the same tree, or of a directory above or
        below it, is pending or running: the second would redo the first's work.
        """
        return submit(services, "scan", body, errors_at=None)

    @blp.route("/videos")
    class Videos(MethodView):
        @blp.arguments(VideoListArgs(), location="query")
        @blp.response(200, VideoListSchema)
        def get(self, args: dict[str, Any]) -> dict[str, Any]:
            """Page through, search and sort the library."""
            found, total = library.search(**args)
            return {
                "videos": found,
                "total": total,
                "limit": args["limit"],
                "offset": args["offset"],
            }

    @blp.route("/videos/<int:video_id>")
    class Video(MethodView):
        @blp.response(200, VideoSchema)
        def get(self, video_id: int) -> dict[str, Any]:
            """One video."""
            video = library.get(video_id)
            if video is None:
                abort(404, message=f"no video has the id {video_id}")
            return video

        @blp.response(204)
        def delete(self, video_id: int) -> None:
            """Remove a video from the library (the file on disk is never touched)."""
            video = library.get(video_id)
            if video is None or not library.delete(video_id):
                abort(404, message=f"no video has the id {video_id}")
            services.plugins.call_each(
                "scanner_library_changed", added=[], updated=[], removed=[video], services=services
            )

    return blp
