"""Settings, read from SCANNER_* environment variables in this one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from scanner.errors import ConfigError


def _sqlite_url(path: Path) -> str:
    """``sqlite:///path``, with the characters a URL gives a meaning (``?``, ``#``, ``%``)
    escaped, so a data directory may be named anything."""
    return sa.URL.create("sqlite", database=str(path)).render_as_string()


DEFAULT_VIDEO_EXTENSIONS = frozenset(
    [
        "mp4",
        "m4v",
        "mkv",
        "webm",
        "mov",
        "avi",
        "mpg",
        "mpeg",
        "ts",
        "m2ts",
        "mts",
        "wmv",
        "flv",
        "3gp",
        "ogv",
        "vob",
    ]
)


def _seconds(value: str, name: str) -> float:
    """Parse a duration such as ``30``, ``90s``, ``15m``, ``12h`` or ``7d`` into seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    factor = units.get(text[-1:])
    number = text[:-1] if factor else text
    try:
        seconds = float(number) * (factor or 1)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):  # nan, inf and 1e400 parse as floats
        raise ConfigError(f"{name}={value!r}: expected a duration such as 30s, 15m or 7d")
    if seconds < 0:
        raise ConfigError(f"{name}={value!r}: a duration cannot be negative")
    return seconds


def _positive_seconds(value: str, name: str) -> float:
    seconds = _seconds(value, name)
    if seconds == 0:
        raise ConfigError(f"{name}={value!r}: must be more than zero")
    return seconds


@dataclass(frozen=True)
class Settings:
    """Everything the web process and the consumers need to know, passed in explicitly."""

    data_dir: Path
    database_url: str
    queue_url: str
    allowed_roots: tuple[Path, ...] = ()
    api_token: str = ""
    disabled_plugins: frozenset[str] = frozenset()
    video_extensions: frozenset[str] = DEFAULT_VIDEO_EXTENSIONS
    job_retention_seconds: float = 7 * 86400
    heartbeat_seconds: float = 5.0
    probe_timeout_seconds: float = 10.0
    extra: Mapping[str, str] = field(default_factory=dict)

    def flag(self, name: str, default: bool = True) -> bool:
        """An on/off ``SCANNER_*`` variable (a plugin's own, say): 0, false, no or off is off."""
        value = self.extra.get(name, "").strip().lower()
        return default if not value else value not in ("0", "false", "no", "off")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("SCANNER_DATA_DIR") or "./var").absolute()
        if data_dir.exists() and not data_dir.is_dir():
            raise ConfigError(f"SCANNER_DATA_DIR={str(data_dir)!r}: not a directory")
        roots = env.get("SCANNER_ALLOWED_ROOTS", "")
        extensions = env.get("SCANNER_VIDEO_EXTENSIONS", "")
        database_url = env.get("SCANNER_DATABASE_URL") or _sqlite_url(data_dir / "scanner.db")
        try:
            sa.make_url(database_url)
        except (sa.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
            raise ConfigError(
                f"SCANNER_DATABASE_URL={database_url!r}: not a database URL; "
                "use sqlite:///path/scanner.db or postgresql://user@host/db"
            ) from None
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            queue_url=env.get("SCANNER_QUEUE_URL") or _sqlite_url(data_dir / "queue.db"),
            allowed_roots=tuple(Path(r).resolve() for r in roots.split(":") if r),
            api_token=env.get("SCANNER_API_TOKEN", ""),
            disabled_plugins=frozenset(
                n.strip() for n in env.get("SCANNER_DISABLED_PLUGINS", "").split(",") if n.strip()
            ),
            video_extensions=frozenset(
                e.strip().lower().lstrip(".") for e in extensions.split(",") if e.strip()
            )
            or DEFAULT_VIDEO_EXTENSIONS,
            job_retention_seconds=_seconds(
                env.get("SCANNER_JOB_RETENTION") or "7d", "SCANNER_JOB_RETENTION"
            ),
            heartbeat_seconds=_positive_seconds(
                env.get("SCANNER_HEARTBEAT") or "5s", "SCANNER_HEARTBEAT"
            ),
            probe_timeout_seconds=_positive_seconds(
                env.get("SCANNER_PROBE_TIMEOUT") or "10s", "SCANNER_PROBE_TIMEOUT"
            ),
            extra={k: v for k, v in env.items() if k.startswith("SCANNER_")},
        )
