from pathlib import Path

import pytest

from scanner.config import DEFAULT_VIDEO_EXTENSIONS, Settings
from scanner.errors import ConfigError


def test_defaults_live_under_the_data_directory(tmp_path: Path) -> None:
    s = Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path
    assert s.database_url == f"sqlite:///{tmp_path}/scanner.db"
    assert s.queue_url == f"sqlite:///{tmp_path}/queue.db"
    assert s.allowed_roots == ()
    assert s.api_token == ""
    assert s.video_extensions == DEFAULT_VIDEO_EXTENSIONS
    assert s.job_retention_seconds == 7 * 86400


def test_data_dir_defaults_to_var_in_the_working_directory() -> None:
    assert Settings.from_env({}).data_dir == Path("var").absolute()


def test_every_variable_is_read(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "SCANNER_DATA_DIR": str(tmp_path),
            "SCANNER_DATABASE_URL": "postgresql://localhost/scanner",
            "SCANNER_QUEUE_URL": "redis://localhost:6379/0",
            "SCANNER_ALLOWED_ROOTS": f"{tmp_path}/a::{tmp_path}/b",
            "SCANNER_API_TOKEN": "secret",
            "SCANNER_DISABLED_PLUGINS": "thumbnails, checksum",
            "SCANNER_VIDEO_EXTENSIONS": ".MP4,mkv",
            "SCANNER_JOB_RETENTION": "12h",
            "SCANNER_HEARTBEAT": "2",
            "SCANNER_PROBE_TIMEOUT": "1m",
        }
    )
    assert s.database_url == "postgresql://localhost/scanner"
    assert s.queue_url == "redis://localhost:6379/0"
    assert s.allowed_roots == (tmp_path / "a", tmp_path / "b")
    assert s.api_token == "secret"
    assert s.disabled_plugins == {"thumbnails", "checksum"}
    assert s.video_extensions == {"mp4", "mkv"}
    assert s.job_retention_seconds == 12 * 3600
    assert s.heartbeat_seconds == 2
    assert s.probe_timeout_seconds == 60


@pytest.mark.parametrize("value", ["soon", "-5s", "7 days", "nan", "inf", "1e400s"])
def test_bad_durations_name_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="SCANNER_JOB_RETENTION"):
        Settings.from_env({"SCANNER_JOB_RETENTION": value})


def test_a_database_url_or_data_directory_that_cannot_be_is_named(tmp_path: Path) -> None:
    for url in ("garbage", "postgresql://u:p@dbhost:54x2/db"):  # the port is no number
        with pytest.raises(ConfigError, match=f"SCANNER_DATABASE_URL='{url}': not a database"):
            Settings.from_env({"SCANNER_DATABASE_URL": url})
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"SCANNER_DATA_DIR=.*a-file': not a directory"):
        Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path / "a-file")})


@pytest.mark.parametrize("name", ["SCANNER_HEARTBEAT", "SCANNER_PROBE_TIMEOUT"])
def test_intervals_must_be_more_than_zero(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}='0s': must be more than zero"):
        Settings.from_env({name: "0s"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("1", True), ("yes", True), ("0", False), ("Off", False)],
)
def test_flags_for_plugins_read_any_scanner_variable(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"SCANNER_SOMETHING_AUTO": value}
    assert Settings.from_env(env).flag("SCANNER_SOMETHING_AUTO") is expected
    assert Settings.from_env(env).flag("SCANNER_SOMETHING_AUTO", default=False) is (
        expected and value not in (None, "")
    )
