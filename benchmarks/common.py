"""What the benchmarks share: timing, a temporary data directory, a real consumer process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))  # the PyAV video makers live with the tests


def report(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"  {name:<46} {value:>12,.1f} {unit}{'  ' + note if note else ''}", flush=True)


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` holds the seconds it took."""
    box: list[float] = []
    start = time.perf_counter()
    yield box
    box.append(time.perf_counter() - start)


@contextlib.contextmanager
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="scanner-bench-") as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def consumer(
    env: dict[str, str],
    workers: int = 4,
    log: Path | None = None,
    app: str = "scanner.worker.huey",
) -> Iterator[int]:
    """A real ``huey_consumer`` of ``app`` (the service's, on ``env``'s data directory, or a
    bare Huey app's), once it says it started; yields its pid."""
    log = log or Path(env["SCANNER_DATA_DIR"]) / "consumer.log"
    args = [str(BIN / "huey_consumer"), app, "-w", str(workers)]
    args += ["-k", "thread", "-d", "0.001", "-m", "0.01", "-b", "1.01"]
    with log.open("ab") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while b"Huey consumer started" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"consumer did not start:\n{log.read_text()}")
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a live process, from the kernel's own high-water mark."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")
