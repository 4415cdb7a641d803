"""The scan against real video files and a real SQLite library."""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from scanner.config import DEFAULT_VIDEO_EXTENSIONS, Settings
from scanner.errors import JobCancelled, ScanRootError
from scanner.library.probe import VideoInfo, probe
from scanner.library.scan import Scanner, check_root, fingerprint
from scanner.library.store import VideoStore, int64
from scanner.library.walk import WalkError, walk
from scanner.services import Services, build_services

from conftest import submit_at_once
from media import make_text_as_video, make_truncated, make_video, make_zero_byte


@pytest.fixture
def library(services: Services) -> VideoStore:
    return VideoStore(services.engine)


@pytest.fixture
def scanner(library: VideoStore) -> Scanner:
    return Scanner(library, extensions=DEFAULT_VIDEO_EXTENSIONS, probe_timeout=5)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "films").mkdir(parents=True)
    make_video(root / "a.mp4")
    make_video(root / "films" / "b.webm", container="webm", video_codec="vp9", audio_codec=None)
    make_video(root / "films" / "c.avi", container="avi", video_codec="mjpeg", audio_codec=None)
    (root / "notes.txt").write_text("not a video")
    return root


def videos(library: VideoStore, **kwargs: object) -> dict[str, dict[str, object]]:
    rows, _ = library.search(limit=1000, **kwargs)  # type: ignore[arg-type]
    return {
        os.path.relpath(str(r["path"]), str(r["path"]).split("/media/")[0] + "/media"): r
        for r in rows
    }


def test_first_scan_adds_every_video_with_its_metadata(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    result = scanner.scan(str(media)).as_dict()
    assert result == {
        "scanned": 3,
        "new": 3,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "moved": 0,
        "errors": [],
        "error_count": 0,
    }
    found = videos(library)
    assert set(found) == {"a.mp4", "films/b.webm", "films/c.avi"}
    a = found["a.mp4"]
    assert (a["width"], a["height"], a["video_codec"], a["audio_codec"]) == (64, 48, "h264", "aac")
    assert a["filename"] == "a.mp4" and a["file_size"] == (media / "a.mp4").stat().st_size
    assert a["duration_seconds"] == pytest.approx(1.0, abs=0.1)
    assert a["frame_rate"] == pytest.approx(10)
    assert found["films/b.webm"]["video_codec"] == "vp9"
    assert found["films/b.webm"]["audio_codec"] is None
    assert found["films/c.avi"]["video_codec"] == "mjpeg"


def test_rescan_of_an_unchanged_tree_probes_nothing(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    scanner.scan(str(media))
    before = videos(library)
    probed: list[str] = []

    def counting_probe(path: str, timeout: float) -> VideoInfo:
        probed.append(path)
        return probe(path, timeout)

    rescan = Scanner(library, extensions=DEFAULT_VIDEO_EXTENSIONS, probe=counting_probe)
    result = rescan.scan(str(media))
    assert probed == []
    assert (result.scanned, result.unchanged, result.new, result.updated) == (3, 3, 0, 0)
    assert videos(library) == before  # not even updated_at moved


def test_a_changed_file_is_probed_again_and_keeps_its_id(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    scanner.scan(str(media))
    old = videos(library)["a.mp4"]
    make_video(media / "a.mp4", width=128, height=96)
    result = scanner.scan(str(media))
    assert (result.updated, result.unchanged) == (1, 2)
    new = videos(library)["a.mp4"]
    assert new["id"] == old["id"] and (new["width"], new["height"]) == (128, 96)


def test_a_vanished_file_is_marked_missing_and_returns_under_its_id(
    scanner: Scanner, library: VideoStore, media: Path, tmp_path: Path
) -> None:
    scanner.scan(str(media))
    old = videos(library)["films/b.webm"]
    shutil.move(media / "films" / "b.webm", tmp_path / "b.webm")
    result = scanner.scan(str(media))
    assert result.removed == 1
    assert "films/b.webm" not in videos(library)
    gone = videos(library, include_missing=True)["films/b.webm"]
    assert gone["missing_since"] is not None
    assert scanner.scan(str(media)).removed == 0  # already missing: not counted again
    shutil.move(tmp_path / "b.webm", media / "films" / "b.webm")
    result = scanner.scan(str(media))
    assert result.updated == 1
    back = videos(library)["films/b.webm"]
    assert back["id"] == old["id"] and back["missing_since"] is None


def test_a_renamed_file_keeps_its_id(scanner: Scanner, library: VideoStore, media: Path) -> None:
    scanner.scan(str(media))
    old = videos(library)["a.mp4"]
    (media / "films" / "renamed.mp4").parent.mkdir(exist_ok=True)
    os.rename(media / "a.mp4", media / "films" / "renamed.mp4")
    result = scanner.scan(str(media))
    assert (result.moved, result.new, result.removed) == (1, 0, 0)
    found = videos(library, include_missing=True)
    assert "a.mp4" not in found
    assert found["films/renamed.mp4"]["id"] == old["id"]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_search_finds_a_path_in_any_case_accented_letters_too(
    database: str, env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if database == "postgresql":
        env = {**env, "SCANNER_DATABASE_URL": request.getfixturevalue("postgres_url")}
    library = build_services(Settings.from_env(env)).library
    root = tmp_path / "media"
    root.mkdir()
    shutil.copy(make_video(tmp_path / "v.mp4"), root / "Été Ölfilm 100%_a.mp4")
    shutil.copy(tmp_path / "v.mp4", root / "other.mp4")
    Scanner(library, extensions=DEFAULT_VIDEO_EXTENSIONS, probe_timeout=5).scan(str(root))
    for q in ("ÉTÉ", "été", "ölFILM", "100%_A"):
        rows, total = library.search(q=q)
        assert total == 1 and rows[0]["filename"] == "Été Ölfilm 100%_a.mp4", q
    assert library.search(q="0%_b")[1] == 0  # % and _ are the letters, not wildcards


def test_a_copied_then_deleted_file_is_recognised_by_fingerprint(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    scanner.scan(str(media))
    old = videos(library)["films/c.avi"]
    shutil.copy2(media / "films" / "c.avi", media / "c-copy.avi")  # a new inode
    os.unlink(media / "films" / "c.avi")
    result = scanner.scan(str(media))
    assert (result.moved, result.new, result.removed) == (1, 0, 0)
    assert videos(library)["c-copy.avi"]["id"] == old["id"]


def test_a_new_path_on_a_vanished_files_inode_but_not_its_size_is_new(
    scanner: Scanner, library: VideoStore, media: Path, tmp_path: Path
) -> None:
    """As when a file is deleted and another made at once: filesystems reuse inodes."""
    scanner.scan(str(media))
    old = videos(library)["a.mp4"]
    other = make_video(tmp_path / "other.mp4", width=128, height=96)
    with open(media / "a.mp4", "r+b") as same_inode:
        same_inode.truncate(0)
        same_inode.write(other.read_bytes())
    os.rename(media / "a.mp4", media / "films" / "other.mp4")
    result = scanner.scan(str(media))
    assert (result.moved, result.new, result.removed) == (0, 1, 1)
    assert videos(library)["films/other.mp4"]["id"] != old["id"]


def test_a_scan_leaves_a_folder_named_the_same_but_for_case_alone(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    for name in ("Show", "show"):
        (media / name).mkdir()
        make_video(media / name / "ep.mp4")
    assert scanner.scan(str(media / "show")).new == 1
    result = scanner.scan(str(media / "Show"))
    assert (result.new, result.removed) == (1, 0)
    assert {"show/ep.mp4", "Show/ep.mp4"} <= set(videos(library))


def test_videos_under_a_directory_the_walk_cannot_read_are_not_removed(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    scanner.scan(str(media))
    films = str(media / "films")

    def films_unreadable(root: str, extensions: frozenset[str], **options: Any) -> Any:
        # What walk reports for a directory it cannot list (a failing disk, a permission
        # this test, run as root, would not feel).
        options["on_error"](WalkError(films, "cannot read directory: Input/output error"))
        for found in walk(root, extensions, **options):
            if not found.path.startswith(films):
                yield found

    rescan = Scanner(library, extensions=DEFAULT_VIDEO_EXTENSIONS, walk=films_unreadable)
    result = rescan.scan(str(media))
    assert (result.removed, result.unchanged, result.error_count) == (0, 1, 1)
    assert result.errors[0]["path"] == films
    assert set(videos(library)) == {"a.mp4", "films/b.webm", "films/c.avi"}


def test_a_time_or_inode_beyond_signed_64_bits_is_stored_not_fatal(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    # A file dated after 2262 has an mtime in ns of 2**63 or more, as overlayfs (xino) gives
    # inode numbers: one such file failed the scan of every file in its batch.
    future = media / "films" / "future.mp4"
    shutil.copy(media / "a.mp4", future)
    os.utime(future, ns=(0, 13_569_465_600 * 10**9))  # 2400-01-01
    result = scanner.scan(str(media))
    assert (result.new, result.error_count) == (4, 0)
    assert scanner.scan(str(media)).unchanged == 4  # and it compares as unchanged
    assert int64(2**64 - 1) == -1 and int64(2**63) == -(2**63) and int64(-5) == -5


def test_hard_links_moved_together_each_keep_their_id(
    scanner: Scanner, library: VideoStore, tmp_path: Path
) -> None:
    root = tmp_path / "media"
    (root / "x").mkdir(parents=True)
    make_video(root / "x" / "a.mp4")
    os.link(root / "x" / "a.mp4", root / "x" / "b.mp4")
    scanner.scan(str(root))
    ids = {name: v["id"] for name, v in videos(library).items()}
    os.rename(root / "x", root / "y")
    result = scanner.scan(str(root))
    assert (result.moved, result.new, result.removed) == (2, 0, 0)
    assert {name: v["id"] for name, v in videos(library, include_missing=True).items()} == {
        "y/a.mp4": ids["x/a.mp4"],
        "y/b.mp4": ids["x/b.mp4"],
    }


def test_hard_links_are_separate_videos(scanner: Scanner, library: VideoStore, media: Path) -> None:
    os.link(media / "a.mp4", media / "films" / "a-link.mp4")
    result = scanner.scan(str(media))
    assert result.new == 4
    found = videos(library)
    assert found["a.mp4"]["id"] != found["films/a-link.mp4"]["id"]
    # A new link appearing while the old path stays is not a move.
    os.link(media / "a.mp4", media / "a-second-link.mp4")
    result = scanner.scan(str(media))
    assert (result.new, result.moved) == (1, 0)


def test_bad_files_are_errors_and_the_scan_goes_on(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    make_truncated(media / "truncated.mp4")
    make_zero_byte(media / "empty.mkv")
    make_text_as_video(media / "text.mp4")
    result = scanner.scan(str(media))
    assert result.new == 3 and result.scanned == 6
    errors = {os.path.basename(e["path"]): e["error"] for e in result.errors}
    assert set(errors) == {"truncated.mp4", "empty.mkv", "text.mp4"}
    assert errors["empty.mkv"] == "empty file (0 bytes)"
    assert "could not be read as a video" in errors["text.mp4"]
    assert result.error_count == 3


def test_a_name_that_is_not_utf8_is_reported_not_fatal(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    make_video(os.fsencode(media) + b"/caf\xe9.mp4")
    result = scanner.scan(str(media))
    assert result.new == 3
    assert result.errors == [{"path": f"{media}/caf\\xe9.mp4", "error": result.errors[0]["error"]}]
    assert "not valid UTF-8" in result.errors[0]["error"]


def test_non_recursive_scan_stays_in_the_directory(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    scanner.scan(str(media))
    os.unlink(media / "films" / "c.avi")
    result = scanner.scan(str(media), recursive=False)
    assert (result.scanned, result.removed) == (1, 0)  # films/ is out of this scan's sight


def test_a_scan_of_a_subdirectory_leaves_the_rest_alone(
    scanner: Scanner, library: VideoStore, media: Path
) -> None:
    scanner.scan(str(media))
    result = scanner.scan(str(media / "films"))
    assert (result.scanned, result.unchanged, result.removed) == (2, 2, 0)
    assert len(videos(library)) == 3


def test_cancel_stops_the_scan_and_leaves_the_library_consistent(
    library: VideoStore, media: Path
) -> None:
    for n in range(40):
        os.link(media / "a.mp4", media / f"link-{n}.mp4")
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done >= 10:
            raise JobCancelled("cancelled while running")

    scanner = Scanner(library, extensions=DEFAULT_VIDEO_EXTENSIONS, progress=progress)
    with pytest.raises(JobCancelled):
        scanner.scan(str(media))
    rows, total = library.search(limit=1000, include_missing=True)
    assert 0 < total < 43
    assert all(r["missing_since"] is None for r in rows)
    assert len({r["path"] for r in rows}) == total


def test_overlapping_scans_at_once_never_duplicate_a_path(library: VideoStore, media: Path) -> None:
    for n in range(30):
        os.link(media / "a.mp4", media / "films" / f"link-{n}.mp4")
    errors: list[BaseException] = []

    def run(root: Path) -> None:
        try:
            Scanner(library, extensions=DEFAULT_VIDEO_EXTENSIONS).scan(str(root))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in (media, media / "films") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows, total = library.search(limit=1000)
    assert total == 33 and len({r["path"] for r in rows}) == 33


def test_walk_never_leaves_the_root_or_loops(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "inner").mkdir(parents=True)
    outside.mkdir()
    make_video(root / "inner" / "in.mp4")
    make_video(outside / "out.mp4")
    os.symlink(outside, root / "to-outside")
    os.symlink(outside / "out.mp4", root / "out-link.mp4")
    os.symlink(root, root / "inner" / "loop")
    os.symlink(root / "inner" / "in.mp4", root / "in-link.mp4")
    found = sorted(os.path.relpath(f.path, root) for f in walk(str(root), DEFAULT_VIDEO_EXTENSIONS))
    assert found == ["in-link.mp4", "inner/in.mp4"]


def test_walk_reports_unreadable_directories(tmp_path: Path) -> None:
    (tmp_path / "ok").mkdir()
    make_video(tmp_path / "ok" / "a.mp4")
    errors: list[WalkError] = []
    os.symlink(tmp_path / "ok", tmp_path / "ok" / "self")  # a loop, entered once
    found = list(walk(str(tmp_path / "missing"), DEFAULT_VIDEO_EXTENSIONS, on_error=errors.append))
    assert found == [] and "cannot read directory" in errors[0].error
    assert len(list(walk(str(tmp_path), DEFAULT_VIDEO_EXTENSIONS))) == 1


def test_check_root_explains_each_refusal(tmp_path: Path) -> None:
    (tmp_path / "allowed").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "file.mp4").write_bytes(b"x")
    allowed = (str(tmp_path / "allowed"),)
    assert check_root(str(tmp_path / "allowed"), allowed) == str(tmp_path / "allowed")
    cases = {
        "a\0b": "NUL byte",
        "relative/path": "not an absolute path",
        str(tmp_path / "nope"): "does not exist (is the drive mounted?)",
        str(tmp_path / "file.mp4"): "is not a directory",
        "/media/\ud800": "is not valid UTF-8",  # JSON may carry a lone surrogate
        os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"): "is not valid UTF-8",
    }
    for path, reason in cases.items():
        with pytest.raises(ScanRootError, match=re.escape(reason)):
            check_root(path)
    with pytest.raises(ScanRootError, match="outside the allowed roots"):
        check_root(str(tmp_path / "other"), allowed)
    latin1 = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(latin1)
    os.symlink(latin1, tmp_path / "plain-name")
    with pytest.raises(ScanRootError, match=r"plain-name.*really.*is not valid UTF-8"):
        check_root(str(tmp_path / "plain-name"))
    os.symlink(tmp_path / "other", tmp_path / "allowed" / "sneaky")
    with pytest.raises(ScanRootError, match="outside the allowed roots"):
        check_root(str(tmp_path / "allowed" / "sneaky"), allowed)


def test_fingerprint_reads_head_and_tail(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"a" * 200_000)
    same = fingerprint(str(big), 200_000)
    data = bytearray(b"a" * 200_000)
    data[-1] = ord("b")
    big.write_bytes(bytes(data))
    assert fingerprint(str(big), 200_000) != same
    tail_changed = fingerprint(str(big), 200_000)
    data[100_000] = ord("c")  # the middle is not read
    big.write_bytes(bytes(data))
    assert fingerprint(str(big), 200_000) == tail_changed


def test_simultaneous_scans_of_one_tree_are_admitted_once(services: Services, media: Path) -> None:
    outcomes = submit_at_once(services, 8, "scan", {"path": str(media)})
    assert outcomes == ["accepted"] + ["refused"] * 7
