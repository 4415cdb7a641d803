"""scanner-thumbnails, tested the way any plugin can be: with scanner's pytest fixtures."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from flask.testing import FlaskClient
from PIL import Image
from scanner_thumbnails.plugin import make_thumbnail, thumbnail_path

from scanner.config import Settings
from scanner.services import Services, build_services
from scanner.testing import run_job


def make_video(path: Path, width: int = 480, height: int = 270) -> Path:
    """One second of real H.264 in MP4, made with PyAV."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for n in range(10):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([n * 20 % 256]) * plane.buffer_size)
            frame.pts, frame.time_base = n, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture
def video(tmp_path: Path, scanner_run_job: Callable[..., Any], scanner_services: Services) -> Any:
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "clip.mp4")
    assert scanner_run_job("scan", {"path": str(media)}).result["new"] == 1
    (found,), _ = scanner_services.library.search()
    return found


def test_the_job_writes_a_jpeg_320_wide(
    video: dict[str, Any], scanner_run_job: Callable[..., Any], scanner_services: Services
) -> None:
    job = scanner_run_job("thumbnail", {"video_ids": [video["id"]]})
    assert job.status == "complete"
    assert job.result == {"made": 1, "missing_videos": 0, "errors": []}
    with Image.open(thumbnail_path(scanner_services.settings, video["id"])) as image:
        assert image.format == "JPEG" and image.size == (320, 180)


def test_a_scan_queues_one_thumbnail_job_for_its_new_videos(
    video: dict[str, Any], scanner_services: Services
) -> None:
    jobs, total = scanner_services.store.list_jobs(type="thumbnail")
    assert total == 1 and jobs[0].payload == {"video_ids": [video["id"]]}


def test_automatic_thumbnails_can_be_turned_off(
    scanner_env: dict[str, str], tmp_path: Path
) -> None:
    services = build_services(Settings.from_env({**scanner_env, "SCANNER_THUMBNAILS_AUTO": "0"}))
    (tmp_path / "media").mkdir()
    make_video(tmp_path / "media" / "clip.mp4")
    assert run_job(services, "scan", {"path": str(tmp_path / "media")}).result["new"] == 1
    assert services.store.list_jobs(type="thumbnail")[1] == 0


def test_the_route_serves_it_and_explains_what_is_missing(
    video: dict[str, Any], scanner_client: FlaskClient, scanner_run_job: Callable[..., Any]
) -> None:
    url = f"/api/v1/videos/{video['id']}/thumbnail"
    before = scanner_client.get(url)
    assert before.status_code == 404 and "no thumbnail for video" in before.json["message"]
    assert (
        "no video has the id 999"
        in scanner_client.get("/api/v1/videos/999/thumbnail").json["message"]
    )
    assert scanner_client.get(f"/api/v1/videos/{2**31}/thumbnail").status_code == 404
    job = {"type": "thumbnail", "payload": {"video_ids": [2**31]}}
    assert scanner_client.post("/api/v1/jobs", json=job).status_code == 422
    scanner_run_job("thumbnail", {"video_ids": [video["id"]]})
    after = scanner_client.get(url)
    assert after.status_code == 200 and after.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(after.data)).size == (320, 180)
    spec = scanner_client.get("/api/openapi.json").json
    assert "/api/v1/videos/{video_id}/thumbnail" in spec["paths"]


def test_removing_a_video_removes_its_thumbnail(
    video: dict[str, Any],
    scanner_client: FlaskClient,
    scanner_run_job: Callable[..., Any],
    scanner_services: Services,
) -> None:
    scanner_run_job("thumbnail", {"video_ids": [video["id"]]})
    path = thumbnail_path(scanner_services.settings, video["id"])
    assert path.exists()
    assert scanner_client.delete(f"/api/v1/videos/{video['id']}").status_code == 204
    assert not path.exists()


def test_a_video_that_cannot_be_decoded_is_an_error_not_a_failure(
    video: dict[str, Any], scanner_run_job: Callable[..., Any]
) -> None:
    Path(video["path"]).write_bytes(b"not a video any more")
    job = scanner_run_job("thumbnail", {"video_ids": [video["id"], 424242]})
    assert job.status == "complete"
    assert job.result["made"] == 0 and job.result["missing_videos"] == 1
    assert job.result["errors"][0]["video_id"] == video["id"]


def test_jobs_thumbnailing_one_video_at_once_each_write_a_whole_file(
    video: dict[str, Any], scanner_services: Services
) -> None:
    # Two scans, or a scan and a request, can queue the same video: their workers must not
    # write into each other's unfinished file.
    target = thumbnail_path(scanner_services.settings, video["id"])
    with ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(lambda _: make_thumbnail(video, target, 0.1), range(40)))
    assert set(sizes) == {(320, 180)}
    with Image.open(target) as image:
        image.load()  # a torn file fails here
        assert image.size == (320, 180)
    assert [p.name for p in target.parent.iterdir()] == [target.name]
