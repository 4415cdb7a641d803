"""One test per hook, with a real plugin registered for it; and the meta-tests that fail
when a hook is added without a test here or a section in docs/plugins.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from flask_smorest import Blueprint

import scanner.services
from scanner import JobContext, JobType, ProbeError, VideoInfo
from scanner.app import create_app
from scanner.config import Settings
from scanner.jobs.states import Status
from scanner.plugins import hookspecs
from scanner.services import Services, build_services
from scanner.testing import run_job
from scanner.worker import create_consumer

from conftest import fake_plugin, services_with
from media import make_video

REPO = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("scanner_"))


def test_hook_scanner_job_types(settings: Settings) -> None:
    def shout(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        return {"loud": payload.get("text", "").upper(), "data_dir": str(ctx.settings.data_dir)}

    seen: list[Settings] = []

    def job_types(settings: Settings) -> list[JobType]:
        seen.append(settings)
        return [JobType("shout", shout)]

    services = services_with(settings, scanner_job_types=job_types)
    assert seen == [settings]
    job = run_job(services, "shout", {})
    assert job.status is Status.COMPLETE and job.result["loud"] == ""


def test_hook_scanner_startup(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Services]] = []
    plugin = fake_plugin(scanner_startup=lambda role, services: calls.append((role, services)))
    installed = scanner.services.get_plugin_manager
    # The plugin joins the installed ones wherever a process loads them.
    monkeypatch.setattr(
        scanner.services,
        "get_plugin_manager",
        lambda settings, **options: installed(settings, extra=[("startup", plugin)], **options),
    )
    app = create_app(settings)
    consumer = create_consumer(settings)
    script = build_services(settings)
    assert calls == [
        ("web", app.extensions["scanner"]),
        ("consumer", consumer),
        ("script", script),
    ]


def test_hook_scanner_probe(settings: Settings, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "real.mp4")
    (media / "special.mkv").write_bytes(b"a format only the plugin reads")
    (media / "refused.mkv").write_bytes(b"something the plugin refuses")

    def probe(path: str, timeout: float) -> VideoInfo | None:
        if path.endswith("special.mkv"):
            return VideoInfo(12.5, 1, 1, 25.0, "special", None, "special")
        if path.endswith("refused.mkv"):
            raise ProbeError("the plugin says no")
        return None  # everything else: the built-in PyAV probe

    services = services_with(settings, scanner_probe=probe)
    result = run_job(services, "scan", {"path": str(media)}).result
    assert (result["new"], result["errors"]) == (
        2,
        [{"path": str(media / "refused.mkv"), "error": "the plugin says no"}],
    )
    videos = {v["filename"]: v for v in services.library.search()[0]}
    assert videos["special.mkv"]["video_codec"] == "special"
    assert videos["real.mp4"]["video_codec"] == "h264"


def test_a_probe_plugin_that_crashes_costs_only_that_file(
    settings: Settings, tmp_path: Path
) -> None:
    make_video(tmp_path / "a.mp4")

    def probe(path: str, timeout: float) -> VideoInfo | None:
        raise RuntimeError("plugin bug")

    services = services_with(settings, scanner_probe=probe)
    job = run_job(services, "scan", {"path": str(tmp_path)})
    assert job.status is Status.COMPLETE
    assert job.result["errors"][0]["error"] == "the probe failed: RuntimeError: plugin bug"


def test_hook_scanner_library_changed(settings: Settings, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr("scanner.library.scan.BATCH", 2)  # several batches from three files
    media = tmp_path / "media"
    media.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_video(media / name)
    events: list[tuple[list[str], list[str], list[str]]] = []

    def changed(added: Any, updated: Any, removed: Any, services: Services) -> None:
        events.append(tuple(sorted(v["filename"] for v in vs) for vs in (added, updated, removed)))

    services = services_with(settings, scanner_library_changed=changed)
    run_job(services, "scan", {"path": str(media)})
    assert sorted(name for added, _, _ in events for name in added) == ["a.mp4", "b.mp4", "c.mp4"]
    assert len(events) == 2
    events.clear()
    make_video(media / "a.mp4", seconds=2)
    (media / "c.mp4").unlink()
    run_job(services, "scan", {"path": str(media)})
    assert events == [([], ["a.mp4"], []), ([], [], ["c.mp4"])]
    events.clear()
    video = next(v for v in services.library.search()[0] if v["filename"] == "b.mp4")
    create_app(services=services).test_client().delete(f"/api/v1/videos/{video['id']}")
    assert events == [([], [], ["b.mp4"])]


def test_a_hook_that_raises_while_the_service_runs_leaves_its_plugin_loaded(
    settings: Settings, tmp_path: Path
) -> None:
    make_video(tmp_path / "a.mp4")
    calls: list[str] = []

    def finished(root: str, result: dict[str, Any]) -> None:
        calls.append(root)
        raise RuntimeError(f"database is locked ({len(calls)})")

    services = services_with(settings, "flaky", scanner_scan_finished=finished)
    client = create_app(services=services).test_client()
    for _ in range(2):
        assert run_job(services, "scan", {"path": str(tmp_path)}).status == "complete"
    flaky = next(p for p in client.get("/api/v1/plugins").json["plugins"] if p["name"] == "flaky")
    assert (flaky["status"], flaky["error"]) == ("loaded", None)
    latest = "scanner_scan_finished raised RuntimeError: database is locked (2)"
    assert flaky["last_error"] == latest  # the latest alone, not every one so far
    assert client.get("/api/v1/health").json["plugins"]["failed"] == {}


def test_hook_scanner_scan_finished(settings: Settings, tmp_path: Path) -> None:
    make_video(tmp_path / "a.mp4")
    finished: list[tuple[str, dict[str, Any]]] = []
    services = services_with(
        settings, scanner_scan_finished=lambda root, result: finished.append((root, result))
    )
    job = run_job(services, "scan", {"path": str(tmp_path)})
    assert finished == [(str(tmp_path), job.result)]


def test_hook_scanner_blueprints(settings: Settings) -> None:
    blp = Blueprint("hello", __name__, description="A plugin's own routes.")

    @blp.route("/hello")
    @blp.response(200)
    def hello() -> dict[str, str]:
        """Say hello."""
        return {"hello": "world"}

    services = services_with(settings, scanner_blueprints=lambda services: [blp])
    client = create_app(services=services).test_client()
    assert client.get("/api/v1/hello").json == {"hello": "world"}
    assert "/api/v1/hello" in client.get("/api/openapi.json").json["paths"]

    clash = Blueprint("jobs", __name__)  # the core's own name: refused, reported
    services = services_with(settings, scanner_blueprints=lambda services: [blp, clash])
    client = create_app(services=services).test_client()
    error = services.plugins.infos["test-plugin"].error or ""
    assert "its blueprint could not be registered: the name 'jobs' is taken" in error
    assert client.get("/api/v1/hello").status_code == 404  # none of a failed plugin's routes
    assert client.get("/api/v1/jobs").status_code == 200  # and the core's stand

    twice = services_with(settings, scanner_blueprints=lambda services: [blp, blp])
    client = create_app(services=twice).test_client()
    assert "the name 'hello' is taken" in (twice.plugins.infos["test-plugin"].error or "")
    assert client.get("/api/v1/hello").status_code == 404

    single = services_with(settings, scanner_blueprints=lambda services: blp)  # not a list
    client = create_app(services=single).test_client()
    assert "returned <Blueprint" in (single.plugins.infos["test-plugin"].error or "")
    assert client.get("/api/v1/jobs").status_code == 200  # the app was built and serves


def test_every_hook_has_a_test_here() -> None:
    tests = {name for name in dir(sys.modules[__name__]) if name.startswith("test_hook_")}
    missing = [hook for hook in HOOKS if f"test_hook_{hook}" not in tests]
    assert not missing, f"hooks without a test_hook_<name> in tests/test_hooks.py: {missing}"


def test_every_hook_has_a_section_in_the_plugin_guide() -> None:
    guide = (REPO / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^#+ `(scanner_\w+)", guide, flags=re.MULTILINE))
    missing = [hook for hook in HOOKS if hook not in headings]
    assert not missing, f"hooks without a section in docs/plugins.md: {missing}"
    unknown = sorted(headings - set(HOOKS))
    assert not unknown, f"docs/plugins.md documents hooks that do not exist: {unknown}"
