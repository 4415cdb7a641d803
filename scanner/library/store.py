"""The videos table: bulk reads and batched writes for scans, lookups for the API."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from scanner.db import write
from scanner.jobs.store import utcnow
from scanner.schema import videos

SORTABLE = ("path", "filename", "file_size", "duration_seconds", "created_at", "updated_at", "id")


class Known(NamedTuple):
    """What a scan needs of a video that changed or vanished, read for those alone."""

    id: int
    size: int
    device: int
    inode: int
    fingerprint: str | None


def int64(n: int) -> int:
    """``n`` as the signed 64-bit columns (device, inode, mtime_ns) hold it: modulo 2**64.

    Inode numbers (overlayfs with xino, some network filesystems) and modification times
    after the year 2262, in nanoseconds, reach 2**63 and more, which no driver would store.
    """
    return (n + 2**63) % 2**64 - 2**63


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class VideoStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _contains(self, q: str) -> sa.ColumnElement[bool]:
        """Paths holding ``q``, in any case, accented and other letters too."""
        if self.engine.dialect.name == "sqlite":
            # SQLite folds the case of ASCII letters only (LIKE, lower()): Python's casefold,
            # registered on each connection (scanner.db), folds É to é and Ö to ö as well.
            pattern = f"%{_escape_like(q.casefold())}%"
            return sa.func.casefold(videos.c.path).like(pattern, escape="\\")
        return videos.c.path.ilike(f"%{_escape_like(q)}%", escape="\\")

    def snapshot(self, root: str) -> dict[str, tuple[int, int, bool]]:
        """``(size, mtime_ns, missing)`` of every video below ``root``, by path, in one query.

        Plain tuples, not objects: a rescan of a large library is this query and a dict.
        """
        prefix = root.rstrip("/") + "/"
        query = sa.select(
            videos.c.path,
            videos.c.file_size,
            videos.c.mtime_ns,
            videos.c.missing_since.is_not(None),
        ).where(videos.c.path.like(_escape_like(prefix) + "%", escape="\\"))
        with self.engine.connect() as conn:
            # SQLite's LIKE ignores case: /media/Show/ must not take in /media/show/.
            return {row[0]: row[1:] for row in conn.execute(query) if row[0].startswith(prefix)}

    def details(self, paths: Iterable[str]) -> dict[str, Known]:
        """Ids and identities (device, inode, fingerprint) of the videos at ``paths``."""
        paths = list(paths)
        found: dict[str, Known] = {}
        columns = (videos.c.id, videos.c.file_size, videos.c.device, videos.c.inode)
        with self.engine.connect() as conn:
            for start in range(0, len(paths), 500):
                query = sa.select(videos.c.path, *columns, videos.c.fingerprint).where(
                    videos.c.path.in_(paths[start : start + 500])
                )
                found.update((row[0], Known._make(row[1:])) for row in conn.execute(query))
        return found

    def _upsert(self) -> Any:
        """An INSERT that updates the row already holding the path (another scan won)."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(videos)
        keep = {"id", "path", "created_at"}
        return insert.on_conflict_do_update(
            index_elements=[videos.c.path],
            set_={c.name: insert.excluded[c.name] for c in videos.c if c.name not in keep},
        )

    def write_batch(
        self, inserts: Sequence[dict[str, Any]], updates: Sequence[dict[str, Any]]
    ) -> None:
        """Insert new videos and update known ones (by ``id``) in one short transaction."""
        with write(self.engine) as conn:
            if inserts:
                conn.execute(self._upsert(), list(inserts))
            if updates:
                stmt = (
                    videos.update()
                    .where(videos.c.id == sa.bindparam("_id"))
                    .values({k: sa.bindparam(k) for k in updates[0] if k != "_id"})
                )
                conn.execute(stmt, list(updates))

    def mark_missing(self, ids: Iterable[int], when: datetime | None = None) -> int:
        when = when or utcnow()
        ids = list(ids)
        with write(self.engine) as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    videos.update()
                    .where(videos.c.id.in_(ids[start : start + 500]))
                    .values(missing_since=when, updated_at=when)
                )
        return len(ids)

    # For the API.

    def search(
        self,
        *,
        q: str | None = None,
        sort: str = "path",
        limit: int = 50,
        offset: int = 0,
        include_missing: bool = False,
    ) -> tuple[list[dict[str, Any]], int]:
        where: list[sa.ColumnElement[bool]] = []
        if not include_missing:
            where.append(videos.c.missing_since.is_(None))
        if q:
            where.append(self._contains(q))
        column = videos.c[sort.lstrip("-")]
        order = column.desc() if sort.startswith("-") else column.asc()
        query = (
            videos.select().where(*where).order_by(order, videos.c.id).limit(limit).offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(videos).where(*where)
        with self.engine.connect() as conn:
            rows = [r._asdict() for r in conn.execute(query)]
            total = conn.execute(count).scalar_one()
        return rows, total

    def by_paths(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        return self._in(videos.c.path, paths)

    def by_ids(self, ids: Sequence[int]) -> list[dict[str, Any]]:
        return self._in(videos.c.id, ids)

    def _in(self, column: sa.Column[Any], values: Sequence[Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(values), 500):
                query = videos.select().where(column.in_(values[start : start + 500]))
                found += [r._asdict() for r in conn.execute(query)]
        return found

    def get(self, video_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(videos.select().where(videos.c.id == video_id)).first()
        return None if row is None else row._asdict()

    def delete(self, video_id: int) -> bool:
        with write(self.engine) as conn:
            return conn.execute(videos.delete().where(videos.c.id == video_id)).rowcount == 1
