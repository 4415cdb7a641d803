"""Scan speed (issue #3): cold scan against ffprobe, rescans, and how a scan scales.

Corpus: real videos made with PyAV in several containers and codecs; most files are hard
links to them (one inode, many paths), so 100,000 files cost little disk. Every file is
probed for real either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from itertools import islice
from pathlib import Path
from typing import Any

from benchmarks.common import consumer, data_dir, peak_rss_mb, report, timer
from scanner.config import DEFAULT_VIDEO_EXTENSIONS, Settings
from scanner.jobs.states import Status
from scanner.library.probe import probe
from scanner.library.scan import Scanner
from scanner.library.store import VideoStore
from scanner.library.walk import walk
from scanner.services import build_services

from media import make_corpus

FFPROBE_SAMPLE = 300


def ffprobe_rate(root: Path) -> float:
    """Files per second for the approach we replace: the same walk, one ffprobe per file."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise SystemExit("ffprobe is needed for the baseline: apt-get install ffmpeg")
    files = [f.path for f in islice(walk(str(root), DEFAULT_VIDEO_EXTENSIONS), FFPROBE_SAMPLE)]
    args = [ffprobe, "-v", "error", "-show_format", "-show_streams", "-of", "json"]
    with timer() as t:
        for path in files:
            subprocess.run([*args, path], capture_output=True, check=True)
    return len(files) / t[0]


def serial_probe_rate(root: Path, count: int = 3000) -> float:
    files = [f.path for f in islice(walk(str(root), DEFAULT_VIDEO_EXTENSIONS), count)]
    with timer() as t:
        for path in files:
            probe(path)
    return len(files) / t[0]


def scan_in_consumer(env: dict[str, str], root: Path) -> tuple[dict[str, Any], float, float]:
    """A cold scan of ``root`` by a real consumer: its result, seconds, and peak memory (MB)."""
    services = build_services(Settings.from_env(env))
    with consumer(env, workers=1) as pid:
        job = services.jobs.submit("scan", {"path": str(root), "recursive": True})
        while not (job := services.store.get(job.id)).terminal:
            time.sleep(0.05)
        rss = peak_rss_mb(pid)
    assert job.status is Status.COMPLETE, job.error
    assert job.started_at and job.finished_at and job.result
    return job.result, (job.finished_at - job.started_at).total_seconds(), rss


def bare_walk_rate(root: Path) -> float:
    with timer() as t:
        n = 0
        stack = [str(root)]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    else:
                        e.stat(follow_symlinks=False)
                        n += 1
    return n / t[0]


def main(large: int = 100_000, small: int = 10_000) -> None:
    print(f"== scan: corpus of {large:,} files (python -m benchmarks scan)")
    with data_dir() as tmp:
        corpus = tmp / "corpus"
        with timer() as t:
            make_corpus(corpus, large)
        report("corpus made in", t[0], "s")
        subset = corpus / "g000"  # the first 10,000 files (make_corpus: 10,000 per group)
        assert sum(1 for _ in walk(str(subset), DEFAULT_VIDEO_EXTENSIONS)) == small

        baseline = ffprobe_rate(subset)
        report(f"ffprobe subprocess per file ({FFPROBE_SAMPLE} files)", baseline, "files/s")
        serial = serial_probe_rate(subset)
        report("in-process probe, one at a time", serial, "files/s", f"{serial / baseline:.0f}x")

        small_env = {"SCANNER_DATA_DIR": str(tmp / "small")}
        result, small_s, small_rss = scan_in_consumer(small_env, subset)
        assert result["new"] == small and not result["errors"], result
        rate = small / small_s
        report(
            f"cold scan, {small:,} files (consumer)",
            rate,
            "files/s",
            f"{rate / baseline:.0f}x ffprobe (target >= 120x)",
        )

        large_env = {"SCANNER_DATA_DIR": str(tmp / "large")}
        result, large_s, large_rss = scan_in_consumer(large_env, corpus)
        assert result["new"] == large and not result["errors"], result
        report(f"cold scan, {large:,} files (consumer)", large / large_s, "files/s")
        report(f"{large:,} / {small:,} cold scan time", large_s / small_s, "x", "(target <= 11x)")
        report(f"consumer peak memory, {large:,}-file scan", large_rss, "MB", "(target < 120)")
        report(f"consumer peak memory, {small:,}-file scan", small_rss, "MB")

        store = VideoStore(build_services(Settings.from_env(large_env)).engine)
        scanner = Scanner(store, extensions=DEFAULT_VIDEO_EXTENSIONS)
        report("bare os.scandir + stat walk", bare_walk_rate(corpus), "files/s")
        best = 0.0
        for _ in range(3):
            with timer() as t:
                again = scanner.scan(str(corpus))
            assert again.unchanged == large, again
            best = max(best, large / t[0])
        report(
            f"rescan unchanged, {large:,} files (best of 3)", best, "files/s", "(target >= 150,000)"
        )
