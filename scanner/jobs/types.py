"""What a plugin registers: a named job type with its handler, payload schema and policy."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from marshmallow import Schema

from scanner.errors import PluginError

if TYPE_CHECKING:
    from scanner.jobs.context import JobContext

Handler = Callable[["JobContext", dict[str, Any]], Mapping[str, Any] | None]
# Whether two payloads of one type would do the same work (two scans of one tree, say).
Overlaps = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")
# The longest timeout or retry delay a job may have, in seconds: 30 days. Beyond it a date
# overflows in Huey's scheduler and the job would be stuck, never retried nor failed.
LONGEST = 30 * 24 * 3600.0


class EmptyPayload(Schema):
    """The payload of a job type that takes none."""


@dataclass(frozen=True)
class JobType:
    """A kind of job. ``handler(ctx, payload)`` runs it and returns its result (a dict) or None.

    ``schema`` (a marshmallow ``Schema`` class or instance) checks the payload when the job is
    submitted; the handler receives what it loads. ``timeout`` (seconds, None for none),
    ``retries``, ``retry_delay`` (seconds, multiplied by ``retry_backoff`` after each failed
    attempt) and ``priority`` (higher runs first) are the defaults for jobs of this type.
    ``overlaps(a, b)``, when given, refuses a job whose payload overlaps that of a job of this
    type already pending or running (``JobConflict``, a 409 in the API).
    """

    name: str
    handler: Handler
    schema: type[Schema] | Schema = EmptyPayload
    description: str = ""
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    retry_backoff: float = 2.0
    priority: int = 0
    overlaps: Overlaps | None = None

    def __post_init__(self) -> None:
        # Checked here, where a plugin registers it: a bad setting found later would fail
        # every submission of the type, or the listing of all types, with a 500.
        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise PluginError(
                f"job type name {self.name!r} must be lower-case letters, digits, '_', '.' or '-'"
            )
        if not callable(self.handler):
            raise PluginError(
                f"job type {self.name!r}: its handler {self.handler!r} is not callable"
            )
        if not (
            isinstance(self.schema, Schema)
            or (isinstance(self.schema, type) and issubclass(self.schema, Schema))
        ):
            raise PluginError(
                f"job type {self.name!r}: its schema {self.schema!r} is not a marshmallow Schema"
            )
        for setting, low, high in (("retries", 0, 100), ("priority", -1000, 1000)):
            value = getattr(self, setting)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise PluginError(
                    f"job type {self.name!r}: {setting} must be an integer from {low} to {high}"
                )
        numbers = {"timeout": self.timeout or 0, "retry_delay": self.retry_delay}
        numbers["retry_backoff"] = self.retry_backoff
        for setting, value in numbers.items():
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise PluginError(f"job type {self.name!r}: {setting} must be a finite number")
        if self.retry_delay < 0 or (self.timeout or 0) < 0:
            raise PluginError(f"job type {self.name!r}: its retry delay and timeout must be >= 0")
        if self.retry_backoff <= 0:
            raise PluginError(f"job type {self.name!r}: retry_backoff must be more than 0")
        if max(self.retry_delay, self.timeout or 0) > LONGEST:
            raise PluginError(
                f"job type {self.name!r}: its timeout and retry delay must be at most "
                f"{LONGEST:,.0f}s (30 days)"
            )

    @functools.cached_property
    def payload_schema(self) -> Schema:
        # One instance for every job of the type: building a marshmallow Schema is costly.
        return self.schema() if isinstance(self.schema, type) else self.schema
