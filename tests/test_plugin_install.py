"""A plugin written from nothing, installed with pip into a fresh virtual environment beside
the core, discovered by a real web process and consumer, and run through the API; next to it,
a plugin that fails to import and one that takes a name already taken."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import requests

from conftest import REPO, free_port, health, wait_until

PLUGIN = {
    "setup.cfg": """
        [metadata]
        name = scanner-shout
        version = 1.2.3

        [options]
        packages = find:
        install_requires = scanner>=0.1,<0.2

        [options.entry_points]
        scanner.plugins =
            shout = scanner_shout.plugin
    """,
    "scanner_shout/__init__.py": "",
    "scanner_shout/plugin.py": """
        from marshmallow import Schema, fields

        from scanner import JobType, hookimpl


        class Payload(Schema):
            text = fields.String(required=True)


        def shout(ctx, payload):
            ctx.progress(1, 1)
            return {"shout": payload["text"].upper()}


        @hookimpl
        def scanner_job_types():
            return [JobType("shout", shout, Payload)]
    """,
}


def minimal_plugin(name: str, entry: str, module: str) -> dict[str, str]:
    """The files of a plugin distribution ``scanner-<name>`` with one entry point, ``entry``,
    naming the module ``scanner_<name>.plugin`` whose text is ``module``."""
    return {
        "setup.cfg": f"""
            [metadata]
            name = scanner-{name}
            version = 0.0.1

            [options]
            packages = find:

            [options.entry_points]
            scanner.plugins =
                {entry} = scanner_{name}.plugin
        """,
        f"scanner_{name}/__init__.py": "",
        f"scanner_{name}/plugin.py": module,
    }


BROKEN = minimal_plugin("broken", "broken", "import a_module_that_does_not_exist\n")
TAKER = minimal_plugin(
    "taker",
    "zz-taker",
    """
        from scanner import JobType, hookimpl


        @hookimpl
        def scanner_job_types():
            return [JobType("shout", lambda ctx, payload: None)]
    """,
)
# Sorts before the core's "scan" plugin, and offers a type of that name: the core's own
# plugins load first, so this one is refused and scans go on working.
SCAN_TAKER = minimal_plugin(
    "aascan",
    "aa-scan",
    """
        from scanner import JobType, hookimpl


        @hookimpl
        def scanner_job_types():
            return [JobType("scan", lambda ctx, payload: None)]
    """,
)
# A second distribution under scanner-shout's entry-point name.
NAMESAKE = minimal_plugin("zdupe", "shout", "")
PYPROJECT = '[build-system]\nrequires = ["setuptools>=68", "wheel"]\n'
BUILD = 'build-backend = "setuptools.build_meta"\n'


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in {**files, "pyproject.toml": PYPROJECT + BUILD}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    return root


def test_a_plugin_from_nothing_to_a_finished_job(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    packages = [
        write(tmp_path / name, files)
        for name, files in (
            ("shout", PLUGIN),
            ("broken", BROKEN),
            ("taker", TAKER),
            ("aascan", SCAN_TAKER),
            ("zdupe", NAMESAKE),
        )
    ]
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(REPO), *map(str, packages)],
        check=True,
        timeout=600,
    )
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "SCANNER_DATA_DIR": str(tmp_path / "data"),
        "SCANNER_HEARTBEAT": "0.2s",
    }
    logs = (tmp_path / "web.log").open("wb"), (tmp_path / "consumer.log").open("wb")
    processes = [
        subprocess.Popen(
            [
                str(venv / "bin" / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "scanner.app:create_app()",
            ],
            env=env,
            stdout=logs[0],
            stderr=logs[0],
            cwd=tmp_path,
        ),
        subprocess.Popen(
            [
                str(venv / "bin" / "huey_consumer"),
                "scanner.worker.huey",
                "-w",
                "2",
                "-d",
                "0.01",
                "-m",
                "0.05",
            ],
            env=env,
            stdout=logs[1],
            stderr=logs[1],
            cwd=tmp_path,
        ),
    ]
    root = f"http://127.0.0.1:{port}"
    base = f"{root}/api/v1"
    try:
        wait_until(
            lambda: (h := health(root)) and h["consumers"]["alive"],
            timeout=60,
            what="web and consumer",
        )
        response = requests.post(
            f"{base}/jobs", json={"type": "shout", "payload": {"text": "hello"}}, timeout=5
        )
        assert response.status_code == 202, response.text
        job = requests.get(
            f"{base}/jobs/{response.json()['job_id']}/wait?timeout=30", timeout=40
        ).json()
        assert job["status"] == "complete" and job["result"] == {"shout": "HELLO"}

        plugins = {
            p["name"]: p for p in requests.get(f"{base}/plugins", timeout=5).json()["plugins"]
        }
        assert plugins["shout"]["distribution"] == "scanner-shout"
        assert plugins["shout"]["version"] == "1.2.3" and plugins["shout"]["job_types"] == ["shout"]
        assert plugins["broken"]["status"] == "failed"
        assert "No module named 'a_module_that_does_not_exist'" in plugins["broken"]["error"]
        assert plugins["zz-taker"]["error"] == "job type 'shout' is already registered"
        assert plugins["scan"]["status"] == "loaded" and plugins["scan"]["job_types"] == ["scan"]
        assert plugins["aa-scan"]["error"] == "job type 'scan' is already registered"
        namesake = plugins["shout (scanner-zdupe)"]
        assert namesake["error"] == (
            "its entry-point name 'shout' is taken by scanner-shout; rename one of them"
        )
        report = health(root)
        assert report is not None and report["status"] == "degraded"
        assert set(report["plugins"]["failed"]) == {
            "broken",
            "zz-taker",
            "aa-scan",
            "shout (scanner-zdupe)",
        }
    finally:
        for process in processes:
            process.terminate()
            process.wait(20)
    assert b"plugin broken could not be loaded" in (tmp_path / "consumer.log").read_bytes()
