"""The scan: walk a root, probe what is new or changed, and bring the library in step.

Unchanged files (same size and modification time) cost one ``stat`` and a dict lookup: the
library's rows under the root are read in one query and compared in memory. Files to probe
are read on a thread pool (PyAV releases the GIL while FFmpeg parses) while this thread
writes results in batches, one short transaction per batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

from scanner.errors import JobInterrupted, ProbeError, ScanRootError
from scanner.jobs.store import utcnow
from scanner.library.probe import VideoInfo, probe
from scanner.library.store import Known, VideoStore, int64
from scanner.library.walk import FoundFile, WalkError, walk, within

log = logging.getLogger(__name__)

BATCH = 500  # rows per write transaction
FINGERPRINT_BLOCK = 64 * 1024
MAX_ERRORS = 1000  # listed in the result; the count goes on past it


def fingerprint(path: str, size: int) -> str:
    """A hash of a file's size, first and last blocks: recognises a file that was moved."""
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BLOCK))
        if size > FINGERPRINT_BLOCK:
            f.seek(max(size - FINGERPRINT_BLOCK, FINGERPRINT_BLOCK))
            digest.update(f.read(FINGERPRINT_BLOCK))
    return digest.hexdigest()


def display_path(path: str) -> str:
    """A path as people and JSON see it: bytes that are not UTF-8 shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class ScanResult:
    scanned: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    moved: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    error_count: int = 0

    def error(self, path: str, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"path": display_path(path), "error": reason})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Probed = tuple[FoundFile, "VideoInfo | str", "str | None"]


def _utf8(path: str, given: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = repr(given) if given == path else f"{given!r} (really {path!r})"
        raise ScanRootError(f"{shown} is not valid UTF-8; rename it to scan it") from None


def check_root(path: str, allowed_roots: tuple[str, ...] = ()) -> str:
    """The resolved root to scan, or ``ScanRootError`` saying why it cannot be scanned."""
    if "\0" in path:
        raise ScanRootError("the path contains a NUL byte")
    _utf8(path, path)
    if not os.path.isabs(path):
        raise ScanRootError(f"{path!r} is not an absolute path")
    real = os.path.realpath(path)
    if allowed_roots and not any(within(real, root) for root in allowed_roots):
        raise ScanRootError(
            f"{path} is outside the allowed roots ({', '.join(allowed_roots)}); "
            "see SCANNER_ALLOWED_ROOTS"
        )
    _utf8(real, path)  # a link may lead where the name is not (told only inside the roots)
    if not os.path.exists(real):
        raise ScanRootError(f"{path} does not exist (is the drive mounted?)")
    if not os.path.isdir(real):
        raise ScanRootError(f"{path} is not a directory")
    if not os.access(real, os.R_OK | os.X_OK):
        raise ScanRootError(f"{path} cannot be read by this process")
    try:
        os.scandir(real).close()
    except OSError as exc:
        raise ScanRootError(f"{path} cannot be read: {exc.strerror}") from exc
    return real


def _moved_from(path: str, candidates: list[str] | None, vanished: dict[str, Known]) -> str | None:
    """Which vanished path the file now at ``path`` came from: of several (hard links moved
    together, identical copies), the one of the same name."""
    left = [c for c in candidates or () if c in vanished]
    name = os.path.basename(path)
    return next((c for c in left if os.path.basename(c) == name), left[0] if left else None)


# Told of each batch written: the videos added, updated (or moved back in), and removed.
OnChange = Callable[[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]], None]


class Scanner:
    """Scans roots into the library.

    ``progress(done, total)`` may raise to stop a scan (a cancel); ``probe(path, timeout)``
    reads one file; ``on_change(added, updated, removed)`` hears of each batch written;
    ``walk`` finds the files (``scanner.library.walk.walk``).
    """

    def __init__(
        self,
        store: VideoStore,
        *,
        extensions: frozenset[str],
        probe_timeout: float = 10.0,
        workers: int | None = None,
        progress: Callable[[int, int], None] = lambda done, total: None,
        probe: Callable[[str, float], VideoInfo] = probe,
        on_change: OnChange | None = None,
        walk: Callable[..., Iterator[FoundFile]] = walk,
    ) -> None:
        self.store = store
        self.extensions = extensions
        self.probe_timeout = probe_timeout
        self.workers = workers or os.cpu_count() or 2
        self.progress = progress
        self.probe = probe
        self.on_change = on_change
        self.walk = walk

    def scan(self, root: str, *, recursive: bool = True) -> ScanResult:
        result = ScanResult()
        seen = self.store.snapshot(root)
        # Only paths are kept for the files to probe: a cold scan of a large library holds
        # one string per file, and each is stat'ed again when it is probed.
        to_probe: list[str] = []
        known: list[str] = []  # of those, the ones the library has already
        unread: list[str] = []  # directories and files the walk could not read

        def unreadable(error: WalkError) -> None:
            unread.append(error.path)
            result.error(error.path, error.error)

        for f in self.walk(
            root,
            self.extensions,
            recursive=recursive,
            on_error=unreadable,
            on_directory=lambda: self.progress(0, 1),  # a cancel stops a long walk too
        ):
            result.scanned += 1
            s = seen.pop(f.path, None)  # what stays in ``seen`` is no longer on disk
            if s == (f.size, f.mtime_ns, False) or s == (f.size, int64(f.mtime_ns), False):
                result.unchanged += 1
                continue
            try:
                f.path.encode("utf-8")
            except UnicodeEncodeError:
                result.error(f.path, "the file name is not valid UTF-8; rename it to scan it")
                continue
            to_probe.append(f.path)
            if s is not None:
                known.append(f.path)
        # Not seen is not gone when it lies where the walk could not look (a directory that
        # failed to list): that is an error of this scan, not a removal.
        gone = [
            path
            for path, (_, _, missing) in seen.items()
            if not missing
            and (recursive or os.path.dirname(path) == root)
            and not any(within(path, place) for place in unread)
        ]
        del seen
        self._probe_and_write(to_probe, self.store.details(known), self.store.details(gone), result)
        return result

    def _inspect(self, path: str) -> Probed:
        f = FoundFile(path, 0, 0, 0, 0)
        try:
            st = os.stat(path)
            f = FoundFile(path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
            info: VideoInfo | str = self.probe(path, self.probe_timeout)
            return f, info, fingerprint(path, f.size)
        except ProbeError as exc:
            return f, str(exc), None
        except OSError as exc:  # gone or unreadable since the walk saw it
            return f, f"unreadable: {exc.strerror or exc}", None
        except Exception as exc:  # a probe plugin's bug is that file's error, not the scan's
            log.exception("probe of %s failed", path)
            return f, f"the probe failed: {type(exc).__name__}: {exc}", None

    def _probed(self, files: list[str]) -> Iterator[Probed]:
        if len(files) < 2 or self.workers < 2:
            yield from map(self._inspect, files)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="probe")
        try:
            # A bounded look-ahead keeps memory flat however many files there are.
            remaining = iter(files)
            first = islice(remaining, self.workers * 8)
            ahead = deque(pool.submit(self._inspect, f) for f in first)
            while ahead:
                result = ahead.popleft().result()
                for f in islice(remaining, 1):
                    ahead.append(pool.submit(self._inspect, f))
                yield result
        finally:
            pool.shutdown(cancel_futures=True)

    def _probe_and_write(
        self,
        to_probe: list[str],
        changed: dict[str, Known],
        vanished: dict[str, Known],
        result: ScanResult,
    ) -> None:
        """Probe new and changed files; a new path whose file has vanished elsewhere is a move."""
        # A moved file keeps its size: a new file given a deleted one's inode (filesystems
        # reuse them at once) is not that file. Several paths may share an identity (hard
        # links, identical copies).
        by_inode: dict[tuple[int, int, int], list[str]] = defaultdict(list)
        by_print: dict[tuple[int, str | None], list[str]] = defaultdict(list)
        for path, was in vanished.items():
            by_inode[(was.device, was.inode, was.size)].append(path)
            if was.fingerprint:
                by_print[(was.size, was.fingerprint)].append(path)
        done = result.unchanged
        total = done + len(to_probe)
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        try:
            for f, info, print_ in self._probed(to_probe):
                done += 1
                if isinstance(info, str):
                    result.error(f.path, info)
                else:
                    now = utcnow()
                    row = self._row(f, info, print_, now)
                    k = changed.get(f.path)
                    if k is None:
                        moved_from = _moved_from(
                            f.path, by_inode.get((row["device"], row["inode"], f.size)), vanished
                        ) or _moved_from(f.path, by_print.get((f.size, print_)), vanished)
                        if moved_from is not None:
                            k = vanished.pop(moved_from)
                            result.moved += 1
                    if k is None:
                        inserts.append({**row, "created_at": now})
                        result.new += 1
                    else:
                        updates.append({**row, "_id": k.id, "path": f.path})
                        if f.path in changed:
                            result.updated += 1
                if len(inserts) + len(updates) >= BATCH:
                    self._write(inserts, updates)
                    inserts, updates = [], []
                self.progress(done, total)
        except JobInterrupted:
            self._write(inserts, updates)  # keep what was read before the stop
            raise
        self._write(inserts, updates)
        self.progress(total, total)
        # Only now, with every new path matched: what was not matched is gone.
        gone = [k.id for k in vanished.values()]
        result.removed = self.store.mark_missing(gone)
        if self.on_change and gone:
            self.on_change([], [], self.store.by_ids(gone))

    def _write(self, inserts: list[dict[str, Any]], updates: list[dict[str, Any]]) -> None:
        self.store.write_batch(inserts, updates)
        if self.on_change and (inserts or updates):
            new = {row["path"] for row in inserts}
            videos = self.store.by_paths([row["path"] for row in inserts + updates])
            self.on_change(
                [v for v in videos if v["path"] in new],
                [v for v in videos if v["path"] not in new],
                [],
            )

    @staticmethod
    def _row(f: FoundFile, info: VideoInfo, print_: str | None, now: Any) -> dict[str, Any]:
        return {
            "path": f.path,
            "filename": os.path.basename(f.path),
            "file_size": f.size,
            "mtime_ns": int64(f.mtime_ns),
            "device": int64(f.device),
            "inode": int64(f.inode),
            "fingerprint": print_,
            "missing_since": None,
            "updated_at": now,
            **asdict(info),
        }
