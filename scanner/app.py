"""The web process: ``create_app(settings)`` builds the Flask app with its API."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

import swagger_ui_bundle
from flask import Flask, request, send_from_directory
from flask.typing import ResponseReturnValue
from flask_smorest import Api
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from scanner import __version__
from scanner.api import LARGEST_ID, abort, health, jobs, plugins, videos
from scanner.config import Settings
from scanner.services import Services, build_services

API_PREFIX = "/api/v1"
OPEN_PATHS = frozenset({f"{API_PREFIX}/health"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A job's payload names things (paths, ids); it does not carry them. A larger body is refused
# (413) before it is read, rather than stored twice (payload and result) and listed back.
MAX_BODY = 1 << 20

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
        # Werkzeug's own headers, as a 405's Allow, without its HTML Content-Type.
        kept = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return payload, code, {**kept, **(headers or {})}


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
    # Werkzeug would answer /api//v1/jobs with an HTML redirect; here it is a JSON 404.
    app.url_map.merge_slashes = False
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
        # One byte over: Werkzeug cuts a chunked body at the limit without a word; a body
        # read to one byte past MAX_BODY is known to be too large (``_check_body``).
        MAX_CONTENT_LENGTH=MAX_BODY + 1,
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
        if blueprints is not None and not isinstance(blueprints, list | tuple):
            services.plugins.fail(plugin, f"scanner_blueprints returned {blueprints!r}, not a list")
            continue
        # All or none: a failed plugin serves no route (its others may rely on what failed).
        names = [b.name for b in blueprints or ()]
        taken = [n for i, n in enumerate(names) if n in app.blueprints or n in names[:i]]
        if taken:
            services.plugins.fail(
                plugin, f"its blueprint could not be registered: the name {taken[0]!r} is taken"
            )
            continue
        for blueprint in blueprints or ():
            try:
                api.register_blueprint(blueprint, url_prefix=API_PREFIX)
            except Exception as exc:
                services.plugins.fail(plugin, f"its blueprint could not be registered: {exc}")
                break

    @app.get("/api/docs/static/<path:filename>")
    def swagger_static(filename: str) -> ResponseReturnValue:
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    @app.before_request
    def guard() -> None:
        if not request.path.startswith(API_PREFIX):
            return
        token = services.settings.api_token
        if token and request.path not in OPEN_PATHS:
            # The scheme's name is case-insensitive (RFC 9110); the token is compared whole,
            # in constant time.
            scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                abort(
                    401,
                    message="send the API token as 'Authorization: Bearer <token>'",
                    headers={"WWW-Authenticate": 'Bearer realm="scanner"'},
                )
        # PostgreSQL's text cannot hold a NUL byte, and no path, id or name has one.
        if "\0" in request.path or any("\0" in v for _, v in request.args.items(multi=True)):
            abort(400, message="the URL holds a NUL byte (%00); remove it")
        if request.method in BODY_METHODS:
            _check_body()

    return app


def _check_body() -> None:
    """Read the body once here, so a body too large (413), not JSON (415) or JSON Python
    cannot read (400: nested too deeply, a number of thousands of digits, a syntax error) is
    answered with the reason for every route, plugins' too: webargs turns only a syntax error
    into a 400, and the rest into a 500. No body, or an empty one (sent in chunks, say), is
    the route's to judge."""
    try:
        body = request.get_data(cache=True)  # cached: webargs reads the same bytes
    except RequestEntityTooLarge:
        body = None
    if body is None or len(body) > MAX_BODY:
        abort(
            413,
            message=f"the body is over {MAX_BODY:,} bytes; a job's payload names files, "
            "it does not hold them",
        )
    if not body:
        return
    if not request.is_json:
        abort(415, message="send the request body as JSON, with Content-Type: application/json")
    try:
        json.loads(body)
    except RecursionError:
        abort(400, message="the JSON body is nested too deeply to read")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        abort(400, message=f"the body is not valid JSON: {exc}")
    except ValueError:  # Python reads no integer of over 4,300 digits
        abort(400, message="the JSON body holds a number too long to read")
