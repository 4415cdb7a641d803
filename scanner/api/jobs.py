"""``/jobs`` and ``/job-types``: submit, list, read, wait for and cancel jobs."""

from __future__ import annotations

import time
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Api, Blueprint
from marshmallow import Schema, ValidationError, fields, validate
from webargs.fields import DelimitedList

from scanner.api import LARGEST_OFFSET, abort
from scanner.errors import InvalidTransition, JobNotFound
from scanner.jobs.service import JobConflict, QueueUnavailable, UnknownJobType
from scanner.jobs.states import Status
from scanner.jobs.store import Job
from scanner.jobs.types import LONGEST
from scanner.services import Services

MAX_WAIT = 300.0


class JobSchema(Schema):
    job_id = fields.String(metadata={"description": "The job's id (a UUID)."})
    type = fields.String()
    status = fields.String(metadata={"enum": [s.value for s in Status]})
    payload = fields.Dict()
    progress = fields.Float(allow_none=True, metadata={"description": "0.0-1.0, or null."})
    result = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)
    attempts = fields.Integer()
    retries = fields.Integer(metadata={"description": "Retries allowed after a failure."})
    retry_delay = fields.Float(metadata={"description": "Seconds before the first retry."})
    priority = fields.Integer()
    timeout = fields.Float(allow_none=True, metadata={"description": "Seconds, or null."})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    next_attempt_at = fields.DateTime(
        allow_none=True, metadata={"description": "When a job waiting to retry runs again."}
    )
    cancel_requested_at = fields.DateTime(allow_none=True)
    consumer = fields.String(allow_none=True, metadata={"description": "Who ran it last."})


class AttemptSchema(Schema):
    number = fields.Integer()
    consumer = fields.String(metadata={"description": "The consumer, as host:pid:token."})
    started_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    outcome = fields.String(
        allow_none=True,
        metadata={
            "description": "complete, failed, timeout, cancelled, shutdown (the consumer "
            "stopped) or crashed (the consumer died); null while it runs",
            "enum": ["complete", "failed", "timeout", "cancelled", "shutdown", "crashed"],
        },
    )
    error = fields.String(allow_none=True)


class JobDetailSchema(JobSchema):
    history = fields.List(
        fields.Nested(AttemptSchema), metadata={"description": "Every attempt, oldest first."}
    )


class JobSubmitSchema(Schema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    payload = fields.Dict(load_default=dict)
    # strict: "7" or 2.9 is refused, not read as 7 or 2.
    priority = fields.Integer(strict=True, validate=validate.Range(-1000, 1000))
    timeout = fields.Float(validate=validate.Range(min=0, max=LONGEST, min_inclusive=False))
    retries = fields.Integer(strict=True, validate=validate.Range(0, 100))
    retry_delay = fields.Float(validate=validate.Range(0, LONGEST))


class JobListArgs(Schema):
    status = DelimitedList(
        fields.String(validate=validate.OneOf([s.value for s in Status])),
        metadata={"description": "One status, or several separated by commas."},
    )
    type = fields.String(metadata={"description": "One job type; empty: every type."})
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(0, LARGEST_OFFSET))


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


class WaitArgs(Schema):
    timeout = fields.Float(load_default=30.0, validate=validate.Range(0, MAX_WAIT))


class JobTypeSchema(Schema):
    name = fields.String()
    description = fields.String()
    timeout = fields.Float(allow_none=True)
    retries = fields.Integer()
    retry_delay = fields.Float()
    retry_backoff = fields.Float()
    priority = fields.Integer()
    payload_schema = fields.Dict(metadata={"description": "The payload as a JSON schema."})


class JobTypeListSchema(Schema):
    job_types = fields.List(fields.Nested(JobTypeSchema))


def _first(messages: Any) -> str:
    """The first error message in marshmallow's nested messages, for the one-line summary."""
    while isinstance(messages, dict | list) and messages:
        messages = next(iter(messages.values())) if isinstance(messages, dict) else messages[0]
    return str(messages)


def submit(
    services: Services,
    type: str,
    payload: dict[str, Any],
    *,
    errors_at: str | None = "payload",
    **options: Any,
) -> Any:
    """Submit a job and answer 202 with a Location, or abort with a clear 4xx/503.

    Payload field errors are reported under ``errors_at`` in the request body (``None``: the
    payload is the body itself).
    """
    try:
        job = services.jobs.submit(type, payload, **options)
    except UnknownJobType as exc:
        abort(422, message=str(exc), errors={"json": {"type": [str(exc)]}})
    except ValidationError as exc:
        where = exc.messages if errors_at is None else {errors_at: exc.messages}
        abort(
            422,
            message=f"the payload does not fit the {type!r} job type: {_first(exc.messages)}",
            errors={"json": where},
        )
    except JobConflict as exc:
        abort(409, message=str(exc), errors={"json": {"job_id": [exc.job.id]}})
    except QueueUnavailable as exc:
        abort(503, message=str(exc))
    return job, 202, {"Location": url_for("jobs.JobItem", job_id=job.id)}


def create_blueprint(services: Services, api: Api) -> Blueprint:
    """The jobs routes; ``api`` lends its converter to show payload schemas as JSON schema."""
    blp = Blueprint("jobs", __name__, description="Submit, follow and cancel jobs.")
    store = services.store

    def get_job(job_id: str) -> Job:
        try:
            return store.get(job_id)
        except JobNotFound as exc:
            abort(404, message=str(exc))

    @blp.route("/jobs")
    class Jobs(MethodView):
        @blp.arguments(JobListArgs(), location="query")
        @blp.response(200, JobListSchema)
        def get(self, args: dict[str, Any]) -> dict[str, Any]:
            """List jobs, newest first, filtered by status and type."""
            found, total = store.list_jobs(
                status=[Status(s) for s in args.get("status", [])],
                type=args.get("type") or None,  # ?type= (a form left empty) filters nothing
                limit=args["limit"],
                offset=args["offset"],
            )
            return {"jobs": found, "total": total, "limit": args["limit"], "offset": args["offset"]}

        @blp.arguments(JobSubmitSchema())
        @blp.response(202, JobSchema, headers={"Location": {"description": "The job's URL."}})
        def post(self, body: dict[str, Any]) -> Any:
            """Submit a job of any registered type; its payload is checked by the type's schema."""
            return submit(services, body.pop("type"), body.pop("payload"), **body)

    @blp.route("/jobs/<job_id>")
    class JobItem(MethodView):
        @blp.response(200, JobDetailSchema)
        def get(self, job_id: str) -> dict[str, Any]:
            """One job, with live progress while it runs and the history of its attempts."""
            try:
                job, history = store.detail(job_id)
            except JobNotFound as exc:
                abort(404, message=str(exc))
            fields = {name: getattr(job, name) for name in job.__slots__}  # no deep copy
            return {**fields, "job_id": job.id, "history": history}

    @blp.route("/jobs/<job_id>/cancel", methods=["POST"])
    @blp.response(200, JobSchema, description="Cancelled (it was pending).")
    @blp.alt_response(202, schema=JobSchema, description="Running: asked to stop; poll it.")
    @blp.alt_response(409, description="Already finished.")
    def cancel(job_id: str) -> Any:
        """Cancel a pending job at once, or ask a running one to stop."""
        try:
            job = store.cancel(job_id)
        except JobNotFound as exc:
            abort(404, message=str(exc))
        except InvalidTransition as exc:
            abort(409, message=str(exc))
        return job, 200 if job.terminal else 202

    @blp.route("/jobs/<job_id>/wait")
    @blp.arguments(WaitArgs(), location="query")
    @blp.response(200, JobSchema)
    @blp.alt_response(408, description="Still not finished at the deadline; the job goes on.")
    def wait(args: dict[str, Any], job_id: str) -> Job:
        """Answer once the job is finished, or 408 after ``timeout`` seconds."""
        deadline = time.monotonic() + args["timeout"]
        delay = 0.02
        while True:
            job = get_job(job_id)
            left = deadline - time.monotonic()
            if job.terminal:
                return job
            if left <= 0:
                abort(
                    408,
                    message=f"job {job_id} is still {job.status} after {args['timeout']:g}s",
                )
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 0.5)

    @blp.route("/job-types")
    @blp.response(200, JobTypeListSchema)
    def job_types() -> dict[str, Any]:
        """The job types the loaded plugins provide, with their payload schemas."""
        converter = api.ma_plugin.converter
        return {
            "job_types": [
                {
                    "name": t.name,
                    "description": t.description,
                    "timeout": t.timeout,
                    "retries": t.retries,
                    "retry_delay": t.retry_delay,
                    "retry_backoff": t.retry_backoff,
                    "priority": t.priority,
                    "payload_schema": converter.schema2jsonschema(t.payload_schema),
                }
                for t in sorted(services.plugins.job_types.values(), key=lambda t: t.name)
            ]
        }

    return blp
