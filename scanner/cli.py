"""The ``scanner`` command: talk to a running service over its HTTP API."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import click
import requests

from scanner.backup import backup as do_backup
from scanner.config import Settings
from scanner.errors import ConfigError
from scanner.plugins.manager import get_plugin_manager


class Client:
    """The few API calls the command needs, with the token and errors handled once."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(method, self.url + path, timeout=30, **kwargs)
        except requests.ConnectionError:
            raise click.ClickException(
                f"cannot reach the service at {self.url}; is it running (make run)? "
                "Set SCANNER_URL to point elsewhere."
            ) from None
        except requests.Timeout:
            raise click.ClickException(f"the service at {self.url} did not answer in 30s") from None
        except requests.RequestException as exc:  # a URL without http://, say
            raise click.ClickException(f"cannot ask {self.url}: {exc}; check SCANNER_URL") from None
        try:
            body = response.json() if response.content else None
        except ValueError:  # a proxy's HTML error page, or not the service at all
            raise click.ClickException(
                f"{self.url} answered {response.status_code} {response.reason}, not with JSON; "
                "is SCANNER_URL the service?"
            ) from None
        if response.status_code >= 400:
            message = (body or {}).get("message") or response.reason
            errors = (body or {}).get("errors")
            raise click.ClickException(f"{message}" + (f" {errors}" if errors else ""))
        return body


@click.group()
@click.option(
    "--url",
    envvar="SCANNER_URL",
    default=lambda: f"http://127.0.0.1:{os.environ.get('PORT', '8000')}",
    show_default="http://127.0.0.1:$PORT (8000)",
    help="Where the service listens.",
)
@click.option("--token", envvar="SCANNER_API_TOKEN", default="", help="The API token, if set.")
@click.pass_context
def main(ctx: click.Context, url: str, token: str) -> None:
    """Keep a video library in step with the disk."""
    ctx.obj = Client(url, token)


@main.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--recursive/--no-recursive", default=True, help="Descend into subdirectories.")
@click.option("--wait", is_flag=True, help="Show progress until the scan ends.")
@click.pass_obj
def scan(client: Client, path: str, recursive: bool, wait: bool) -> None:
    """Scan PATH (a directory) into the library."""
    job = client.call(
        "POST", "/videos/scan", json={"path": os.path.abspath(path), "recursive": recursive}
    )
    click.echo(f"scan job {job['job_id']} {job['status']}")
    if not wait:
        return
    job = follow(client, job["job_id"])
    if job["status"] != "complete":
        raise click.ClickException(f"scan {job['status']}: {job['error'] or 'no error given'}")
    result = job["result"]
    summary = ", ".join(f"{result[k]} {k}" for k in ("new", "updated", "unchanged", "removed"))
    click.echo(f"{result['scanned']} video files: {summary}, {result['moved']} moved")
    for error in result["errors"]:
        click.echo(f"  {error['path']}: {error['error']}", err=True)
    if result["error_count"] > len(result["errors"]):
        click.echo(f"  ... and {result['error_count'] - len(result['errors'])} more", err=True)


def follow(client: Client, job_id: str) -> dict[str, Any]:
    """Poll a job, drawing its progress, until it is finished."""
    with click.progressbar(length=1000, label="scanning", file=sys.stderr) as bar:
        while True:
            job: dict[str, Any] = client.call("GET", f"/jobs/{job_id}")
            bar.update(int((job["progress"] or 0) * 1000) - bar.pos)
            if job["status"] in ("complete", "failed", "timeout", "cancelled"):
                return job
            time.sleep(0.2)


@main.command()
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def backup(destination: Path) -> None:
    """Copy the SQLite database and queue into DESTINATION, safely, while the service runs."""
    try:
        written = do_backup(Settings.from_env(), destination)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:  # no room, no permission, not a directory...
        raise click.ClickException(f"could not back up into {destination}: {exc}") from None
    for path in written:
        click.echo(f"wrote {path}")


@main.command()
def plugins() -> None:
    """List the plugins installed here, with versions, hooks and job types."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    found = get_plugin_manager(settings, disabled=settings.disabled_plugins)
    for info in sorted(found.infos.values(), key=lambda i: i.name):
        origin = f"{info.distribution} {info.version}" if info.distribution else "(not installed)"
        click.echo(f"{info.name}  [{info.status}]  {origin}")
        click.echo(f"  hooks: {', '.join(info.hooks) or '-'}")
        click.echo(f"  job types: {', '.join(info.job_types) or '-'}")
        if info.error:
            click.echo(f"  error: {info.error}")
    for name in sorted(settings.disabled_plugins):
        click.echo(f"{name}  [disabled by SCANNER_DISABLED_PLUGINS]")
