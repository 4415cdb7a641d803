"""Online back-up of the SQLite files, with SQLite's own backup API.

The copy is consistent even while the web and consumers write: SQLite copies pages and
restarts the copy of any page a writer changes meanwhile.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy import make_url

from scanner.config import Settings
from scanner.errors import ConfigError


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or None for any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def backup(settings: Settings, destination: Path) -> list[Path]:
    """Copy the database and the queue (where they are SQLite files) into ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for url, variable in (
        (settings.database_url, "SCANNER_DATABASE_URL"),
        (settings.queue_url, "SCANNER_QUEUE_URL"),
    ):
        source = sqlite_path(url)
        if source is None:
            raise ConfigError(
                f"{variable} is not a SQLite file; back it up with its server's tools "
                "(pg_dump for PostgreSQL; Redis keeps only queued messages)"
            )
        if not source.exists():
            raise ConfigError(f"{source} does not exist; is SCANNER_DATA_DIR right?")
        target = destination / source.name
        # Readable by its owner only, as the database should be: it holds every job's payload
        # and every video's path. (chmod too: an older copy may be there with other modes.)
        target.touch(mode=0o600)
        target.chmod(0o600)
        with (
            closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src,
            closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
        written.append(target)
    return written
