"""The web process: ``create_app(settings)`` builds the Flask app with its API."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import swagger_ui_bundle
from flask import Flask, request, send_from_directory
from flask.typing import ResponseReturnValue
from flask_smorest import Api
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from scanner import __version__
from scanner.api import LARGEST_ID, abort, health, jobs, plugins, videos
from scanner.config import Settings
from scanner.services import Services, build_services

API_PREFIX = "/api/v1"
OPEN_PATHS = frozenset({f"{API_PREFIX}/health"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

log = logging.getLogger(__name__)


class StoredInteger(IntegerConverter):
    """``<int:...>`` in every route, plugins' too, matches only what an id column holds
    (a larger id is no such video: 404, not an overflow in the driver)."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", LARGEST_ID)
        super().__init__(map, *args, **kwargs)


class ScannerApi(Api):  # type: ignore[misc]
    def handle_http_exception(self, error: HTTPException) -> Any:
        """flask-smorest's JSON error body, always with a ``message`` a person can act on."""
        payload, code, headers = super().handle_http_exception(error)
        payload.setdefault("message", error.description)
        return payload, code, headers


def _security(token: str) -> dict[str, Any]:
    """The OpenAPI security scheme, when a token guards the API."""
    if not token:
        return {}
    scheme = {"type": "http", "scheme": "bearer"}
    return {"components": {"securitySchemes": {"token": scheme}}, "security": [{"token": []}]}


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> Flask:
    """The Flask app for ``settings`` (default: from SCANNER_* variables)."""
    if services is None:
        services = build_services(settings or Settings.from_env(), role="web")
    app = Flask(__name__)
    app.url_map.converters["int"] = StoredInteger
    app.config.update(
        API_TITLE="scanner",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        # Served from the swagger-ui-bundle package: the docs work with no internet access.
        OPENAPI_SWAGGER_UI_URL="/api/docs/static/",
        API_SPEC_OPTIONS=_security(services.settings.api_token),
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep fields in schema order
    app.extensions["scanner"] = services
    api = ScannerApi(app)
    for blueprint in (
        jobs.create_blueprint(services, api),
        plugins.create_blueprint(services),
        health.create_blueprint(services),
        videos.create_blueprint(services),
    ):
        api.register_blueprint(blueprint, url_prefix=API_PREFIX)
    for plugin, blueprints in services.plugins.call_each("scanner_blueprints", services=services):
        for blueprint in blueprints or ():
            try:
                api.register_blueprint(blueprint, url_prefix=API_PREFIX)
            except Exception as exc:
                services.plugins.fail(plugin, f"its blueprint could not be registered: {exc}")

    @app.get("/api/docs/static/<path:filename>")
    def swagger_static(filename: str) -> ResponseReturnValue:
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    @app.before_request
    def guard() -> None:
        if not request.path.startswith(API_PREFIX):
            return
        token = services.settings.api_token
        if token and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                abort(401, message="send the API token as 'Authorization: Bearer <token>'")
        # PostgreSQL's text cannot hold a NUL byte, and no path, id or name has one.
        if "\0" in request.path or any("\0" in v for _, v in request.args.items(multi=True)):
            abort(400, message="the URL holds a NUL byte (%00); remove it")
        if request.method in BODY_METHODS and request.content_length and not request.is_json:
            abort(415, message="send the request body as JSON, with Content-Type: application/json")

    return app
