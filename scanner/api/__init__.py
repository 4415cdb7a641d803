"""The HTTP API: one blueprint factory per resource, each given the services it uses."""

from __future__ import annotations

from typing import Any, NoReturn

import flask_smorest

# Numbers beyond what the database takes are refused where they come in, not overflowed in
# its driver: an id (a video's is PostgreSQL's 4-byte integer) and an offset (a 64-bit one).
LARGEST_ID = 2**31 - 1
LARGEST_OFFSET = 2**63 - 1


def abort(code: int, message: str | None = None, **kwargs: Any) -> NoReturn:
    """flask-smorest's ``abort`` (its JSON error body), typed as never returning."""
    flask_smorest.abort(code, message=message, **kwargs)
    raise AssertionError("abort returned")  # pragma: no cover
