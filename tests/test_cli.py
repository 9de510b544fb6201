"""The command line: `simulate` as a real process, `api` subcommands with their exit codes and JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semookii_bridge.cli import main

from .support.broker import free_port, wait_port

TOKEN = "cli-token-123456789"


@pytest.fixture(scope="module")
def simulator_url() -> Iterator[str]:
    """`semookii-bridge simulate` started as its own process on a free port."""
    port = free_port()
    env = {**os.environ, "SEMOOKII_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "semookii_bridge.cli",
            "simulate",
            "--port",
            str(port),
            "--task-delay",
            "0",
            "--result-delay",
            "0",
            "--groups",
            "3",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not wait_port(port, 10):
        proc.kill()
        pytest.fail("simulator did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(5)


def run(url: str, *args: str, token: str | None = TOKEN) -> tuple[int, str, str]:
    env = {"SEMOOKII_TOKEN": token} if token is not None else {"SEMOOKII_TOKEN": ""}
    result = CliRunner().invoke(main, ["api", "--base-url", url, "--attempts", "1", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_group_list_all_prints_ids_as_strings(simulator_url: str) -> None:
    """`api group-list --all` prints every group with string ids."""
    code, out, _ = run(simulator_url, "group-list", "--all")
    groups = json.loads(out)["groups"]
    assert code == 0 and len(groups) == 3 and all(isinstance(g["id"], str) for g in groups)


def test_control_then_query_then_result(simulator_url: str) -> None:
    """group-control prints a command id; query-command a task id; query-result the device map."""
    group_id = json.loads(run(simulator_url, "group-list", "--all")[1])["groups"][0]["id"]
    command = '{"type":"power_control","active_power":-3000,"duration":600,"timeout":10}'
    code, out, _ = run(simulator_url, "group-control", group_id, command)
    command_id = json.loads(out)["command_id"]
    task_id = json.loads(run(simulator_url, "query-command", command_id)[1])["task_id"]
    results = json.loads(run(simulator_url, "query-result", task_id)[1])["results"]
    assert code == 0 and command_id.isdigit() and len(results) == 3


def test_every_endpoint_has_a_subcommand() -> None:
    """One `api` subcommand per endpoint of the document, each with --help."""
    runner = CliRunner()
    names = [
        "single-control",
        "batch-control",
        "group-control",
        "group-add",
        "group-update",
        "group-delete",
        "group-delete-batch",
        "group-list",
        "group-search",
        "inverter-add",
        "inverter-delete",
        "inverter-delete-batch",
        "inverter-update",
        "inverter-list",
        "inverter-search",
        "query-command",
        "query-result",
        "bind",
    ]
    for name in names:
        result = runner.invoke(main, ["api", name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, name


def test_missing_token_is_a_usage_error(simulator_url: str) -> None:
    """No SEMOOKII_TOKEN and no --token-file: exit 2 with a message on stderr."""
    code, _, err = run(simulator_url, "group-list", token=None)
    assert code == 2 and "SEMOOKII_TOKEN" in err


def test_invalid_command_json_is_a_usage_error(simulator_url: str) -> None:
    """A command that does not validate is bad usage (exit 2), naming the field."""
    code, _, err = run(simulator_url, "group-control", "1", '{"type":"power_control","active_power":1}')
    assert code == 2 and "duration" in err


def test_api_failure_exits_1_with_json_error(simulator_url: str) -> None:
    """An API rejection prints `{code, message}` on stderr and exits 1."""
    code, out, err = run(simulator_url, "group-delete", "1234567890123456789")
    error = json.loads(err)
    assert code == 1 and out == "" and error["code"] == "api_error" and "does not exist" in error["message"]


def test_token_file_is_read(simulator_url: str, tmp_path: Path) -> None:
    """--token-file replaces the environment variable (systemd credentials, Docker secrets)."""
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    result = CliRunner().invoke(
        main,
        ["api", "--base-url", simulator_url, "--token-file", str(path), "group-search", "vpp"],
        env={"SEMOOKII_TOKEN": ""},
    )
    assert result.exit_code == 0 and json.loads(result.stdout)["total"] == 3


def test_api_table_covers_every_endpoint_once() -> None:
    """The `api` table's rows together cover the document's 18 endpoints, each exactly once."""
    from semookii_bridge.api import endpoints
    from semookii_bridge.cli.api import ENDPOINTS

    covered = [endpoint for row in ENDPOINTS for endpoint in row.covers]
    assert sorted(e.name for e in covered) == sorted(e.name for e in endpoints.ALL)


def test_api_token_comes_from_config_load_token(tmp_path: Path) -> None:
    """An unreadable --token-file is bad usage with the same message `run` gives."""
    result = CliRunner().invoke(
        main, ["api", "--token-file", str(tmp_path / "missing"), "group-search", "vpp"], env={"SEMOOKII_TOKEN": "x"}
    )
    assert result.exit_code == 2 and "cannot read api.token_file" in result.stderr


def test_config_check_connect_names_the_refused_api_token(simulator_url: str, broker: Any) -> None:
    """`config check --connect` reaches the broker and says the API refused the token: exit 1, one FAIL line."""
    env = {**os.environ, "SEMOOKII_TOKEN": "wrong-token-000000", "SEMOOKII_BRIDGE_API_BASE_URL": simulator_url,
           "SEMOOKII_BRIDGE_MQTT_HOST": "127.0.0.1", "SEMOOKII_BRIDGE_MQTT_PORT": str(broker.port)}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "semookii_bridge.cli", "config", "check", "--connect"],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 1, out.stderr
    assert "mqtt: ok" in out.stderr and "api: unauthorized: the API refused" not in out.stderr
    assert "FAIL api: unauthorized: tokenId is invalid or expired" in out.stderr
    env["SEMOOKII_TOKEN"] = TOKEN
    out = subprocess.run([sys.executable, "-m", "semookii_bridge.cli", "config", "check", "--connect"],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 0 and "api: ok" in out.stderr, out.stderr


def test_config_check_reports_a_missing_token() -> None:
    """Without SEMOOKII_TOKEN or api.token_file `config check` says so and exits 1."""
    env = {k: v for k, v in os.environ.items() if k != "SEMOOKII_TOKEN"}
    out = subprocess.run([sys.executable, "-m", "semookii_bridge.cli", "config", "check"],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "FAIL api token missing: set SEMOOKII_TOKEN or api.token_file" in out.stderr
