"""The HTTP API: one blueprint factory per resource, each given the services it uses."""

from __future__ import annotations

from typing import Any, NoReturn

import flask_smorest

# The largest integer a database column holds (SQLite's INTEGER, PostgreSQL's BIGINT): ids and
# offsets beyond it are refused where they come in, not overflowed in the database driver.
LARGEST_INT = 2**63 - 1


def abort(code: int, message: str | None = None, **kwargs: Any) -> NoReturn:
    """flask-smorest's ``abort`` (its JSON error body), typed as never returning."""
    flask_smorest.abort(code, message=message, **kwargs)
    raise AssertionError("abort returned")  # pragma: no cover
