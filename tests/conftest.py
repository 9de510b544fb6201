"""Shared fixtures: a simulator on a loopback port and a client with instant retries."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

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


# ---- MQTT integration -------------------------------------------------------------------------------

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import msgspec  # noqa: E402

from semookii_bridge import config as bridge_config  # noqa: E402
from semookii_bridge.service import Service  # noqa: E402

from .broker import Mosquitto, mosquitto_binary  # noqa: E402


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed; `make test` installs it")
    (tmp_path / "broker").mkdir()
    server = Mosquitto(tmp_path / "broker")
    server.start()
    yield server
    server.stop()


def bridge_config_for(
    broker_port: int, sim: RunningSimulator, tmp_path: Path, **sections: dict[str, object]
) -> bridge_config.BridgeConfig:
    """A configuration pointing at the test broker and simulator, with fast polling and no rate limit or daily quota.

    Merging is off, so the bridge reads no fleet inventory at start, and so is the token check at start (one
    call; tests/test_operations.py turns it on): most tests count API calls exactly. The merge tests
    (test_merging.py) turn merging on.
    """
    base: dict[str, dict[str, object]] = {
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": f"bridge-{zlib.crc32(str(tmp_path).encode()):08x}", "reconnect_min": 0.2,
                 "reconnect_max": 1},
        "api": {"base_url": sim.base_url, "timeout": 2.0, "check_token": False},
        "rate_limit": {"rate": 0, "burst": 1, "daily_quota": 0},
        "commands": {"poll_initial": 0.05, "poll_max": 0.2, "track_results_for": 5, "merge": False},
        "journal": {"path": str(tmp_path / "journal.db")},
        "http": {"port": 0},
    }  # fmt: skip
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return msgspec.convert(base, bridge_config.BridgeConfig)


@pytest.fixture
async def bridge(broker: Mosquitto, sim: RunningSimulator, tmp_path: Path) -> AsyncIterator[Service]:
    """The bridge running in-process against the test broker and simulator."""
    service = Service(bridge_config_for(broker.port, sim, tmp_path), Secret(TOKEN), retry=RetryPolicy.instant())
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
async def make_bridge(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """Start a bridge with configuration overrides per section, e.g. `await make_bridge(commands={...})`."""
    started: list[Service] = []

    async def start(**sections: dict[str, object]) -> Service:
        service = Service(
            bridge_config_for(broker.port, sim, tmp_path, **sections), Secret(TOKEN), retry=RetryPolicy.instant()
        )
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


# ---- PostgreSQL (the shared journal) ------------------------------------------------------------------

import itertools  # noqa: E402

from .postgres import Postgres  # noqa: E402

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One throwaway PostgreSQL server for the session (each test gets a database of its own)."""
    server = Postgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def pg_url(postgres_server: Postgres) -> str:
    """A fresh, empty database on the session's server."""
    name = f"t{next(_databases)}"
    postgres_server.sql(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
