"""Plugin discovery through real entry points, and isolation of broken plugins."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from scanner import JobType
from scanner.config import Settings
from scanner.errors import PluginError
from scanner.plugins.manager import get_plugin_manager

from conftest import fake_plugin, services_with

SETTINGS = Settings.from_env({})


def handler(ctx: Any, payload: dict[str, Any]) -> None:
    return None


def test_installed_plugins_are_found_through_entry_points() -> None:
    plugins = get_plugin_manager(SETTINGS)
    info = plugins.infos["diagnostics"]
    assert info.distribution == "scanner-diagnostics"
    assert info.version == "0.1.0"
    assert info.status == "loaded"
    assert info.hooks == ["scanner_job_types"]
    assert {"echo", "sleep", "fail", "noop"} <= set(plugins.job_types)
    assert info.job_types == ["echo", "sleep", "fail", "noop"]


def test_disabled_plugins_are_not_loaded() -> None:
    plugins = get_plugin_manager(SETTINGS, disabled=["diagnostics"])
    assert "diagnostics" not in plugins.infos
    assert "echo" not in plugins.job_types


def test_duplicate_job_type_is_refused_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    dupe = fake_plugin(scanner_job_types=lambda: [JobType("echo", handler)])
    with caplog.at_level(logging.ERROR):
        plugins = get_plugin_manager(SETTINGS, extra=[("zz-dupe", dupe)])
    assert plugins.job_types["echo"].handler is not handler
    assert plugins.infos["zz-dupe"].status == "failed"
    assert "job type 'echo' is already registered" in (plugins.infos["zz-dupe"].error or "")
    assert "plugin zz-dupe" in caplog.text


def test_a_hook_that_raises_spares_the_other_plugins() -> None:
    def broken() -> list[JobType]:
        raise RuntimeError("boom")

    plugins = get_plugin_manager(
        SETTINGS, extra=[("broken", fake_plugin(scanner_job_types=broken))]
    )
    assert plugins.infos["broken"].error == "scanner_job_types raised RuntimeError: boom"
    assert "echo" in plugins.job_types


def test_a_hook_returning_something_else_is_reported() -> None:
    odd = fake_plugin(scanner_job_types=lambda: ["not a job type"])
    plugins = get_plugin_manager(SETTINGS, extra=[("odd", odd)], entry_point_group=None)
    assert plugins.job_types == {}
    assert "returned 'not a job type', not a JobType" in (plugins.infos["odd"].error or "")


def test_a_single_job_type_not_in_a_list_fails_that_plugin_only() -> None:
    alone = fake_plugin(scanner_job_types=lambda: JobType("alone", handler))
    plugins = get_plugin_manager(SETTINGS, extra=[("alone", alone)])
    assert "returned JobType(name='alone'" in (plugins.infos["alone"].error or "")
    assert "not a list" in (plugins.infos["alone"].error or "")
    assert "alone" not in plugins.job_types and "echo" in plugins.job_types


def test_a_failed_plugin_takes_no_further_part(settings: Settings) -> None:
    called = []

    def table_missing(role: str, services: Any) -> None:
        raise RuntimeError("could not create my table")

    services = services_with(
        settings,
        scanner_job_types=lambda: [JobType("mine", handler)],
        scanner_startup=table_missing,
        scanner_scan_finished=lambda root, result, services: called.append(root),
    )
    info = services.plugins.infos["test-plugin"]
    assert info.status == "failed" and "could not create my table" in (info.error or "")
    assert "mine" not in services.plugins.job_types and info.job_types == []
    services.plugins.hook.scanner_scan_finished(root="/x", result={}, services=services)
    assert called == []  # its hooks no longer run


def test_a_plugin_with_a_type_taken_keeps_none_of_its_types() -> None:
    both = fake_plugin(
        scanner_job_types=lambda: [JobType("new-one", handler), JobType("echo", handler)]
    )
    plugins = get_plugin_manager(SETTINGS, extra=[("both", both)])
    assert plugins.infos["both"].status == "failed"
    assert "new-one" not in plugins.job_types and plugins.job_types["echo"].handler is not handler


def test_a_plugin_with_an_unknown_hook_is_refused_and_reported() -> None:
    typo = fake_plugin(scanner_job_type=lambda: [JobType("typo", handler)])
    plugins = get_plugin_manager(SETTINGS, extra=[("typo", typo)])
    assert "unknown hooks scanner_job_type" in (plugins.infos["typo"].error or "")
    assert "typo" not in plugins.job_types
    assert "echo" in plugins.job_types


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, "must be lower-case"),
        ({"name": "ok", "retries": -1}, "retries must be an integer from 0 to 100"),
        ({"name": "ok", "timeout": -1.0}, "must be >= 0"),
        ({"name": "ok", "timeout": 1e300}, "at most 2,592,000s"),
        ({"name": "ok", "retry_delay": 31 * 86400.0}, "at most 2,592,000s"),
        ({"name": "ok", "schema": dict}, "is not a marshmallow Schema"),
        ({"name": "ok", "handler": "echo"}, "is not callable"),
        ({"name": "ok", "timeout": float("nan")}, "timeout must be a finite number"),
        ({"name": "ok", "retry_backoff": float("inf")}, "retry_backoff must be a finite"),
        ({"name": "ok", "retry_backoff": 0}, "retry_backoff must be more than 0"),
        ({"name": "ok", "priority": "7"}, "priority must be an integer from -1000 to 1000"),
        ({"name": "ok", "priority": 10**20}, "priority must be an integer from -1000 to 1000"),
        ({"name": "ok", "retries": 2.5}, "retries must be an integer from 0 to 100"),
    ],
)
def test_job_type_checks_its_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        JobType(**{"handler": handler, **kwargs})
