"""``/health``: is the web process up, can it reach the database and queue, are consumers alive."""

from __future__ import annotations

import os
from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields

from scanner import __version__
from scanner.db import schema_version
from scanner.jobs.store import utcnow
from scanner.services import Services


class HealthSchema(Schema):
    status = fields.String(
        metadata={
            "description": "ok; degraded (no live consumer, a consumer lacks job types, or a "
            "plugin failed); down (database or queue unreachable)"
        }
    )
    web = fields.Dict()
    database = fields.Dict()
    queue = fields.Dict()
    consumers = fields.Dict()
    plugins = fields.Dict(metadata={"description": "Plugins that failed to load, and why."})


def _check(probe: Any) -> dict[str, Any]:
    try:
        return {"status": "ok", **probe()}
    except Exception as exc:
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}


def create_blueprint(services: Services) -> Blueprint:
    blp = Blueprint("health", __name__, description="Health of the service.")
    settings = services.settings

    def consumers() -> dict[str, Any]:
        alive = services.store.live_consumers(settings.heartbeat_seconds)
        accepted = set(services.plugins.job_types)
        now = utcnow()
        return {
            "alive": len(alive),
            "last_heartbeat": alive[0].last_seen.isoformat() if alive else None,
            "consumers": [
                {
                    "id": c.id,
                    "seconds_since_heartbeat": round((now - c.last_seen).total_seconds(), 3),
                    "missing_job_types": sorted(accepted - set(c.job_types)),
                }
                for c in alive
            ],
        }

    @blp.route("/health")
    @blp.doc(security=[])  # open even when a token guards the rest
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="Database or queue unreachable.")
    def health() -> Any:
        """Answers without a token, for load balancers and monitors."""
        report = {
            "web": {"status": "ok", "pid": os.getpid(), "version": __version__},
            "database": _check(
                lambda: {
                    "backend": services.engine.dialect.name,
                    "schema_version": schema_version(services.engine),
                }
            ),
            "queue": _check(
                lambda: {
                    "backend": services.queue.backend,
                    "waiting": services.queue.pending_count(),
                }
            ),
            "consumers": _check(consumers),
            "plugins": {
                "failed": {i.name: i.error for i in services.plugins.infos.values() if i.error}
            },
        }
        if any(report[k]["status"] != "ok" for k in ("database", "queue")):
            return {"status": "down", **report}, 503
        c = report["consumers"]
        lacking = c.get("consumers") and any(x["missing_job_types"] for x in c["consumers"])
        degraded = c["status"] != "ok" or not c["alive"] or lacking or report["plugins"]["failed"]
        return {"status": "degraded" if degraded else "ok", **report}

    return blp
