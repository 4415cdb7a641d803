"""``/plugins``: what was loaded, from which distribution, providing what."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from marshmallow import Schema, fields

from scanner.services import Services


class PluginSchema(Schema):
    name = fields.String(metadata={"description": "The entry-point name."})
    distribution = fields.String(allow_none=True)
    version = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": ["loaded", "failed"]})
    hooks = fields.List(fields.String())
    job_types = fields.List(fields.String())
    error = fields.String(allow_none=True, metadata={"description": "Why it failed to start."})
    last_error = fields.String(
        allow_none=True,
        metadata={
            "description": "The latest error one of its hooks raised in this web process "
            "while it ran (consumers log theirs)."
        },
    )


class PluginListSchema(Schema):
    plugins = fields.List(fields.Nested(PluginSchema))


def create_blueprint(services: Services) -> Blueprint:
    blp = Blueprint("plugins", __name__, description="Loaded plugins.")

    @blp.route("/plugins")
    @blp.response(200, PluginListSchema)
    def plugins() -> dict[str, Any]:
        """Every plugin found, with its version, hooks and job types; failed ones say why."""
        infos = sorted(services.plugins.infos.values(), key=lambda i: i.name)
        return {"plugins": infos}

    return blp
