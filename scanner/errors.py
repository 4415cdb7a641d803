"""Every exception scanner raises on purpose, under one base class."""


class ScannerError(Exception):
    """Base class for scanner's own errors."""


class ConfigError(ScannerError):
    """A setting is missing or malformed."""


class PluginError(ScannerError):
    """A plugin could not be loaded or registered something invalid."""


class JobNotFound(ScannerError):
    """No job has that id."""


class InvalidTransition(ScannerError):
    """A job was asked to move to a state its current state does not lead to."""


class JobInterrupted(ScannerError):
    """Raised inside a running handler to stop it; the runner records why."""


class JobCancelled(JobInterrupted):
    """The job was cancelled while it ran."""


class JobTimedOut(JobInterrupted):
    """The job ran past its time limit."""


class JobShutdown(JobInterrupted):
    """The consumer is shutting down; the job goes back to the queue to run again."""


class ProbeError(ScannerError):
    """A file could not be read as a video; the message says why in plain words."""


class ScanRootError(ScannerError):
    """A scan root is missing, not a directory, unreadable or outside the allowed roots."""
