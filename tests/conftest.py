"""Shared fixtures: a simulator on a loopback port and a client with instant retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from semookii_bridge.api import CloudClient, RetryPolicy
from semookii_bridge.secret import Secret
from semookii_bridge.simulator import RunningSimulator, SimConfig, serve

TOKEN = "test-token-2020110909210abcdef"


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(tokens=[TOKEN], task_delay=0.05, result_delay=0.1, groups=2, inverters_per_group=3)


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[RunningSimulator]:
    async with serve(sim_config) as running:
        yield running


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[CloudClient]:
    async with CloudClient(sim.base_url, Secret(TOKEN), timeout=2.0, retry=RetryPolicy.instant()) as c:
        yield c
