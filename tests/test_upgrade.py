"""An upgrade keeps every job and video: a database made at schema version 1, opened by
today's code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from scanner.app import create_app
from scanner.config import Settings
from scanner.db import create_engine, migrate, schema_version
from scanner.schema import MIGRATIONS
from scanner.services import build_services
from scanner.testing import run_job

from media import make_video

V1_JOB = (
    "INSERT INTO jobs (id, type, status, payload, progress, result, error, attempts, retries,"
    " retry_delay, timeout, priority, created_at, updated_at, started_at, finished_at,"
    " next_attempt_at, cancel_requested_at, consumer) VALUES"
    " (:id, 'echo', :status, '{\"text\": \"old\"}', :progress, :result, NULL, :attempts, 0,"
    " 0.0, NULL, 0, '2026-01-01 10:00:00', '2026-01-01 10:00:05', :started, :finished, NULL,"
    " NULL, :consumer)"
)


def insert_old_job(conn: Any, id: str, status: str, **values: Any) -> None:
    """A job row as older code wrote it: not run unless ``values`` say otherwise."""
    row = dict(progress=None, result=None, attempts=0, started=None, finished=None, consumer=None)
    conn.exec_driver_sql(V1_JOB, {**row, **values, "id": id, "status": status})


V1_VIDEO = (
    "INSERT INTO videos (path, filename, file_size, mtime_ns, device, inode, duration_seconds,"
    " width, height, frame_rate, video_codec, audio_codec, container, fingerprint,"
    " missing_since, created_at, updated_at) VALUES ('/media/old.mp4', 'old.mp4', 1234, 1, 1,"
    " 1, 60.0, 1920, 1080, 25.0, 'h264', 'aac', 'mp4', 'abc', NULL, '2026-01-01 10:00:00',"
    " '2026-01-01 10:00:00')"
)


def make_v1_data_dir(data_dir: Path) -> None:
    engine = create_engine(f"sqlite:///{data_dir}/scanner.db")
    assert migrate(engine, MIGRATIONS[:1]) == 1
    with engine.begin() as conn:
        insert_old_job(
            conn,
            "done",
            "complete",
            progress=1.0,
            result='{"echo": "old"}',
            attempts=1,
            started="2026-01-01 10:00:01",
            finished="2026-01-01 10:00:05",
            consumer="oldhost:42",
        )
        insert_old_job(conn, "waiting", "pending")
        conn.exec_driver_sql(V1_VIDEO)
    engine.dispose()


def test_a_version_1_data_directory_is_migrated_in_place(tmp_path: Path) -> None:
    make_v1_data_dir(tmp_path)
    client = create_app(Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path)})).test_client()

    engine = create_engine(f"sqlite:///{tmp_path}/scanner.db")
    assert schema_version(engine) == len(MIGRATIONS)
    done = client.get("/api/v1/jobs/done").json
    assert done["status"] == "complete" and done["result"] == {"echo": "old"}
    assert done["created_at"] == "2026-01-01T10:00:00+00:00"
    assert [(a["number"], a["consumer"], a["outcome"]) for a in done["history"]] == [
        (1, "oldhost:42", "complete")
    ]
    waiting = client.get("/api/v1/jobs/waiting").json
    assert waiting["status"] == "pending" and waiting["history"] == []
    assert client.get("/api/v1/jobs").json["total"] == 2
    video = client.get("/api/v1/videos").json["videos"][0]
    assert (video["path"], video["width"], video["video_codec"]) == ("/media/old.mp4", 1920, "h264")
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert "job_attempts" in tables


def test_an_attempt_left_open_by_version_2_code_can_end(tmp_path: Path) -> None:
    """Code at schema version 2 wrote an attempt's row when it claimed the job; today's writes
    it when the attempt ends otherwise than the job row tells, as when its consumer died."""
    engine = create_engine(f"sqlite:///{tmp_path}/scanner.db")
    assert migrate(engine, MIGRATIONS[:2]) == 2
    with engine.begin() as conn:
        insert_old_job(
            conn,
            "running",
            "running",
            progress=0.5,
            attempts=1,
            started="2026-01-01 10:00:01",
            consumer="oldhost:42:abcd1234",
        )
        conn.exec_driver_sql(
            "INSERT INTO job_attempts (job_id, number, consumer, started_at) VALUES"
            " ('running', 1, 'oldhost:42:abcd1234', '2026-01-01 10:00:01')"
        )
    engine.dispose()
    services = build_services(Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path)}))

    job, history = services.store.detail("running")
    assert [(a["number"], a["outcome"]) for a in history] == [(1, None)]
    assert services.store.release("running", "oldhost:42:abcd1234", "crashed", "it died")
    job, history = services.store.detail("running")
    assert job.status == "pending"
    assert [(a["number"], a["outcome"], a["error"]) for a in history] == [(1, "crashed", "it died")]


def test_videos_recorded_without_a_size_by_version_3_code_are_probed_again(
    tmp_path: Path,
) -> None:
    """Version 3 code probed MPEG-4 Part 2 in MP4 (and H.263, Sorenson Spark) without their
    size, and a rescan of the unchanged file would never read it again."""
    media = tmp_path / "media"
    media.mkdir()
    clip = make_video(media / "xvid.mp4", video_codec="mpeg4", width=96, height=64)
    st = clip.stat()
    engine = create_engine(f"sqlite:///{tmp_path}/scanner.db")
    assert migrate(engine, MIGRATIONS[:3]) == 3
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO videos (path, filename, file_size, mtime_ns, device, inode,"
                " duration_seconds, width, height, frame_rate, video_codec, audio_codec,"
                " container, fingerprint, missing_since, created_at, updated_at) VALUES"
                " (:path, 'xvid.mp4', :size, :mtime, :device, :inode, 1.0, NULL, NULL, 10.0,"
                " 'mpeg4', 'aac', 'mp4', NULL, NULL, '2026-01-01 10:00:00',"
                " '2026-01-01 10:00:00')"
            ),
            {
                "path": str(clip),
                "size": st.st_size,
                "mtime": st.st_mtime_ns,
                "device": st.st_dev,
                "inode": st.st_ino,
            },
        )
    engine.dispose()
    services = build_services(Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path)}))

    result = run_job(services, "scan", {"path": str(media)}).result
    assert (result["updated"], result["unchanged"]) == (1, 0)
    (video,), _ = services.library.search()
    assert (video["width"], video["height"]) == (96, 64)
    assert run_job(services, "scan", {"path": str(media)}).result["unchanged"] == 1
