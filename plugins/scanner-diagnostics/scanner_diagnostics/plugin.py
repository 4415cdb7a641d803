"""Small job types for checking a deployment end to end (and for the project's own tests)."""

from __future__ import annotations

import time
from typing import Any

from marshmallow import Schema, fields, validate

from scanner import JobContext, JobType, hookimpl


class EchoPayload(Schema):
    text = fields.String(required=True)


def echo(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    ctx.progress(1, 1)
    return {"echo": payload["text"], "attempt": ctx.attempt}


class SleepPayload(Schema):
    seconds = fields.Float(required=True, validate=validate.Range(min=0, max=3600))
    steps = fields.Integer(load_default=10, validate=validate.Range(min=1, max=100_000))
    check = fields.Boolean(
        load_default=True, metadata={"description": "False: ignore cancel and timeout"}
    )


def sleep(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep in ``steps`` slices, reporting progress after each one."""
    steps = payload["steps"]
    for step in range(1, steps + 1):
        time.sleep(payload["seconds"] / steps)
        if payload["check"]:
            ctx.progress(step, steps)
    return {"slept": payload["seconds"]}


class FailPayload(Schema):
    message = fields.String(load_default="failed on purpose")
    until_attempt = fields.Integer(
        load_default=None,
        allow_none=True,
        metadata={"description": "succeed from this attempt on; null: always fail"},
    )


class DiagnosticFailure(Exception):
    """The failure the ``fail`` job type raises on purpose."""


def fail(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    until = payload["until_attempt"]
    if until is None or ctx.attempt < until:
        raise DiagnosticFailure(payload["message"])
    return {"succeeded_on_attempt": ctx.attempt}


def noop(ctx: JobContext, payload: dict[str, Any]) -> None:
    return None


@hookimpl
def scanner_job_types() -> list[JobType]:
    return [
        JobType("echo", echo, EchoPayload, description="Return the text it was given."),
        JobType("sleep", sleep, SleepPayload, description="Sleep, reporting progress."),
        JobType(
            "fail",
            fail,
            FailPayload,
            description="Fail (until a given attempt); retried twice, 0.2 s apart.",
            retries=2,
            retry_delay=0.2,
        ),
        JobType("noop", noop, description="Do nothing; for measuring the platform."),
    ]
