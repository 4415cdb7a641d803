"""The HTTP API through Flask's test client, against a real SQLite store and Huey queue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from scanner import JobType
from scanner.app import create_app
from scanner.config import Settings
from scanner.jobs.states import Status
from scanner.schema import MIGRATIONS
from scanner.services import Services, build_services

from conftest import services_with

JOBS = "/api/v1/jobs"


def submit(client: FlaskClient, type: str = "echo", **payload: Any) -> dict[str, Any]:
    payload = payload or ({"text": "hi"} if type == "echo" else {})
    response = client.post(JOBS, json={"type": type, "payload": payload})
    assert response.status_code == 202, response.json
    body: dict[str, Any] = response.json
    return body


def assert_error(response: Any, code: int, message: str = "") -> dict[str, Any]:
    assert response.status_code == code
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.json
    assert body["code"] == code and body["status"]
    assert message in body["message"]
    return body


def test_submit_answers_202_with_the_job_and_its_location(
    client: FlaskClient, services: Services
) -> None:
    response = client.post(JOBS, json={"type": "echo", "payload": {"text": "hi"}})
    assert response.status_code == 202
    job = response.json
    assert response.headers["Location"] == f"{JOBS}/{job['job_id']}"
    assert job["status"] == "pending" and job["type"] == "echo"
    assert job["payload"] == {"text": "hi"}
    assert job["progress"] is None and job["result"] is None and job["error"] is None
    assert job["attempts"] == 0
    assert job["created_at"].endswith("+00:00")
    for field in ("started_at", "finished_at"):
        assert job[field] is None
    assert services.queue.pending_count() == 1
    assert client.get(response.headers["Location"]).json == {**job, "history": []}


def test_submit_takes_the_type_defaults_unless_overridden(settings: Settings) -> None:
    defaults = JobType(
        "defaults", lambda ctx, payload: None, retries=3, retry_delay=0.5, timeout=9, priority=7
    )
    services = services_with(settings, scanner_job_types=lambda: [defaults])
    client = create_app(services=services).test_client()
    fields = ("retries", "retry_delay", "timeout", "priority")
    job = submit(client, "defaults")
    assert tuple(job[f] for f in fields) == (3, 0.5, 9, 7)
    body = {"type": "defaults", "retries": 0, "retry_delay": 2, "timeout": 1.5, "priority": -5}
    job = client.post(JOBS, json=body).json
    assert tuple(job[f] for f in fields) == (0, 2, 1.5, -5)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            {"type": "echo", "payload": {}},
            {"payload": {"text": ["Missing data for required field."]}},
        ),
        ({"type": "echo", "payload": {"text": 5}}, {"payload": {"text": ["Not a valid string."]}}),
        (
            {"type": "echo", "payload": {"text": "a", "x": 1}},
            {"payload": {"x": ["Unknown field."]}},
        ),
        ({"payload": {}}, {"type": ["Missing data for required field."]}),
        ({"type": "echo", "payload": []}, {"payload": ["Not a valid mapping type."]}),
        ({"type": "echo", "retries": 2.9}, {"retries": ["Not a valid integer."]}),  # not 2
        ({"type": "echo", "priority": "7"}, {"priority": ["Not a valid integer."]}),
        (
            {"type": "echo", "retries": -1},
            {"retries": ["Must be greater than or equal to 0 and less than or equal to 100."]},
        ),
        (  # more than 30 days would overflow the retry's date in the scheduler
            {"type": "echo", "retry_delay": 1e12},
            {
                "retry_delay": [
                    "Must be greater than or equal to 0 and less than or equal to 2592000.0."
                ]
            },
        ),
        (
            {"type": "echo", "timeout": 1e300},
            {"timeout": ["Must be greater than 0 and less than or equal to 2592000.0."]},
        ),
    ],
)
def test_invalid_submissions_name_the_field(
    client: FlaskClient, services: Services, body: dict[str, Any], where: dict[str, Any]
) -> None:
    error = assert_error(client.post(JOBS, json=body), 422)
    assert error["errors"]["json"] == where
    assert services.queue.pending_count() == 0
    assert services.store.list_jobs()[1] == 0


def test_unknown_job_type_lists_the_known_ones(client: FlaskClient, services: Services) -> None:
    error = assert_error(client.post(JOBS, json={"type": "nope"}), 422, "unknown job type 'nope'")
    assert "echo" in error["message"]
    assert services.queue.pending_count() == 0


def test_malformed_json_and_wrong_content_type(client: FlaskClient) -> None:
    assert_error(client.post(JOBS, data="{oops", content_type="application/json"), 400)
    assert_error(client.post(JOBS, data="type=echo", content_type="text/plain"), 415, "JSON")


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"type": "echo", "payload": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ('{"type": "echo", "priority": ' + "9" * 5000 + "}", "a number too long"),
        (b'{"type": "\xff"}', "not valid JSON: 'utf-8' codec can't decode byte 0xff"),
        ('{"type": "echo",}', "not valid JSON: Expecting property name"),
    ],
)
def test_a_body_python_cannot_read_is_a_400_that_says_why(
    client: FlaskClient, services: Services, body: str | bytes, message: str
) -> None:
    for route in (JOBS, "/api/v1/videos/scan"):
        assert_error(client.post(route, data=body, content_type="application/json"), 400, message)
    assert services.store.list_jobs()[1] == 0


def test_a_body_over_a_mebibyte_is_refused_unread(client: FlaskClient, services: Services) -> None:
    def body(size: int) -> bytes:
        empty = json.dumps({"type": "echo", "payload": {"text": ""}}).encode()
        return empty.replace(b'""', b'"' + b"x" * (size - len(empty)) + b'"')

    json_body = {"content_type": "application/json"}
    assert client.post(JOBS, data=body(1 << 20), **json_body).status_code == 202
    assert_error(client.post(JOBS, data=body((1 << 20) + 1), **json_body), 413, "1,048,576")
    assert_error(client.post(JOBS, data=body(5 << 20), **json_body), 413, "1,048,576")
    assert services.store.list_jobs()[1] == 1


def test_unknown_routes_and_methods_answer_json(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/nowhere"), 404, "not found")
    assert_error(client.get("/api//v1/jobs"), 404)  # not Werkzeug's HTML redirect
    not_allowed = client.delete(JOBS)
    assert_error(not_allowed, 405, "not allowed")
    assert set(not_allowed.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_numbers_no_database_holds_and_nul_bytes_are_refused_not_a_500(
    database: str, env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    if database == "postgresql":  # whose video ids are 4-byte integers
        env = {**env, "SCANNER_DATABASE_URL": request.getfixturevalue("postgres_url")}
    client = create_app(Settings.from_env(env)).test_client()
    assert_error(client.get(f"/api/v1/videos/{2**31}"), 404)  # no such video
    assert_error(client.delete(f"/api/v1/videos/{2**31}"), 404)
    assert client.get(f"/api/v1/jobs?offset={2**63 - 1}").json["jobs"] == []
    for listing in (JOBS, "/api/v1/videos"):
        error = assert_error(client.get(f"{listing}?offset={2**63}"), 422)
        assert "offset" in error["errors"]["query"]
    for url in (f"{JOBS}/%00", f"{JOBS}?type=%00", "/api/v1/videos?q=a&q=b%00"):
        assert_error(client.get(url), 400, "NUL byte")


def test_get_unknown_job_is_404(client: FlaskClient) -> None:
    assert_error(client.get(f"{JOBS}/does-not-exist"), 404, "no job has the id 'does-not-exist'")
    assert_error(client.post(f"{JOBS}/does-not-exist/cancel"), 404)
    assert_error(client.get(f"{JOBS}/does-not-exist/wait?timeout=0"), 404)


def test_list_filters_pages_and_validates(client: FlaskClient, services: Services) -> None:
    ids = [submit(client)["job_id"] for _ in range(3)]
    sleeper = submit(client, "sleep", seconds=1)["job_id"]
    services.store.claim(sleeper, "test")
    body = client.get(JOBS).json
    assert body["total"] == 4 and [j["job_id"] for j in body["jobs"]] == [sleeper, *ids[::-1]]
    body = client.get(f"{JOBS}?type=echo&limit=2&offset=1").json
    assert body["total"] == 3 and [j["job_id"] for j in body["jobs"]] == ids[1::-1]
    assert (body["limit"], body["offset"]) == (2, 1)
    body = client.get(f"{JOBS}?status=running").json
    assert [j["job_id"] for j in body["jobs"]] == [sleeper]
    assert client.get(f"{JOBS}?type=&status=").json["total"] == 4  # a form left empty
    assert client.get(f"{JOBS}?status=running,pending").json["total"] == 4
    assert_error(client.get(f"{JOBS}?limit=-1"), 422)["errors"]["query"]["limit"]
    assert_error(client.get(f"{JOBS}?offset=x"), 422)["errors"]["query"]["offset"]
    assert_error(client.get(f"{JOBS}?status=sleeping"), 422)["errors"]["query"]["status"]


def test_cancel_pending_then_conflict(client: FlaskClient, services: Services) -> None:
    job_id = submit(client)["job_id"]
    response = client.post(f"{JOBS}/{job_id}/cancel")
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    assert_error(client.post(f"{JOBS}/{job_id}/cancel"), 409, "already cancelled")


def test_cancel_running_is_accepted_and_pending_until_the_handler_stops(
    client: FlaskClient, services: Services
) -> None:
    job_id = submit(client, "sleep", seconds=5)["job_id"]
    services.store.claim(job_id, "test")
    response = client.post(f"{JOBS}/{job_id}/cancel")
    assert response.status_code == 202
    assert response.json["status"] == "running" and response.json["cancel_requested_at"]


def test_wait_times_out_with_408_and_returns_finished_jobs(
    client: FlaskClient, services: Services
) -> None:
    job_id = submit(client)["job_id"]
    assert_error(client.get(f"{JOBS}/{job_id}/wait?timeout=0.1"), 408, "still pending after 0.1s")
    services.store.claim(job_id, "test")
    services.store.finish(job_id, Status.COMPLETE, result={"done": 1})
    response = client.get(f"{JOBS}/{job_id}/wait?timeout=1")
    assert response.status_code == 200 and response.json["result"] == {"done": 1}
    assert_error(client.get(f"{JOBS}/{job_id}/wait?timeout=301"), 422)


def test_job_types_show_their_payload_schemas(client: FlaskClient) -> None:
    types = {t["name"]: t for t in client.get("/api/v1/job-types").json["job_types"]}
    echo = types["echo"]
    assert echo["payload_schema"]["properties"] == {"text": {"type": "string"}}
    assert echo["payload_schema"]["required"] == ["text"]
    assert types["fail"]["retries"] == 2 and types["fail"]["retry_delay"] == 0.2


def test_plugins_lists_versions_and_job_types(client: FlaskClient) -> None:
    plugins = {p["name"]: p for p in client.get("/api/v1/plugins").json["plugins"]}
    diag = plugins["diagnostics"]
    assert diag["distribution"] == "scanner-diagnostics" and diag["version"] == "0.1.0"
    assert diag["status"] == "loaded" and diag["job_types"] == ["echo", "sleep", "fail", "noop"]


def test_health_without_a_consumer_is_degraded(client: FlaskClient) -> None:
    body = client.get("/api/v1/health").json
    assert body["status"] == "degraded"
    assert body["web"]["status"] == "ok"
    assert body["database"] == {
        "status": "ok",
        "backend": "sqlite",
        "schema_version": len(MIGRATIONS),
    }
    assert body["queue"] == {"status": "ok", "backend": "sqlite", "waiting": 0}
    assert body["consumers"]["alive"] == 0 and body["consumers"]["last_heartbeat"] is None


def test_health_reports_live_consumers_and_missing_types(
    client: FlaskClient, services: Services
) -> None:
    services.store.heartbeat("h:1", "h", 1, list(services.plugins.job_types))
    body = client.get("/api/v1/health").json
    assert body["status"] == "ok" and body["consumers"]["alive"] == 1
    services.store.heartbeat("h:2", "h", 2, ["echo"])
    body = client.get("/api/v1/health").json
    assert body["status"] == "degraded"
    lacking = {c["id"]: c["missing_job_types"] for c in body["consumers"]["consumers"]}
    assert lacking["h:1"] == [] and "sleep" in lacking["h:2"]


def test_health_names_plugins_that_failed(settings: Settings) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("no luck")

    services = services_with(settings, "broken", scanner_job_types=broken)
    services.store.heartbeat("h:1", "h", 1, list(services.plugins.job_types))
    body = create_app(services=services).test_client().get("/api/v1/health").json
    assert body["status"] == "degraded"
    assert body["plugins"]["failed"] == {"broken": "scanner_job_types raised RuntimeError: no luck"}


def test_health_is_503_when_the_database_is_unreachable(tmp_path: Any) -> None:
    services = build_services(Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path)}))
    client = create_app(services=services).test_client()
    (tmp_path / "scanner.db").unlink()
    (tmp_path / "scanner.db").mkdir()  # the file is gone and cannot come back
    services.engine.dispose()
    body = client.get("/api/v1/health")
    assert body.status_code == 503 and body.json["status"] == "down"
    assert body.json["database"]["status"] == "error"


def test_api_token_guards_everything_but_health(tmp_path: Any) -> None:
    settings = Settings.from_env({"SCANNER_DATA_DIR": str(tmp_path), "SCANNER_API_TOKEN": "s3"})
    client = create_app(settings).test_client()
    refused = client.get(JOBS)
    assert_error(refused, 401, "Authorization: Bearer")
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="scanner"'
    for wrong in ("Bearer nope", "Bearer s", "Bearer s3x", "Basic s3", "s3", "Bearer"):
        assert_error(client.get(JOBS, headers={"Authorization": wrong}), 401)
    for right in ("Bearer s3", "bearer s3", "BEARER  s3 "):  # the scheme has no case
        assert client.get(JOBS, headers={"Authorization": right}).status_code == 200
    assert client.get("/api/v1/health").status_code == 200
    spec = client.get("/api/openapi.json").json
    assert spec["components"]["securitySchemes"]["token"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"token": []}]
    assert spec["paths"]["/api/v1/health"]["get"]["security"] == []  # open, as it is


def test_openapi_document_and_docs_are_served_offline(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").json
    assert "/api/v1/jobs" in spec["paths"] and "/api/v1/jobs/{job_id}/wait" in spec["paths"]
    page = client.get("/api/docs")
    assert page.status_code == 200 and b"/api/docs/static/swagger-ui-bundle.js" in page.data
    assert client.get("/api/docs/static/swagger-ui-bundle.js").status_code == 200


def test_a_queue_that_refuses_leaves_no_job_behind(client: FlaskClient, services: Services) -> None:
    services.queue.huey.storage.filename = "/proc/no/such/dir/queue.db"
    services.queue.huey.storage.close()
    assert_error(client.post(JOBS, json={"type": "echo", "payload": {"text": "x"}}), 503, "queue")
    assert services.store.list_jobs()[1] == 0
