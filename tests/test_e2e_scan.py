"""Scans submitted over the API (and the ``scanner`` command) and run by a real consumer."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from conftest import BIN, ConsumerProcess, ServiceProcess, free_port, health, procfile, wait_until
from media import make_slow_to_probe, make_slow_tree, make_truncated, make_video

VIDEOS = "/api/v1/videos"


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "films").mkdir(parents=True)
    make_video(root / "a.mp4")
    make_video(root / "films" / "b.mkv", container="mkv")
    make_video(root / "films" / "c.mov", container="mov")
    make_truncated(root / "broken.mp4")
    os.symlink(root, root / "films" / "loop")
    return root


def scan(client: FlaskClient, path: Path | str, **options: Any) -> dict[str, Any]:
    response = client.post(f"{VIDEOS}/scan", json={"path": str(path), **options})
    assert response.status_code == 202, response.json
    assert response.headers["Location"] == f"/api/v1/jobs/{response.json['job_id']}"
    job = client.get(f"{response.headers['Location']}/wait?timeout=30").json
    assert job["type"] == "scan"
    return job  # type: ignore[no-any-return]


def counts(job: dict[str, Any]) -> tuple[int, ...]:
    r = job["result"]
    return r["scanned"], r["new"], r["updated"], r["unchanged"], r["removed"]


def test_scan_rescan_modify_delete(
    client: FlaskClient, consumer: ConsumerProcess, media: Path
) -> None:
    job = scan(client, media)
    assert job["status"] == "complete" and job["progress"] == 1.0
    assert counts(job) == (4, 3, 0, 0, 0)
    assert job["result"]["errors"][0]["path"] == str(media / "broken.mp4")

    listing = client.get(f"{VIDEOS}?sort=path").json
    assert listing["total"] == 3
    assert [v["filename"] for v in listing["videos"]] == ["a.mp4", "b.mkv", "c.mov"]
    assert {v["container"] for v in listing["videos"]} == {"mp4", "matroska", "mov"}

    assert counts(scan(client, media)) == (4, 0, 0, 3, 0)

    make_video(media / "a.mp4", seconds=2)
    os.unlink(media / "films" / "c.mov")
    assert counts(scan(client, media)) == (3, 0, 1, 1, 1)  # broken.mp4 stays an error
    a = client.get(f"{VIDEOS}?q=A.MP4").json["videos"][0]
    assert a["duration_seconds"] == pytest.approx(2, abs=0.2)
    assert client.get(VIDEOS).json["total"] == 2
    assert client.get(f"{VIDEOS}?include_missing=true").json["total"] == 3


def test_get_and_delete_one_video_never_touch_the_file(
    client: FlaskClient, consumer: ConsumerProcess, media: Path
) -> None:
    scan(client, media)
    video = client.get(f"{VIDEOS}?q=b.mkv").json["videos"][0]
    assert client.get(f"{VIDEOS}/{video['id']}").json == video
    assert client.delete(f"{VIDEOS}/{video['id']}").status_code == 204
    assert client.get(f"{VIDEOS}/{video['id']}").status_code == 404
    assert client.delete(f"{VIDEOS}/{video['id']}").json["message"] == (
        f"no video has the id {video['id']}"
    )
    assert (media / "films" / "b.mkv").exists()


def test_video_listing_validates_its_arguments(client: FlaskClient) -> None:
    for query in ("limit=0", "offset=-1", "sort=size", "include_missing=maybe"):
        response = client.get(f"{VIDEOS}?{query}")
        assert response.status_code == 422 and response.json["errors"]["query"], query
    assert client.get(f"{VIDEOS}/abc").status_code == 404


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("relative/dir", "is not an absolute path"),
        ("/no/such/dir", "does not exist"),
        ("/etc/hostname", "is not a directory"),
        ("/tmp/a\u0000b", "NUL byte"),
    ],
)
def test_bad_scan_paths_are_refused_before_anything_is_queued(
    client: FlaskClient, path: str, message: str
) -> None:
    response = client.post(f"{VIDEOS}/scan", json={"path": path})
    assert response.status_code == 422
    assert message in response.json["errors"]["json"]["path"][0]
    assert message in response.json["message"]
    assert client.get("/api/v1/jobs").json["total"] == 0


def test_allowed_roots_bound_scans(env: dict[str, str], media: Path, tmp_path: Path) -> None:
    from scanner.app import create_app
    from scanner.config import Settings

    env["SCANNER_ALLOWED_ROOTS"] = str(media / "films")
    client = create_app(Settings.from_env(env)).test_client()
    response = client.post(f"{VIDEOS}/scan", json={"path": str(media)})
    assert response.status_code == 422
    assert "outside the allowed roots" in response.json["errors"]["json"]["path"][0]
    assert client.post(f"{VIDEOS}/scan", json={"path": str(media / "films")}).status_code == 202


def test_a_root_gone_by_run_time_fails_without_touching_the_library(
    client: FlaskClient, start_consumer: Callable[..., ConsumerProcess], media: Path, tmp_path: Path
) -> None:
    consumer = start_consumer()
    assert scan(client, media)["result"]["new"] == 3
    consumer.stop()
    response = client.post(f"{VIDEOS}/scan", json={"path": str(media)})
    shutil.move(media, tmp_path / "unmounted")
    start_consumer()
    job = client.get(f"/api/v1/jobs/{response.json['job_id']}/wait?timeout=20").json
    assert job["status"] == "failed"
    assert "does not exist (is the drive mounted?)" in job["error"]
    assert client.get(VIDEOS).json["total"] == 3  # nothing marked missing


def test_cancel_a_running_scan(
    client: FlaskClient,
    env: dict[str, str],
    start_consumer: Callable[..., ConsumerProcess],
    tmp_path: Path,
) -> None:
    root = make_slow_tree(tmp_path / "slow", 61)
    start_consumer()
    job_id = client.post(f"{VIDEOS}/scan", json={"path": str(root)}).json["job_id"]
    wait_until(
        lambda: (client.get(f"/api/v1/jobs/{job_id}").json["progress"] or 0) > 0,
        what="the scan to make progress",
    )
    assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
    # Generous: the probes in flight finish first, and a loaded machine is slow. That the
    # cancel stopped the scan early shows in how few files it read.
    response = client.get(f"/api/v1/jobs/{job_id}/wait?timeout=30")
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    listed = client.get(f"{VIDEOS}?limit=1000").json
    assert 0 < listed["total"] < 61
    assert len({v["path"] for v in listed["videos"]}) == listed["total"]


def test_a_probe_that_hangs_is_cut_off_and_reported(
    client: FlaskClient,
    env: dict[str, str],
    start_consumer: Callable[..., ConsumerProcess],
    media: Path,
) -> None:
    make_slow_to_probe(media / "slow.mp4")
    env["SCANNER_PROBE_TIMEOUT"] = "0.1s"
    start_consumer()
    job = scan(client, media)
    assert job["status"] == "complete" and job["result"]["new"] == 3
    errors = {e["path"]: e["error"] for e in job["result"]["errors"]}
    assert errors[str(media / "slow.mp4")] == "probe timed out after 0.1s"


def test_the_scanner_command_waits_and_reports(
    env: dict[str, str], start_service: Callable[..., ServiceProcess], media: Path
) -> None:
    port = free_port()
    commands = procfile()
    start_service(commands["web"], {**env, "PORT": str(port)})
    start_service(commands["worker"], env)
    url = f"http://127.0.0.1:{port}"

    wait_until(lambda: (health(url) or {}).get("status") == "ok", timeout=30, what="services")
    cli_env = {**os.environ, **env, "SCANNER_URL": url}
    done = subprocess.run(
        [str(BIN / "scanner"), "scan", str(media), "--wait"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("scanning")  # the bar's label; click draws a bar on a tty only
    assert "4 video files: 3 new, 0 updated, 0 unchanged, 0 removed, 0 moved" in done.stdout
    assert f"{media / 'broken.mp4'}: could not be read as a video" in done.stderr
    refused = subprocess.run(
        [str(BIN / "scanner"), "scan", "/no/such/dir"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "does not exist (is the drive mounted?)" in refused.stderr
    down = subprocess.run(
        [str(BIN / "scanner"), "--url", "http://127.0.0.1:1", "scan", str(media)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "cannot reach the service" in down.stderr
