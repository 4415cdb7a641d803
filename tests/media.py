"""Real, tiny video files for tests and benchmarks, written with PyAV (no ffmpeg binary).

These are plain helpers, not fixtures: call them with a path (usually under ``tmp_path``).
Every file is encoded for real, so what a test probes is what FFmpeg actually wrote.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.codec.codec import UnknownCodecError
from av.container import OutputContainer
from av.stream import Stream
from av.video.stream import VideoStream

PathArg = str | bytes | os.PathLike[str]

# container -> FFmpeg muxer. Several names for one muxer so callers can use either.
MUXERS = {
    "mp4": "mp4",
    "mov": "mov",
    "mkv": "matroska",
    "matroska": "matroska",
    "webm": "webm",
    "avi": "avi",
    "mpg": "mpeg",
    "mpeg": "mpeg",
    "ts": "mpegts",
    "mpegts": "mpegts",
    "3gp": "3gp",
    "flv": "flv",
}

# codec -> encoders to try, best first. Software encoders only: a hardware one (this
# FFmpeg lists h264_v4l2m2m, h264_vaapi...) is "available" but fails without a device.
ENCODERS = {
    "h264": ("libx264", "libopenh264"),
    "hevc": ("libx265",),
    "vp9": ("libvpx-vp9",),
    "vp8": ("libvpx",),
    "mjpeg": ("mjpeg",),
    "mpeg1video": ("mpeg1video",),
    "mpeg2video": ("mpeg2video",),
    "mpeg4": ("mpeg4",),
    "aac": ("aac",),
    "opus": ("libopus", "opus"),
    "mp2": ("mp2",),
    "mp3": ("libmp3lame",),
    "ac3": ("ac3",),
    "vorbis": ("libvorbis", "vorbis"),
}

# Fast settings: these files are about shape and metadata, not quality.
_ENCODER_OPTIONS = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=none"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    # The native encoders are marked experimental in FFmpeg.
    "opus": {"strict": "experimental"},
    "vorbis": {"strict": "experimental"},
}

SAMPLE_RATE = 48_000
COVER_SIZE = (160, 160)  # bigger than the default video, so "largest stream" would be wrong


def encoder_for(codec: str) -> str:
    """The encoder this FFmpeg build has for ``codec`` (e.g. "h264" -> "libx264").

    Raises LookupError naming what was tried when none is built in.
    """
    for name in ENCODERS.get(codec, (codec,)):
        try:
            av.Codec(name, "w")
        except UnknownCodecError:
            continue
        return name
    tried = ", ".join(ENCODERS.get(codec, (codec,)))
    raise LookupError(f"this FFmpeg build has no encoder for {codec} (tried {tried})")


def has_encoder(codec: str) -> bool:
    try:
        encoder_for(codec)
    except LookupError:
        return False
    return True


def make_video(
    path: PathArg,
    *,
    container: str = "mp4",
    video_codec: str = "h264",
    audio_codec: str | None = "aac",
    seconds: float = 1.0,
    width: int = 64,
    height: int = 48,
    fps: int = 10,
    cover_art: bool = False,
) -> Path:
    """Encode ``seconds`` of a moving test pattern (and silence, if ``audio_codec``) to ``path``.

    ``container`` picks the muxer whatever the file is called, so a mislabelled file is
    easy to make. ``cover_art=True`` adds a JPEG with disposition attached_pic:

    - mp4: the mov muxer writes it as iTunes ``covr`` metadata; the box holding it is then
      moved ahead of the tracks, so FFmpeg lists the picture as stream 0 - the order
      that trips up code taking ``streams.video[0]``.
    - mkv: written as a Matroska attachment (image/jpeg), which FFmpeg reads back as
      an attached_pic stream, listed after the tracks.

    Raises LookupError when no encoder exists for a codec and ValueError for a
    combination the container or codec cannot hold.
    """
    out = Path(os.fsdecode(path))
    muxer = MUXERS.get(container)
    if muxer is None:
        raise ValueError(f"unknown container {container!r}; use one of {sorted(MUXERS)}")
    if cover_art and muxer not in ("mp4", "matroska"):
        # WebM has no attachments (the muxer drops them silently); MOV gets no covr.
        raise ValueError(f"cover art is only made for mp4 and mkv, not {container}")
    try:
        # "file:" so that a relative name like "http:clip.mp4" is not taken as a URL.
        with av.open(f"file:{out}", "w", format=muxer) as output:
            cover = _add_cover_stream(output) if cover_art and muxer == "mp4" else None
            if cover_art and muxer != "mp4":
                output.add_attachment("cover.jpg", "image/jpeg", _jpeg(*COVER_SIZE))
            video = _add_video(output, video_codec, width, height, fps)
            audio = _add_audio(output, audio_codec) if audio_codec else None
            if cover is not None:
                output.mux(cover)  # only now: the first mux writes the header
            _write(output, video, audio, seconds, fps)
    except av.FFmpegError as exc:
        out.unlink(missing_ok=True)
        what = f"{video_codec}/{audio_codec}" if audio_codec else video_codec
        raise ValueError(f"could not write {what} in {container}: {exc}") from exc
    if cover_art and muxer == "mp4":
        _move_udta_before_tracks(out)
    return out


def make_audio_only(path: PathArg, *, cover_art: bool = False) -> Path:
    """An MP4 (an .m4a in all but name) holding only AAC audio, optionally with cover art.

    Music files with embedded album art look like "a video stream" to naive code.
    """
    out = Path(os.fsdecode(path))
    with av.open(f"file:{out}", "w", format="mp4") as output:
        cover = _add_cover_stream(output) if cover_art else None
        audio = _add_audio(output, "aac")
        if cover is not None:
            output.mux(cover)
        _write(output, None, audio, seconds=1.0, fps=10)
    return out


def make_truncated(path: PathArg, *, keep: float = 0.5) -> Path:
    """A real MP4 cut to ``keep`` of its size.

    FFmpeg's mov muxer writes the moov atom (the index) after the media data, so the cut
    removes it entirely: the kind of file an interrupted download or copy leaves.
    """
    out = make_video(path, container="mp4")
    with out.open("r+b") as f:
        f.truncate(int(out.stat().st_size * keep))
    return out


def make_zero_byte(path: PathArg) -> Path:
    out = Path(os.fsdecode(path))
    out.write_bytes(b"")
    return out


def make_text_as_video(path: PathArg) -> Path:
    """A text file with a video's name, e.g. notes.mp4."""
    out = Path(os.fsdecode(path))
    out.write_text("This is not a video. It is a shopping list:\n- milk\n- eggs\n" * 20)
    return out


def make_still_image(path: PathArg) -> Path:
    """A JPEG photo, under whatever name is given (e.g. holiday.mp4)."""
    out = Path(os.fsdecode(path))
    out.write_bytes(_jpeg(*COVER_SIZE))
    return out


def make_slow_to_probe(path: PathArg, *, free_boxes: int = 4_000_000) -> Path:
    """A valid MP4 with ``free_boxes`` empty 8-byte ``free`` boxes between ftyp and mdat.

    Legal, but FFmpeg's mov demuxer walks every box before it finds the index: 4 million
    (32 MB) take about a second here, which makes a real probe that outlasts a short
    timeout without FIFOs or mocks.
    """
    out = make_video(path, container="mp4")
    data = out.read_bytes()
    ftyp_size = struct.unpack(">I", data[:4])[0]
    with out.open("wb") as f:
        f.write(data[:ftyp_size])
        f.write(struct.pack(">I4s", 8, b"free") * free_boxes)
        f.write(data[ftyp_size:])
    return out


def make_slow_tree(root: Path, files: int) -> Path:
    """A directory of ``files`` videos that each take about a quarter of a second to probe:
    one slow MP4 and hard links to it. For scans long enough to cancel or kill midway."""
    root.mkdir(parents=True, exist_ok=True)
    first = make_slow_to_probe(root / "slow.mp4", free_boxes=1_000_000)
    for n in range(files - 1):
        os.link(first, root / f"slow-{n:02}.mp4")
    return root


# (container, video codec, audio codec, extension, fps) for make_corpus, cycled through.
CORPUS_KINDS = (
    ("mp4", "h264", "aac", ".mp4", 10),
    ("mkv", "h264", "aac", ".mkv", 10),
    ("webm", "vp9", "opus", ".webm", 10),
    ("avi", "mjpeg", None, ".avi", 10),
    ("mov", "h264", "aac", ".mov", 10),
    ("mpg", "mpeg2video", "mp2", ".mpg", 25),
    ("ts", "h264", "aac", ".ts", 10),
    ("mp4", "h264", None, ".m4v", 10),
)
FILES_PER_DIR = 100
DIRS_PER_GROUP = 100


def make_corpus(root: Path, count: int, *, distinct: int = 8, seed: int = 0) -> list[Path]:
    """A library of ``count`` video files under ``root`` that costs little disk.

    The first ``distinct`` files are real videos across the containers/codecs of
    CORPUS_KINDS (sizes and lengths vary with ``seed``); the rest are hard links to them,
    ``FILES_PER_DIR`` to a directory, in nested ``gNNN/dNNN`` directories (a file
    system's per-inode link limit is met by starting a fresh copy). 100,000 files take
    about 8 small files of disk plus 1,000 directories, and about 2.5 s to make.
    Returns every path, originals first.
    """
    if count < 0 or distinct < 1:
        raise ValueError("count must be >= 0 and distinct >= 1")
    rng = random.Random(seed)
    paths = list(_corpus_paths(root, count))
    originals: list[Path] = []
    for i, stem in enumerate(paths):
        kind = CORPUS_KINDS[i % distinct % len(CORPUS_KINDS)]
        target = paths[i] = stem.with_suffix(kind[3])
        target.parent.mkdir(parents=True, exist_ok=True)
        if i < distinct:
            container, video_codec, audio_codec, _, fps = kind
            make_video(
                target,
                container=container,
                video_codec=video_codec,
                audio_codec=audio_codec,
                # The added 0.1 s per lap of CORPUS_KINDS keeps every original's bytes unique.
                seconds=rng.choice((0.5, 1.0)) + 0.1 * (i // len(CORPUS_KINDS)),
                width=16 * rng.randint(3, 6),
                height=16 * rng.randint(2, 4),
                fps=fps,
            )
            originals.append(target)
            continue
        slot = i % distinct
        try:
            os.link(originals[slot], target)
        except OSError as exc:
            if exc.errno != errno.EMLINK:  # ext4 allows 65,000 links to one inode
                raise
            shutil.copyfile(originals[slot], target)
            originals[slot] = target
    return paths


def _corpus_paths(root: Path, count: int) -> Iterator[Path]:
    for i in range(count):
        leaf = i // FILES_PER_DIR
        group, directory = divmod(leaf, DIRS_PER_GROUP)
        yield root / f"g{group:03d}" / f"d{directory:03d}" / f"v{i:07d}"


def _add_video(
    output: OutputContainer, codec: str, width: int, height: int, fps: int
) -> VideoStream:
    encoder = encoder_for(codec)
    allowed = av.Codec(encoder, "w").frame_rates
    if allowed is not None and Fraction(fps) not in {Fraction(r.num, r.den) for r in allowed}:
        raise ValueError(f"{encoder} cannot encode {fps} fps (MPEG-1/2: try 24, 25 or 30)")
    stream = output.add_stream(encoder, rate=fps, options=_ENCODER_OPTIONS.get(encoder, {}))
    if not isinstance(stream, VideoStream):
        raise ValueError(f"{codec} is not a video codec")
    formats = av.Codec(encoder, "w").video_formats
    # The encoder's first pixel format is its native one (yuvj420p for MJPEG).
    stream.pix_fmt = formats[0].name if formats else "yuv420p"
    stream.width, stream.height = width, height
    stream.thread_count = 1  # a few tiny frames: threads only cost start-up time
    return stream


def _add_audio(output: OutputContainer, codec: str) -> AudioStream:
    encoder = encoder_for(codec)
    rates = av.Codec(encoder, "w").audio_rates
    rate = SAMPLE_RATE if not rates or SAMPLE_RATE in rates else max(rates)
    stream = output.add_stream(encoder, rate=rate, options=_ENCODER_OPTIONS.get(encoder, {}))
    if not isinstance(stream, AudioStream):
        raise ValueError(f"{codec} is not an audio codec")
    stream.layout = "stereo"
    return stream


def _write(
    output: OutputContainer,
    video: VideoStream | None,
    audio: AudioStream | None,
    seconds: float,
    fps: int,
) -> None:
    frames = round(seconds * fps)
    samples_done = 0
    for i in range(frames):
        if video is not None:
            output.mux(video.encode(_picture(video, i, fps)))
        if audio is not None:
            # Keep audio level with video so the muxer interleaves as a real file does.
            samples_done = _silence(output, audio, samples_done, (i + 1) / fps)
    if video is not None:
        output.mux(video.encode(None))
    if audio is not None:
        output.mux(audio.encode(None))


def _picture(stream: VideoStream, index: int, fps: int) -> av.VideoFrame:
    frame = av.VideoFrame(stream.width, stream.height, stream.pix_fmt or "yuv420p")
    for plane_no, plane in enumerate(frame.planes):
        # A diagonal ramp that shifts each frame: cheap to make, gives the encoder motion.
        shift = index * 7 + plane_no * 50
        plane.update(bytes((x + shift) % 256 for x in range(plane.buffer_size)))
    frame.pts = index
    frame.time_base = Fraction(1, fps)
    return frame


def _silence(output: OutputContainer, stream: AudioStream, done: int, until: float) -> int:
    rate = stream.rate
    formats = stream.codec_context.codec.audio_formats
    sample_format = formats[0].name if formats else "fltp"
    while done < until * rate:
        # PyAV re-chunks to the encoder's frame size, so any size works here.
        frame = av.AudioFrame(format=sample_format, layout="stereo", samples=1024)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = rate
        frame.pts = done
        frame.time_base = Fraction(1, rate)
        output.mux(stream.encode(frame))
        done += 1024
    return done


def _jpeg(width: int, height: int) -> bytes:
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    frame = av.VideoFrame(width, height, "yuvj420p")
    for plane in frame.planes:
        plane.update(bytes(i % 256 for i in range(plane.buffer_size)))
    frame.pts = 0
    return b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])


def _add_cover_stream(output: OutputContainer) -> av.Packet[Stream]:
    """Add an attached_pic stream; mux the returned packet once every stream is added."""
    # One JPEG packet on an mjpeg stream flagged attached_pic: the mov muxer turns it
    # into covr metadata instead of a track.
    stream = output.add_stream("mjpeg")
    stream.width, stream.height = COVER_SIZE
    stream.pix_fmt = "yuvj420p"
    stream.time_base = Fraction(1, 1)
    stream.disposition = av.stream.Disposition.attached_pic
    packet = av.Packet(_jpeg(*COVER_SIZE))
    packet.stream = stream
    packet.pts = packet.dts = 0
    return packet


def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, size) of the ISO-BMFF boxes in data[start:end]."""
    offset = start
    while offset < end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size < 8:  # 0 = "to end of file", 1 = 64-bit size; the mov muxer writes neither here
            raise ValueError(f"unexpected box size {size} at {offset}")
        yield kind, offset, size
        offset += size


def _move_udta_before_tracks(path: Path) -> None:
    # Chunk offsets point into mdat, which comes before moov and does not move; only the
    # order of moov's children changes, so the file stays valid.
    data = bytearray(path.read_bytes())
    moov = next((b for b in _boxes(data, 0, len(data)) if b[0] == b"moov"), None)
    if moov is None:
        raise ValueError(f"{path}: no moov box")
    _, moov_at, moov_size = moov
    children = list(_boxes(data, moov_at + 8, moov_at + moov_size))
    first_trak = min(at for kind, at, _ in children if kind == b"trak")
    udta = next(((at, size) for kind, at, size in children if kind == b"udta"), None)
    if udta is None:
        raise ValueError(f"{path}: the muxer wrote no udta box for the cover art")
    at, size = udta
    box = bytes(data[at : at + size])
    del data[at : at + size]
    data[first_trak:first_trak] = box
    path.write_bytes(bytes(data))
