"""Read one video file's metadata in-process with PyAV, without decoding any frame.

``probe(path)`` returns a :class:`VideoInfo` or raises :class:`~scanner.errors.ProbeError`
whose message says, in plain words, why the file could not be read as a video.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from fractions import Fraction

import av
from av.codec.context import CodecContext
from av.container import InputContainer
from av.stream import Disposition
from av.video.codeccontext import VideoCodecContext

from scanner.errors import ProbeError

# Measured on H.264/HEVC/VP9/MJPEG/MPEG-2 files in MP4, MOV, MKV, WebM, AVI, MPEG-PS and
# MPEG-TS, 64x48 to 1080p, 2 to 90 Mbit/s, 23.976 to 60 fps: every reported field matches
# FFmpeg's defaults (TS durations differ by ~15 ms, both estimates), while a 720p probe
# drops from 10-25 ms to ~0.2 ms (MP4, MKV) or ~1.5 ms (TS). The one loss: MPEG-PS clips
# under ~0.5 s get no frame rate. A size that only decoding tells (see _DECODING_OPTIONS)
# costs a second probe.
# - codec_whitelist: avformat_find_stream_info() opens a decoder per stream and decodes
#   frames just to learn things we never report, like the pixel format. Allowing no
#   decoder makes it skip that; width, height and codec still come from the container
#   headers or FFmpeg's parsers.
# - max_ts_probe: MKV stores no dts and FFmpeg infers one for H.264 only after decoding a
#   few frames, so without a decoder it would read 50 packets waiting for it. With 1,
#   MP4, MKV, WebM and AVI stop after their first packets (a few hundred KB of a 720p MKV,
#   not ~1 MB).
# - analyzeduration/probesize: MPEG-TS/PS have no index and still read packets to find
#   their streams and average frame rate: 1 s of content, at most 5 MB. A 2 MB cap lost
#   the frame rate of a 47 Mbit/s TS.
# - protocol_whitelist: a library file needs only "file"; a playlist-like file must not
#   make FFmpeg open URLs.
# - format_whitelist: every demuxer but those that open other files or streams named inside
#   or beside the one probed: a text file called .mp4 in FFmpeg's concat or HLS format would
#   open whatever it lists, a VobSub index its .sub, a Magic Lantern clip its .M00 parts, an
#   image name its numbered sequence; a FIFO among them blocks open(2) for good (no timeout
#   reaches it), and the scan with it.
_OPENS_OTHERS = frozenset(
    {"concat", "hls", "dash", "imf", "vobsub", "mlv", "image2", "sdp", "rtp", "rtsp", "lavfi"}
)
_FORMAT_OPTIONS = {
    "codec_whitelist": "none",
    "max_ts_probe": "1",
    "analyzeduration": "1000000",
    "probesize": "5000000",
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(
        sorted(name for name in av.formats_available if name not in _OPENS_OTHERS)
    ),
}
# MPEG-4 Part 2 in MP4 or MOV, H.263 in 3GP and Sorenson Spark in FLV keep the picture size
# in the bitstream's own headers, which FFmpeg reads only with the decoder: such a file is
# probed a second time with decoders allowed (a few ms, for these files only).
_DECODING_OPTIONS = {k: v for k, v in _FORMAT_OPTIONS.items() if k != "codec_whitelist"}

# Streams that are pictures, not the programme: cover art and thumbnail tracks.
_NOT_THE_VIDEO = Disposition.attached_pic | Disposition.timed_thumbnails

# FFmpeg reads MP4, MOV, 3GP and MJ2 with one demuxer ("mov,mp4,m4a,3gp,3g2,mj2");
# the file's major brand tells them apart.
_ISO_FAMILY = "mov"
_BRANDS = {"qt": "mov", "3g2": "3g2", "3g": "3gp", "mjp2": "mj2"}  # by prefix, in this order


@dataclass(frozen=True, slots=True)
class VideoInfo:
    duration_seconds: float | None
    width: int | None
    height: int | None
    frame_rate: float | None  # average frame rate, None when unknown (e.g. 0/0)
    video_codec: str | None  # e.g. "h264", "vp9", "mjpeg"
    audio_codec: str | None  # None when the file has no audio stream
    container: str  # short demuxer name; see probe()


def probe(path: str | bytes, timeout: float = 10.0) -> VideoInfo:
    """Read the metadata of the video file at ``path``.

    ``container`` is the first name of FFmpeg's demuxer ("matroska" for MKV and WebM,
    "avi", "mpegts", "mpeg" for MPEG-PS), except for the MP4/QuickTime family, where it
    comes from the file's major brand rather than its name: "mov" for a QuickTime file
    (brand "qt" or no ftyp), "3gp"/"3g2"/"mj2" for those brands, otherwise "mp4".

    ``timeout`` bounds each of FFmpeg's two phases (open, stream analysis), so a probe
    gives up after at most about twice that. It is checked whenever FFmpeg reads, so it
    stops a demuxer that churns through a pathological file; it cannot interrupt a read
    that is stuck in the kernel (a hung network mount). FIFOs, which would block in
    open(2) before any timeout applies, are refused up front as "not a regular file".

    Raises ProbeError for every file that cannot be read as a video.
    """
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    # av.open takes str and os.fsencode()s it back, so surrogate-escaped bytes of a
    # non-UTF-8 name reach open(2) unchanged.
    name = os.fsdecode(path)
    _check_regular_file(name)
    started = time.monotonic()
    try:
        info = _open_and_describe(name, timeout, _FORMAT_OPTIONS)
        if info.width is None and info.video_codec is not None:
            info = _open_and_describe(name, timeout, _DECODING_OPTIONS)
        return info
    # Deliberately not `except Exception`: huey raises TaskTimeout from a signal handler,
    # and a job's own stop signal must get through too.
    except av.error.ExitError as exc:
        raise ProbeError(f"probe timed out after {timeout:g}s") from exc
    except (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError) as exc:
        # When the interrupt fires inside a demuxer, FFmpeg often reports the cut-short
        # read as "Invalid data" rather than as an exit, so go by the clock.
        if time.monotonic() - started >= timeout:
            raise ProbeError(f"probe timed out after {timeout:g}s") from exc
        raise ProbeError(_reason(exc)) from exc


def _open_and_describe(name: str, timeout: float, options: dict[str, str]) -> VideoInfo:
    # "file:" so that a relative name like "http:clip.mp4" is not taken as a URL.
    with av.open(
        "file:" + name,
        timeout=timeout,
        container_options=options,
        metadata_errors="replace",  # a badly encoded title must not fail the probe
    ) as container:
        return _describe(container)


def _check_regular_file(name: str) -> None:
    try:
        st = os.stat(name)
    except FileNotFoundError as exc:
        raise ProbeError("file not found") from exc
    except PermissionError as exc:
        raise ProbeError("unreadable: permission denied") from exc
    except OSError as exc:
        raise ProbeError(f"unreadable: {exc.strerror or exc}") from exc
    except ValueError as exc:  # e.g. an embedded NUL byte
        raise ProbeError(f"invalid file name: {exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise ProbeError("not a regular file (a directory)")
    if stat.S_ISFIFO(st.st_mode):
        raise ProbeError("not a regular file (a FIFO)")
    if not stat.S_ISREG(st.st_mode):
        raise ProbeError("not a regular file")
    if st.st_size == 0:
        raise ProbeError("empty file (0 bytes)")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "unreadable: permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, av.FFmpegError):
        return f"could not be read as a video: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"unreadable: {exc.strerror or exc}"
    return f"could not be read as a video: {exc}"


def _describe(container: InputContainer) -> VideoInfo:
    format_name = container.format.name
    if format_name.endswith("_pipe") or format_name == "image2":
        raise ProbeError("not a video file (a still image)")
    video = _main_video_stream(container)
    if video is None:
        raise ProbeError("not a video file (no video stream)")
    # The stubs say non-optional, but PyAV leaves a stream's codec context None when this
    # FFmpeg has no decoder for its codec; then there is no size to report either.
    video_ctx: VideoCodecContext | None = video.codec_context
    audio = container.streams.audio
    audio_ctx: CodecContext | None = audio[0].codec_context if audio else None
    return VideoInfo(
        duration_seconds=_duration(container, video),
        width=(video_ctx.width or None) if video_ctx else None,
        height=(video_ctx.height or None) if video_ctx else None,
        frame_rate=_positive(video.average_rate),
        video_codec=video_ctx.codec.canonical_name if video_ctx else None,
        audio_codec=audio_ctx.codec.canonical_name if audio_ctx else None,
        container=_container_name(container),
    )


def _main_video_stream(container: InputContainer) -> av.VideoStream | None:
    # Cover art can come first (MP4 with its udta box ahead of the tracks), so skip it;
    # among the rest prefer the one flagged default, else the first.
    candidates = [s for s in container.streams.video if not s.disposition & _NOT_THE_VIDEO]
    for stream in candidates:
        if stream.disposition & Disposition.default:
            return stream
    return candidates[0] if candidates else None


def _duration(container: InputContainer, video: av.VideoStream) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if video.duration is not None and video.time_base is not None:
        return _positive(video.duration * video.time_base)
    return None


def _positive(value: Fraction | None) -> float | None:
    # PyAV maps 0/0 to None, but 0/1 comes through as Fraction(0).
    return float(value) if value is not None and value > 0 else None


def _container_name(container: InputContainer) -> str:
    first = container.format.name.split(",")[0]
    if first != _ISO_FAMILY:
        return first
    brand = container.metadata.get("major_brand", "").strip()
    if not brand:
        return "mov"  # QuickTime files from before ftyp existed
    for prefix, short in _BRANDS.items():
        if brand.startswith(prefix):
            return short
    return "mp4"
