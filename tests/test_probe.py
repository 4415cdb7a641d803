"""probe() against real files written by tests/media.py: good ones of every kind, and bad ones."""

from __future__ import annotations

import os
import select
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from scanner.errors import ProbeError
from scanner.library.probe import VideoInfo, probe

from media import (
    COVER_SIZE,
    has_encoder,
    make_audio_only,
    make_slow_to_probe,
    make_still_image,
    make_text_as_video,
    make_truncated,
    make_video,
    make_zero_byte,
)

# (file name, container arg, video codec, audio codec, fps, container reported)
KINDS = [
    ("clip.mp4", "mp4", "h264", "aac", 10, "mp4"),
    ("clip.mov", "mov", "h264", "aac", 10, "mov"),
    ("clip.mkv", "mkv", "h264", "aac", 10, "matroska"),
    ("clip-vp9.mkv", "mkv", "vp9", "opus", 10, "matroska"),
    ("clip.webm", "webm", "vp9", "opus", 10, "matroska"),
    ("silent.webm", "webm", "vp9", None, 10, "matroska"),
    ("clip.avi", "avi", "mjpeg", None, 10, "avi"),
    ("clip-mpeg4.avi", "avi", "mpeg4", "mp2", 10, "avi"),
    ("clip.mpg", "mpg", "mpeg2video", "mp2", 25, "mpeg"),
    ("clip-mpeg1.mpg", "mpg", "mpeg1video", "mp2", 25, "mpeg"),
    ("clip.ts", "ts", "h264", "aac", 10, "mpegts"),
    ("clip-mpeg2.ts", "ts", "mpeg2video", "mp2", 25, "mpegts"),
    ("clip-hevc.mp4", "mp4", "hevc", "aac", 10, "mp4"),
    ("clip-hevc.ts", "ts", "hevc", "aac", 10, "mpegts"),
    ("clip-hevc.mkv", "mkv", "hevc", "opus", 10, "matroska"),
    # Their size is in the bitstream, not the container: probed again with the decoder.
    ("clip-mpeg4.mp4", "mp4", "mpeg4", "aac", 10, "mp4"),
    ("clip-mpeg4.mov", "mov", "mpeg4", "aac", 10, "mov"),
    ("clip.flv", "flv", "flv1", None, 10, "flv"),
]


def _needs_encoders(*codecs: str | None) -> None:
    missing = [c for c in codecs if c is not None and not has_encoder(c)]
    if missing:
        # PyAV's wheels bring these encoders: in CI a missing one is a broken set-up, not a
        # reason to leave the probe of those formats untested.
        message = f"this FFmpeg build cannot encode {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _probe_error(path: str | bytes | Path, timeout: float = 10.0) -> str:
    with pytest.raises(ProbeError) as caught:
        probe(os.fsencode(path), timeout=timeout)
    return str(caught.value)


def _bounded(call: Callable[[], object], limit: float, unblock: Callable[[], None]) -> object:
    """Run ``call`` in a thread; if it is still running after ``limit`` s, unblock and fail.

    Keeps a regression that blocks forever (e.g. open(2) on a FIFO) from hanging the suite.
    """
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        unblock()
        worker.join(5)
        pytest.fail(f"probe still blocked after {limit}s")
    return outcome[0]


@pytest.mark.parametrize(("name", "container", "vcodec", "acodec", "fps", "reported"), KINDS)
def test_reads_each_container_and_codec(
    tmp_path: Path,
    name: str,
    container: str,
    vcodec: str,
    acodec: str | None,
    fps: int,
    reported: str,
) -> None:
    _needs_encoders(vcodec, acodec)
    path = make_video(
        tmp_path / name,
        container=container,
        video_codec=vcodec,
        audio_codec=acodec,
        seconds=1.0,
        width=96,
        height=64,
        fps=fps,
    )

    info = probe(str(path))

    assert info.width == 96
    assert info.height == 64
    assert info.video_codec == vcodec
    assert info.audio_codec == acodec
    assert info.container == reported
    assert info.duration_seconds == pytest.approx(1.0, abs=0.05)
    assert info.frame_rate == pytest.approx(fps, rel=0.01)


def test_result_is_a_frozen_value(tmp_path: Path) -> None:
    info = probe(str(make_video(tmp_path / "a.mp4")))
    same = probe(str(tmp_path / "a.mp4"))

    assert info == same
    with pytest.raises(AttributeError):
        info.width = 1  # type: ignore[misc]
    assert VideoInfo.__slots__


def test_length_and_rate_follow_the_file(tmp_path: Path) -> None:
    path = make_video(tmp_path / "long.mkv", container="mkv", seconds=2.5, fps=24)

    info = probe(str(path))

    assert info.duration_seconds == pytest.approx(2.5, abs=0.05)
    assert info.frame_rate == pytest.approx(24.0)


def test_mp4_cover_art_listed_first_is_not_taken_as_the_video(tmp_path: Path) -> None:
    path = make_video(tmp_path / "tagged.mp4", cover_art=True)
    with av.open(str(path)) as container:  # the file really has the hard layout
        first = container.streams[0]
        assert first.type == "video"
        assert first.disposition & av.stream.Disposition.attached_pic
        assert first.codec_context.name == "mjpeg"

    info = probe(str(path))

    assert (info.video_codec, info.width, info.height) == ("h264", 64, 48)
    assert info.frame_rate == pytest.approx(10.0)
    assert info.audio_codec == "aac"


def test_mkv_cover_attachment_is_not_taken_as_the_video(tmp_path: Path) -> None:
    path = make_video(tmp_path / "tagged.mkv", container="mkv", audio_codec=None, cover_art=True)
    with av.open(str(path)) as container:
        pictures = [
            s for s in container.streams.video if s.disposition & av.stream.Disposition.attached_pic
        ]
        assert [(s.codec_context.width, s.codec_context.height) for s in pictures] == [COVER_SIZE]

    info = probe(str(path))

    assert (info.video_codec, info.width, info.height) == ("h264", 64, 48)


def test_single_frame_has_no_frame_rate(tmp_path: Path) -> None:
    # FFmpeg cannot average one frame: avg_frame_rate comes back 0/0.
    path = make_video(tmp_path / "one.ts", container="ts", audio_codec=None, seconds=0.1)

    info = probe(str(path))

    assert info.frame_rate is None
    assert info.video_codec == "h264"


def test_single_frame_mpeg_ps_reports_unknowns_and_its_decoded_size(tmp_path: Path) -> None:
    # MPEG-PS has no header: FFmpeg's parser learns the picture size when the next picture
    # starts, so one lone frame leaves it unknown until the second probe decodes it. What
    # stays unknown must come back as None, not as a crash or a made-up value.
    path = make_video(
        tmp_path / "one.mpg",
        container="mpg",
        video_codec="mpeg2video",
        audio_codec=None,
        seconds=0.04,
        fps=25,
    )

    info = probe(str(path))

    assert info.duration_seconds is None
    assert info.frame_rate is None
    assert (info.width, info.height) == (64, 48)
    assert info.video_codec == "mpeg2video"


def test_zero_byte_file(tmp_path: Path) -> None:
    assert _probe_error(make_zero_byte(tmp_path / "empty.mp4")) == "empty file (0 bytes)"


def test_truncated_mp4(tmp_path: Path) -> None:
    path = make_truncated(tmp_path / "cut.mp4")
    assert path.stat().st_size > 0

    reason = _probe_error(path)

    assert reason == "could not be read as a video: Invalid data found when processing input"


def test_text_named_mp4(tmp_path: Path) -> None:
    reason = _probe_error(make_text_as_video(tmp_path / "notes.mp4"))

    assert reason.startswith("could not be read as a video: ")


def test_still_image_named_mp4(tmp_path: Path) -> None:
    reason = _probe_error(make_still_image(tmp_path / "photo.mp4"))

    assert reason == "not a video file (a still image)"


@pytest.mark.parametrize("cover_art", [False, True], ids=["plain", "with-cover-art"])
def test_audio_only(tmp_path: Path, cover_art: bool) -> None:
    # Album art is a video stream to FFmpeg; it must not make music count as video.
    path = make_audio_only(tmp_path / "song.mp4", cover_art=cover_art)

    assert _probe_error(path) == "not a video file (no video stream)"


def test_missing_file(tmp_path: Path) -> None:
    assert _probe_error(tmp_path / "gone.mp4") == "file not found"


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "folder.mp4").mkdir()

    assert _probe_error(tmp_path / "folder.mp4") == "not a regular file (a directory)"


def test_fifo_is_refused_at_once(tmp_path: Path) -> None:
    # With no writer, open(2) on a FIFO blocks in the kernel, before FFmpeg's timeout can
    # act (av.open(fifo, timeout=0.5) hangs for good), so probe must not open it at all.
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)

    def unblock() -> None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    started = time.monotonic()
    outcome = _bounded(lambda: probe(str(fifo), timeout=0.5), limit=2.0, unblock=unblock)

    assert isinstance(outcome, ProbeError)
    assert str(outcome) == "not a regular file (a FIFO)"
    assert time.monotonic() - started < 2.0


def test_h263_in_3gp_gets_its_size(tmp_path: Path) -> None:
    _needs_encoders("h263", "aac")
    path = make_video(
        tmp_path / "phone.3gp", container="3gp", video_codec="h263", width=176, height=144
    )

    info = probe(str(path))

    assert (info.width, info.height, info.video_codec, info.container) == (176, 144, "h263", "3gp")


@pytest.mark.parametrize(
    ("text", "other"),
    [
        ("ffconcat version 1.0\nfile seg.ts\n", "seg.ts"),  # concat: the files it lists
        ("# VobSub index file, v7 (do not modify this line!)\n", "playlist.sub"),  # its .sub
    ],
)
def test_a_file_that_names_another_opens_nothing_else(
    tmp_path: Path, text: str, other: str
) -> None:
    # Such a file makes FFmpeg open another; here a FIFO, whose open(2) blocks in the kernel,
    # out of the timeout's reach, and the scan with it.
    fifo = tmp_path / other
    os.mkfifo(fifo)
    playlist = tmp_path / "playlist.mp4"
    playlist.write_text(text)

    def unblock() -> None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    outcome = _bounded(lambda: probe(str(playlist), timeout=0.5), limit=5.0, unblock=unblock)

    assert isinstance(outcome, ProbeError)
    assert str(outcome).startswith("could not be read as a video")


def test_timeout_stops_a_probe_that_takes_too_long(tmp_path: Path) -> None:
    path = make_slow_to_probe(tmp_path / "padded.mp4")

    started = time.monotonic()
    reason = _probe_error(path, timeout=0.1)
    elapsed = time.monotonic() - started

    assert reason == "probe timed out after 0.1s"
    assert 0.1 <= elapsed < 2.0


def test_padding_alone_is_not_an_error(tmp_path: Path) -> None:
    # Same layout as the slow file, fewer boxes: the timeout, not the file, failed above.
    path = make_slow_to_probe(tmp_path / "padded.mp4", free_boxes=1000)

    assert probe(str(path), timeout=0.1).video_codec == "h264"


def test_unreadable_file() -> None:
    # Root reads any file, so as root the probe runs in a forked child that has become
    # "nobody". Not tmp_path: pytest makes its base directory 0700, which "nobody" could
    # not even traverse, and the test would pass for the wrong reason.
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        path = make_video(Path(tmp) / "locked.mp4")
        path.chmod(0)
        if os.geteuid() != 0:
            assert _probe_error(path) == "unreadable: permission denied"
            return
        assert _probe_as_nobody(str(path)) == "ProbeError: unreadable: permission denied"


def _probe_as_nobody(path: str) -> str:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgid(65534)
            os.setuid(65534)
            try:
                probe(path)
                result = "no error"
            except Exception as exc:
                result = f"{type(exc).__name__}: {exc}"
            os.write(write_end, result.encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        # A fork of a process with other threads can deadlock on a lock one of them held;
        # never let that hang the suite.
        ready, _, _ = select.select([pipe], [], [], 20)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the probe in the forked child did not finish in 20 s")
        result = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return result


def test_non_utf8_file_name(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9.mp4"  # Latin-1 "café": invalid as UTF-8
    os.rename(make_video(tmp_path / "plain.mp4"), raw)
    assert b"caf\xe9.mp4" in os.listdir(os.fsencode(tmp_path))

    by_bytes = probe(raw)
    by_str = probe(os.fsdecode(raw))  # the surrogate-escaped str os.listdir(str) gives

    assert by_bytes == by_str
    assert (by_bytes.video_codec, by_bytes.width) == ("h264", 64)


def test_relative_name_that_looks_like_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FFmpeg would read "http:clip.mp4" as a URL and "concat:a.mp4" as its concat protocol.
    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "http:clip.mp4")
    make_video(tmp_path / "concat:a.mp4")

    assert probe("http:clip.mp4").video_codec == "h264"
    assert probe(b"concat:a.mp4").video_codec == "h264"


def test_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="timeout"):
        probe(str(make_video(tmp_path / "a.mp4")), timeout=0)
