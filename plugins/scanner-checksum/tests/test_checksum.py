"""scanner-checksum with scanner's pytest fixtures: real files, real store, real routes."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from flask.testing import FlaskClient

from scanner.services import Services


def make_video(path: Path, shade: int = 0) -> Path:
    """Half a second of real MJPEG in AVI, made with PyAV; ``shade`` changes the content."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for n in range(5):
            frame = av.VideoFrame(64, 48, "yuvj420p")
            for plane in frame.planes:
                plane.update(bytes([(shade + n * 30) % 256]) * plane.buffer_size)
            frame.pts, frame.time_base = n, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    make_video(root / "a.avi", shade=0)
    shutil.copy(root / "a.avi", root / "a-copy.avi")
    os.link(root / "a.avi", root / "a-link.avi")
    make_video(root / "b.avi", shade=100)
    return root


def run_queued(services: Services, run: Callable[..., Any]) -> list[Any]:
    """Run, here, the checksum jobs the scan queued."""
    jobs, _ = services.store.list_jobs(type="checksum")
    return [run("checksum", job.payload) for job in jobs]


def test_a_scan_queues_checksums_and_duplicates_are_listed(
    library: Path,
    scanner_run_job: Callable[..., Any],
    scanner_services: Services,
    scanner_client: FlaskClient,
) -> None:
    assert scanner_run_job("scan", {"path": str(library)}).result["new"] == 4
    (job,) = run_queued(scanner_services, scanner_run_job)
    assert job.status == "complete" and job.result == {"hashed": 4, "unchanged": 0, "errors": []}

    body = scanner_client.get("/api/v1/videos/duplicates").json
    assert body["total"] == 1
    (group,) = body["duplicates"]
    assert group["sha256"] == hashlib.sha256((library / "a.avi").read_bytes()).hexdigest()
    assert group["file_size"] == (library / "a.avi").stat().st_size
    assert [os.path.basename(v["path"]) for v in group["videos"]] == [
        "a-copy.avi",
        "a-link.avi",
        "a.avi",
    ]
    assert group["hard_linked"] is False  # a-copy.avi is a file of its own


def test_unchanged_files_are_not_hashed_again(
    library: Path, scanner_run_job: Callable[..., Any], scanner_services: Services
) -> None:
    scanner_run_job("scan", {"path": str(library)})
    (first,) = run_queued(scanner_services, scanner_run_job)
    ids = first.payload["video_ids"]
    again = scanner_run_job("checksum", {"video_ids": ids})
    assert again.result == {"hashed": 0, "unchanged": 4, "errors": []}


def test_removed_and_missing_videos_leave_the_listing(
    library: Path,
    scanner_run_job: Callable[..., Any],
    scanner_services: Services,
    scanner_client: FlaskClient,
) -> None:
    scanner_run_job("scan", {"path": str(library)})
    run_queued(scanner_services, scanner_run_job)
    os.unlink(library / "a-copy.avi")
    scanner_run_job("scan", {"path": str(library)})  # a-copy.avi is now missing
    (group,) = scanner_client.get("/api/v1/videos/duplicates").json["duplicates"]
    assert group["hard_linked"] is True and len(group["videos"]) == 2
    assert scanner_client.delete(f"/api/v1/videos/{group['videos'][0]['id']}").status_code == 204
    assert scanner_client.get("/api/v1/videos/duplicates").json == {"duplicates": [], "total": 0}


def test_the_listing_validates_and_is_documented(scanner_client: FlaskClient) -> None:
    assert scanner_client.get("/api/v1/videos/duplicates?limit=0").status_code == 422
    assert scanner_client.get(f"/api/v1/videos/duplicates?offset={2**63}").status_code == 422
    job = {"type": "checksum", "payload": {"video_ids": [2**31]}}  # no video id is so large
    assert scanner_client.post("/api/v1/jobs", json=job).status_code == 422
    assert "/api/v1/videos/duplicates" in scanner_client.get("/api/openapi.json").json["paths"]


def test_an_unreadable_file_is_an_error_not_a_failure(
    library: Path, scanner_run_job: Callable[..., Any], scanner_services: Services
) -> None:
    scanner_run_job("scan", {"path": str(library)})
    os.unlink(library / "b.avi")
    (job,) = run_queued(scanner_services, scanner_run_job)
    assert job.status == "complete" and job.result["hashed"] == 3
    assert job.result["errors"][0]["error"] == "No such file or directory"
