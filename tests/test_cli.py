"""The ``scanner`` command's local subcommands (the HTTP ones run in test_e2e_scan)."""

from __future__ import annotations

import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from scanner.app import create_app
from scanner.cli import main
from scanner.config import Settings
from scanner.services import Services, build_services


def test_plugins_lists_what_is_installed(env: dict[str, str]) -> None:
    env["SCANNER_DISABLED_PLUGINS"] = "nothing-by-this-name"
    result = CliRunner().invoke(main, ["plugins"], env=env)
    assert result.exit_code == 0, result.output
    assert "diagnostics  [loaded]  scanner-diagnostics 0.1.0" in result.output
    assert "  job types: echo, sleep, fail, noop" in result.output
    assert "scan  [loaded]  scanner 0.1.0" in result.output
    assert "nothing-by-this-name  [disabled by SCANNER_DISABLED_PLUGINS]" in result.output


def test_backup_copies_a_consistent_database_and_queue(
    env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    job = services.jobs.submit("echo", {"text": "keep me"})
    result = CliRunner().invoke(main, ["backup", str(tmp_path / "copy")], env=env)
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'copy' / 'scanner.db'}" in result.output
    for name in ("scanner.db", "queue.db"):
        assert (tmp_path / "copy" / name).stat().st_mode & 0o777 == 0o600  # private
        with sqlite3.connect(tmp_path / "copy" / name) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    restored = create_app(Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path / "copy")}))
    copy = restored.test_client().get(f"/api/v1/jobs/{job.id}").json
    assert copy["payload"] == {"text": "keep me"} and copy["status"] == "pending"
    assert restored.extensions["scanner"].queue.pending_count() == 1


def test_a_data_directory_named_with_url_characters_is_used_and_backed_up(
    tmp_path: Path,
) -> None:
    env = {"SCANNER_DATA_DIR": str(tmp_path / "data #1?%41")}  # ?, # and % mean things in URLs
    services = build_services(Settings.from_env(env))
    services.jobs.submit("echo", {"text": "keep me"})
    assert {"queue.db", "scanner.db"} <= {p.name for p in (tmp_path / "data #1?%41").iterdir()}
    result = CliRunner().invoke(main, ["backup", str(tmp_path / "copy")], env=env)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "copy" / "scanner.db") as conn:
        assert conn.execute("SELECT payload FROM jobs").fetchall() == [('{"text": "keep me"}',)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "data #1?%41"]


def test_backup_explains_what_it_cannot_copy(env: dict[str, str], tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["backup", str(tmp_path / "x")], env=env)
    assert missing.exit_code == 1 and "does not exist; is SCANNER_DATA_DIR right?" in missing.output
    env["SCANNER_DATABASE_URL"] = "postgresql://localhost/scanner"
    remote = CliRunner().invoke(main, ["backup", str(tmp_path / "x")], env=env)
    assert remote.exit_code == 1 and "pg_dump" in remote.output


def test_backup_into_a_place_it_cannot_write_says_so(
    env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(main, ["backup", str(tmp_path / "a-file" / "copy")], env=env)
    assert result.exit_code == 1 and not isinstance(result.exception, OSError)
    assert f"Error: could not back up into {tmp_path / 'a-file' / 'copy'}: " in result.output


class Proxy(BaseHTTPRequestHandler):
    """What answers when a proxy stands where the service should: an HTML 502."""

    def do_POST(self) -> None:
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_answers_not_from_the_service_are_explained_not_a_traceback(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        proxied = CliRunner().invoke(main, ["--url", f"http://127.0.0.1:{port}", "scan", "/x"])
        assert proxied.exit_code == 1 and isinstance(proxied.exception, SystemExit)
        assert "answered 502 Bad Gateway, not with JSON; is SCANNER_URL the service?" in (
            proxied.output
        )
        no_scheme = CliRunner().invoke(main, ["--url", f"127.0.0.1:{port}", "scan", "/x"])
        assert no_scheme.exit_code == 1 and isinstance(no_scheme.exception, SystemExit)
        assert "check SCANNER_URL" in no_scheme.output
    finally:
        server.shutdown()


def test_plugins_names_a_malformed_setting(env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["plugins"], env={**env, "SCANNER_HEARTBEAT": "nan"})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Error: SCANNER_HEARTBEAT='nan': expected a duration" in result.output
