"""Shared fixtures: a simulator on a loopback port and a client with instant retries, a mosquitto, the bridge
in-process, and a PostgreSQL server for the session. The helpers behind them are in tests/support/."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService

from semookii_bridge.api import CloudClient, RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator, SimConfig, serve

from .support import node_red
from .support.bridges import TOKEN, bridge_config_for
from .support.broker import Mosquitto, mosquitto_binary
from .support.postgres import Postgres


def pytest_collection_finish(session: pytest.Session) -> None:
    """With Node-RED tests selected, start their npm installs and spec runs now, beside the rest of the suite."""
    if any(item.path.name.startswith("test_node_red") for item in session.items):
        node_red.start_early()


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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile and no background traffic (the machine has no internet)."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.fail("chromium and chromium-driver (Debian packages) are needed: `make test` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-quic", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(service=ChromeService(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()
