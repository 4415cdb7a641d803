"""Finding video files under a root: ``os.scandir``, symlinks kept inside the root, no loops."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from stat import S_ISREG


@dataclass(slots=True)
class FoundFile:
    # Not frozen: a frozen dataclass costs twice as much to build, and a walk builds many.
    path: str
    size: int
    mtime_ns: int
    device: int
    inode: int


@dataclass(frozen=True, slots=True)
class WalkError:
    path: str
    error: str


def within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it (both resolved, absolute)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk(
    root: str,
    extensions: frozenset[str],
    *,
    recursive: bool = True,
    on_error: Callable[[WalkError], None] = lambda e: None,
    on_directory: Callable[[], None] = lambda: None,
) -> Iterator[FoundFile]:
    """Yield every file under ``root`` whose extension (lower-cased) is in ``extensions``.

    ``root`` must be an absolute, resolved directory path. A symbolic link is followed only
    when its target lies inside ``root``; each directory is entered once, so a link back up
    the tree cannot loop. A directory that cannot be read is reported through ``on_error``
    and skipped; the walk goes on. ``on_directory`` is called before each directory is read
    (a cancelled scan raises from it).
    """
    real_root = os.path.realpath(root)
    seen_dirs: set[tuple[int, int]] = set()
    pending = [root]
    while pending:
        directory = pending.pop()
        on_directory()
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(directory) as entries:
                listing = list(entries)
        except OSError as exc:
            on_error(WalkError(directory, f"cannot read directory: {exc.strerror or exc}"))
            continue
        subdirs = []
        for entry in listing:  # the hot loop of a rescan: keep it lean
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not within(target, real_root):
                        continue  # never leave the scanned tree through a link
                    is_dir = os.path.isdir(target)
                else:
                    is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir:
                    if recursive:
                        subdirs.append(entry.path)
                    continue
                name = entry.name
                dot = name.rfind(".")
                if dot < 0 or name[dot + 1 :].lower() not in extensions:
                    continue
                st = entry.stat()  # follows a link, whose target is known to be inside
                if not S_ISREG(st.st_mode):
                    continue
            except OSError as exc:
                on_error(WalkError(entry.path, f"cannot stat: {exc.strerror or exc}"))
                continue
            yield FoundFile(entry.path, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)
        # Depth-first in name order keeps the walk (and its progress) stable between runs.
        pending.extend(sorted(subdirs, reverse=True))
