"""scanner: a video library kept in step with the disk, on a durable job queue.

The public API for plugin authors is what this module exports.
"""

from scanner.errors import ProbeError
from scanner.jobs.context import JobContext
from scanner.jobs.types import JobType
from scanner.library.probe import VideoInfo
from scanner.plugins.hookspecs import hookimpl
from scanner.services import Services

__version__ = "0.1.0"
__all__ = [
    "JobContext",
    "JobType",
    "ProbeError",
    "Services",
    "VideoInfo",
    "__version__",
    "hookimpl",
]
