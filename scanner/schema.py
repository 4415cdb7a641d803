"""Tables of the application database, and the migrations that build them.

The ``Table`` objects describe the newest schema and are what queries use. Migrations are
frozen history: each one states its own DDL, so changing a table later means adding a
migration, never editing one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

metadata = sa.MetaData()


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("progress", sa.Float),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("retry_delay", sa.Float, nullable=False),
    sa.Column("timeout", sa.Float),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("started_at", UtcDateTime()),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("next_attempt_at", UtcDateTime()),
    sa.Column("cancel_requested_at", UtcDateTime()),
    sa.Column("consumer", sa.String(200)),
)

consumers = sa.Table(
    "consumers",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("hostname", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("job_types", sa.JSON, nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen", UtcDateTime(), nullable=False),
)

videos = sa.Table(
    "videos",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("path", sa.Text, nullable=False, unique=True),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("file_size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("device", sa.BigInteger, nullable=False),
    sa.Column("inode", sa.BigInteger, nullable=False),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("frame_rate", sa.Float),
    sa.Column("video_codec", sa.String(50)),
    sa.Column("audio_codec", sa.String(50)),
    sa.Column("container", sa.String(50)),
    sa.Column("fingerprint", sa.String(32)),
    sa.Column("missing_since", UtcDateTime()),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


job_attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("outcome", sa.String(16)),
    sa.Column("error", sa.Text),
)


def _v1_initial(conn: Connection) -> None:
    """Jobs, consumer heartbeats and videos."""
    m = sa.MetaData()
    sa.Table(
        "jobs",
        m,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("progress", sa.Float),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("retry_delay", sa.Float, nullable=False),
        sa.Column("timeout", sa.Float),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime()),
        sa.Column("finished_at", UtcDateTime()),
        sa.Column("next_attempt_at", UtcDateTime()),
        sa.Column("cancel_requested_at", UtcDateTime()),
        sa.Column("consumer", sa.String(200)),
        sa.Index("ix_jobs_created", "created_at"),
        sa.Index("ix_jobs_status_created", "status", "created_at"),
        sa.Index("ix_jobs_type_created", "type", "created_at"),
    )
    sa.Table(
        "consumers",
        m,
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("job_types", sa.JSON, nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen", UtcDateTime(), nullable=False),
    )
    sa.Table(
        "videos",
        m,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("filename", sa.Text, nullable=False),
        sa.Column("file_size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("device", sa.BigInteger, nullable=False),
        sa.Column("inode", sa.BigInteger, nullable=False),
        sa.Column("duration_seconds", sa.Float),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("frame_rate", sa.Float),
        sa.Column("video_codec", sa.String(50)),
        sa.Column("audio_codec", sa.String(50)),
        sa.Column("container", sa.String(50)),
        sa.Column("fingerprint", sa.String(32)),
        sa.Column("missing_since", UtcDateTime()),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Index("ix_videos_filename", "filename"),
        sa.Index("ix_videos_device_inode", "device", "inode"),
    )
    m.create_all(conn)


def _v2_attempt_history(conn: Connection) -> None:
    """One row per attempt at a job: who ran it, when, and how it ended."""
    m = sa.MetaData()
    sa.Table(
        "job_attempts",
        m,
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime()),
        sa.Column("outcome", sa.String(16)),
        sa.Column("error", sa.Text),
    )
    m.create_all(conn)
    # Jobs already run before the upgrade get their latest attempt on record.
    conn.execute(
        sa.text(
            "INSERT INTO job_attempts (job_id, number, consumer, started_at, finished_at,"
            " outcome, error) SELECT id, attempts, COALESCE(consumer, 'unknown'), started_at,"
            " finished_at, CASE WHEN status IN ('complete', 'failed', 'timeout', 'cancelled')"
            " THEN status END, error FROM jobs WHERE attempts > 0 AND started_at IS NOT NULL"
        )
    )


def _v3_no_open_attempts(conn: Connection) -> None:
    """Attempts still open are dropped: a job's running attempt is read off its row.

    Code before this version wrote an attempt's row when it claimed the job and filled it in
    when the attempt ended. Today's writes a row only when an attempt ends, and only if the
    job row cannot tell it (a crash, a shutdown, a failure retried). A row left open the old
    way would collide with that one, or stay open under a finished job.
    """
    conn.execute(sa.text("DELETE FROM job_attempts WHERE finished_at IS NULL"))


def _v4_probe_sizeless_videos_again(conn: Connection) -> None:
    """Videos recorded with a codec but no size are probed again at their next scan.

    Code before this version recorded MPEG-4 Part 2 in MP4 or MOV, H.263 in 3GP and Sorenson
    Spark in FLV without width and height: their size is in the bitstream, which its probe
    never decoded. A scan probes a file again when its size or modification time differs
    from its row's, and -1 ns before 1970 is no file's modification time.
    """
    conn.execute(
        sa.text("UPDATE videos SET mtime_ns = -1 WHERE width IS NULL AND video_codec IS NOT NULL")
    )


MIGRATIONS = [
    _v1_initial,
    _v2_attempt_history,
    _v3_no_open_attempts,
    _v4_probe_sizeless_videos_again,
]
