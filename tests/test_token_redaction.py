"""The token never appears in logs, exceptions, reprs or the simulator's call log."""

from __future__ import annotations

import logging

import pytest

from semookii_bridge.api import ApiError, CloudClient, ControlParams, RetryPolicy
from semookii_bridge.secret import Secret
from semookii_bridge.simulator import Fault, RunningSimulator

from .conftest import TOKEN


def test_secret_shows_stars() -> None:
    """repr and str of a Secret hide the value; redact() scrubs it from text."""
    secret = Secret(TOKEN)
    assert TOKEN not in repr(secret) and TOKEN not in str(secret) and TOKEN not in f"{secret}"
    assert secret.redact(f"url?tokenId={TOKEN}") == "url?tokenId=***"


async def test_client_repr_hides_token(client: CloudClient) -> None:
    """The client's repr names the base URL, not the token."""
    assert TOKEN not in repr(client) and "***" in repr(client)


@pytest.mark.parametrize("kind", ["http_500", "drop_after", "malformed", "reject"])
async def test_errors_and_logs_never_carry_the_token(
    kind: str, client: CloudClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing calls log at DEBUG and raise, and neither log lines nor exception text hold the token."""
    caplog.set_level(logging.DEBUG)
    sim.simulator.inject(Fault(kind, times=10, message=f"bad token {TOKEN}"))  # type: ignore[arg-type]
    with pytest.raises(ApiError) as info:
        await client.group_control("1", ControlParams(super_type=1, system_swich=1))
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_device_binding_errors_never_carry_the_token(
    client: CloudClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Device binding sends the token in the body; an answer quoting it back is redacted like any other call's."""
    caplog.set_level(logging.DEBUG)
    sim.simulator.inject(Fault("reject", times=1, message=f"token {TOKEN} may not bind"))
    with pytest.raises(ApiError) as info:
        await client.bind_sns(["A1"])
    assert "may not bind" in str(info.value) and TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_connect_failure_message_hides_token(caplog: pytest.LogCaptureFixture) -> None:
    """A connection error (whose URL holds tokenId) is reported without it."""
    caplog.set_level(logging.DEBUG)
    async with CloudClient("http://127.0.0.1:9", Secret(TOKEN), retry=RetryPolicy.instant(2)) as client:
        with pytest.raises(ApiError) as info:
            await client.group_find_all()
    assert TOKEN not in str(info.value) and all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_simulator_records_calls_without_the_token(client: CloudClient, sim: RunningSimulator) -> None:
    """What the simulator records shows whether the token was valid, never the token."""
    await client.group_find_all()
    await client.bind_sns(["A"])
    assert all(TOKEN not in repr(c) for c in sim.simulator.calls)
