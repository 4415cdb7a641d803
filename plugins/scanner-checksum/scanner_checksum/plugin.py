"""Checksums: a ``checksum`` job type (SHA-256 of each video's content, in this plugin's own
table) and ``GET /api/v1/videos/duplicates``. Built only on scanner's public plugin API."""

from __future__ import annotations

import hashlib
from itertools import groupby
from typing import Any

import sqlalchemy as sa
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from scanner import JobContext, JobType, Services, hookimpl
from scanner.api import LARGEST_ID, LARGEST_OFFSET

CHUNK = 1 << 20
BATCH = 1000

metadata = sa.MetaData()
checksums = sa.Table(
    "checksums",
    metadata,
    sa.Column("video_id", sa.Integer, primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("file_size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
)


class ChecksumPayload(Schema):
    video_ids = fields.List(
        fields.Integer(validate=validate.Range(1, LARGEST_ID)),
        required=True,
        validate=validate.Length(min=1, max=BATCH),
    )


def sha256(path: str, ctx: JobContext) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            ctx.check()  # a cancel or a shutdown stops even a huge file
    return digest.hexdigest()


def compute(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    engine = ctx.services.engine
    ids = payload["video_ids"]
    with engine.connect() as conn:
        done = {
            r.video_id: r
            for r in conn.execute(checksums.select().where(checksums.c.video_id.in_(ids)))
        }
    hashed, unchanged, errors = 0, 0, []
    for n, video in enumerate(ctx.services.library.by_ids(ids), start=1):
        old = done.get(video["id"])
        if old and (old.file_size, old.mtime_ns) == (video["file_size"], video["mtime_ns"]):
            unchanged += 1
        else:
            try:
                row = {
                    "video_id": video["id"],
                    "sha256": sha256(video["path"], ctx),
                    "file_size": video["file_size"],
                    "mtime_ns": video["mtime_ns"],
                }
            except OSError as exc:
                errors.append({"video_id": video["id"], "error": exc.strerror or str(exc)})
            else:
                with engine.begin() as conn:
                    conn.execute(checksums.delete().where(checksums.c.video_id == video["id"]))
                    conn.execute(checksums.insert().values(row))
                hashed += 1
        ctx.progress(n, len(ids))
    return {"hashed": hashed, "unchanged": unchanged, "errors": errors}


@hookimpl
def scanner_job_types() -> list[JobType]:
    return [
        JobType(
            "checksum",
            compute,
            ChecksumPayload,
            description="SHA-256 of each video's content, for finding duplicates.",
            priority=-2,
        )
    ]


@hookimpl
def scanner_startup(services: Services) -> None:
    metadata.create_all(services.engine, checkfirst=True)


@hookimpl
def scanner_library_changed(
    added: list[dict[str, Any]],
    updated: list[dict[str, Any]],
    removed: list[dict[str, Any]],
    services: Services,
) -> None:
    changed = [video["id"] for video in added + updated]
    if changed and services.settings.flag("SCANNER_CHECKSUM_AUTO"):
        services.jobs.submit("checksum", {"video_ids": changed})
    if removed:
        with services.engine.begin() as conn:
            conn.execute(
                checksums.delete().where(checksums.c.video_id.in_([v["id"] for v in removed]))
            )


class DuplicatesArgs(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, LARGEST_OFFSET))


class DuplicateVideo(Schema):
    id = fields.Integer()
    path = fields.String()


class DuplicateGroup(Schema):
    sha256 = fields.String()
    file_size = fields.Integer()
    hard_linked = fields.Boolean(metadata={"description": "Every path is one file on disk."})
    videos = fields.List(fields.Nested(DuplicateVideo))


class Duplicates(Schema):
    duplicates = fields.List(fields.Nested(DuplicateGroup))
    total = fields.Integer(metadata={"description": "Groups in all."})


@hookimpl
def scanner_blueprints(services: Services) -> list[Blueprint]:
    blp = Blueprint("checksum", __name__, description="Duplicate videos (scanner-checksum).")
    videos = sa.table(
        "videos",
        sa.column("id"),
        sa.column("path"),
        sa.column("device"),
        sa.column("inode"),
        sa.column("missing_since"),
    )

    @blp.route("/videos/duplicates")
    @blp.arguments(DuplicatesArgs(), location="query")
    @blp.response(200, Duplicates)
    def duplicates(args: dict[str, Any]) -> dict[str, Any]:
        """Videos in the library whose content is the same, largest first."""
        present = (
            sa.select(checksums.c.sha256, checksums.c.file_size, videos.c.id)
            .join(videos, videos.c.id == checksums.c.video_id)
            .where(videos.c.missing_since.is_(None))
            .subquery()
        )
        groups = (
            sa.select(present.c.sha256, present.c.file_size)
            .group_by(present.c.sha256, present.c.file_size)
            .having(sa.func.count() > 1)
        )
        with services.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(groups.subquery())).scalar()
            page = conn.execute(
                groups.order_by(present.c.file_size.desc(), present.c.sha256)
                .limit(args["limit"])
                .offset(args["offset"])
            ).all()
            members = conn.execute(
                sa.select(
                    checksums.c.sha256, videos.c.id, videos.c.path, videos.c.device, videos.c.inode
                )
                .join(videos, videos.c.id == checksums.c.video_id)
                .where(
                    checksums.c.sha256.in_([g.sha256 for g in page]),
                    videos.c.missing_since.is_(None),
                )
                .order_by(checksums.c.sha256, videos.c.path)
            ).all()
        by_hash = {h: list(rows) for h, rows in groupby(members, key=lambda r: r.sha256)}
        return {
            "duplicates": [
                {
                    "sha256": g.sha256,
                    "file_size": g.file_size,
                    "hard_linked": len({(r.device, r.inode) for r in by_hash[g.sha256]}) == 1,
                    "videos": [{"id": r.id, "path": r.path} for r in by_hash[g.sha256]],
                }
                for g in page
            ],
            "total": total,
        }

    return [blp]
