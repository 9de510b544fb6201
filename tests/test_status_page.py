"""The status page in a real browser (Debian's Chromium and ChromeDriver, driven by Selenium): it loads with no
console error, shows a command's lifecycle as it happens and a refusal with its code, and the data behind it
is refused without the token."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator, SimConfig

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import Mosquitto, Probe

PAGE_TOKEN = "page-token-for-the-browser"
SCREENSHOT = os.environ.get("STATUS_PAGE_SCREENSHOT")
"""Where to save the page's picture (docs/status-page.png is made this way); unset: tmp."""


@pytest.fixture
def sim_config() -> SimConfig:
    """A slow vendor (2 s to dispatch, 2 s to answer), so the lifecycle's middle states last long enough to see."""
    return SimConfig(tokens=[TOKEN], task_delay=2.0, result_delay=2.0, groups=2, inverters_per_group=3)


@pytest.fixture
async def guarded(broker: Mosquitto, sim: RunningSimulator, tmp_path: Path) -> AsyncIterator[Service]:
    """A bridge whose status page asks for a token."""
    cfg = bridge_config_for(broker.port, sim, tmp_path, http={"port": 0, "auth_token": PAGE_TOKEN})
    service = Service(cfg, Secret(TOKEN), retry=RetryPolicy.instant())
    await service.start()
    yield service
    await service.stop()


async def in_thread(fn: Any, *args: Any) -> Any:
    """Selenium blocks: run it beside the loop the bridge lives in."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def open_page(chrome: webdriver.Chrome, service: Service) -> None:
    """Load the page with its token (sent on every request, as a proxy would) and wait until it says ready."""
    headers = {"headers": {"Authorization": f"Bearer {PAGE_TOKEN}"}}
    await in_thread(chrome.execute_cdp_cmd, "Network.enable", {})
    await in_thread(chrome.execute_cdp_cmd, "Network.setExtraHTTPHeaders", headers)
    await in_thread(chrome.get, f"http://127.0.0.1:{service.http_port}/")
    assert await _text_becomes(chrome, "ready", "ready", exact=True) == "ready"


def row_status(chrome: webdriver.Chrome, table: str, key: str) -> str | None:
    """The row's status cell, read in one script: the page may replace the row between two WebDriver calls."""
    script = "const c = document.querySelector(arguments[0]); return c ? c.innerText.trim() : null;"
    cell = f'#{table} tbody tr[data-key="{key}"] td:nth-child(3)'
    found = chrome.execute_script(script, cell)
    return None if found is None else str(found)


async def watch_row(chrome: webdriver.Chrome, key: str, until: str, timeout: float = 20.0) -> list[str]:
    """The statuses the page showed for `key`, in order, until it shows `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await in_thread(row_status, chrome, "targets", key)
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status == until:
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"the page showed {seen} for {key}, never {until}")


async def test_the_page_shows_a_lifecycle_and_a_refusal_live(
    guarded: Service, broker: Mosquitto, sim: RunningSimulator, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """Loaded with the token, the page says ready, follows one command from in-flight to completed, lists a
    refusal with its code, and logs no console error; its data without the token is 401."""
    group_id = sim.simulator.state.list_groups()[0].id
    await open_page(browser, guarded)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "live-1"})
        seen = await watch_row(browser, f"group/{group_id}", "completed")
        assert seen[-1] == "completed" and len(seen) >= 2 and set(seen[:-1]) <= {"queued", "accepted", "dispatched"}
        other = sim.simulator.state.list_groups()[1].id
        probe.publish(f"vpp/group/{other}/set", {"type": "manual", "action": "bogus", "request_id": "junk-1"})
        problem = await _text_becomes(browser, "problems", "junk-1")
    assert "rejected" in problem and "validation_error" in problem
    await in_thread(browser.save_screenshot, SCREENSHOT or str(tmp_path / "status-page.png"))
    errors = [e for e in await in_thread(browser.get_log, "browser") if e["level"] == "SEVERE"]
    assert errors == []
    await in_thread(browser.execute_cdp_cmd, "Network.setExtraHTTPHeaders", {"headers": {}})
    script = "const done = arguments[0]; fetch('status.json', {cache: 'no-store'}).then(r => done(r.status));"
    assert await in_thread(browser.execute_async_script, script) == 401


TEXT_OF = "const e = document.getElementById(arguments[0]); return e ? e.innerText.trim() : '';"


async def _text_becomes(
    chrome: webdriver.Chrome, element_id: str, wanted: str, *, exact: bool = False, timeout: float = 20.0
) -> str:
    """The element's text once it contains (or, `exact`, is) `wanted`."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = str(await in_thread(chrome.execute_script, TEXT_OF, element_id))
        if text == wanted or (not exact and wanted in text):
            return str(text)
        await asyncio.sleep(0.2)
    raise AssertionError(f"#{element_id} never showed {wanted!r}: {text!r}")


MARKUP = [
    "<img src=x onerror=window.__owned=1>",
    "<script>window.__owned=2</script>",
    "<svg onload=window.__owned=3></svg>",
    '"><iframe srcdoc="<script>parent.__owned=4</script>"></iframe>',
    "<b id=injected>bold</b>",
]
"""Markup an outsider may put into what the page shows (any publisher, or the vendor's words)."""


async def test_markup_in_every_field_an_outsider_controls_stays_text(
    guarded: Service, broker: Mosquitto, sim: RunningSimulator, browser: webdriver.Chrome
) -> None:
    """Markup as a request id, an inverter serial in the topic, a command type, a field name and the vendor's
    refusal text: each reaches the page as text (the cells hold no element), no script runs, no element is
    created."""
    from semookii_bridge.simulator import Fault

    group_id = sim.simulator.state.list_groups()[0].id
    await open_page(browser, guarded)
    sim.simulator.inject(Fault("reject", path="/commandapi/groupControl", times=5, message=MARKUP[3]))
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": MARKUP[0]})
        probe.publish(f"vpp/inverter/{MARKUP[0]}/set", {"type": "manual", "action": "stop", "request_id": MARKUP[1]})
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "markup-vendor"})
        probe.publish(f"vpp/group/{group_id}/set", {"type": MARKUP[2], "request_id": "markup-type"})
        probe.publish(
            f"vpp/group/{group_id}/set",
            {"type": "manual", "action": "stop", MARKUP[4]: 1, "request_id": "markup-field"},
        )
        for wanted in ("markup-type", "markup-field", MARKUP[1], "parent.__owned=4", "inverter/<img"):
            await _text_becomes(browser, "problems", wanted)
    text = await in_thread(browser.execute_script, "return document.body.innerText;")
    assert MARKUP[0] in text and MARKUP[4] in text
    found = "document.querySelectorAll('img, iframe, script:not([src]), #injected').length"
    script = f"return [document.querySelectorAll('td *').length, {found}, window.__owned === undefined];"
    assert await in_thread(browser.execute_script, script) == [0, 0, True]


async def test_the_page_lists_an_active_plan(
    guarded: Service, broker: Mosquitto, sim: RunningSimulator, browser: webdriver.Chrome
) -> None:
    """A plan sent for a group appears in the page's plans table with its id, and the budget shows the plans'
    calls for the next hour."""
    from datetime import UTC, datetime

    group_id = sim.simulator.state.list_groups()[0].id
    start = time.time() + 30

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    body = {"plan_id": "page-plan", "intervals": [
        {"start": iso(start + 60 * i), "end": iso(start + 60 * (i + 1)), "command": {"type": "power_control", "active_power": -1}}
        for i in range(3)]}
    await open_page(browser, guarded)
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/plan/set", body)
        row = await _text_becomes(browser, "plans", "page-plan")
        budget = await _text_becomes(browser, "budget", "3 calls")
    assert f"group:{group_id}" in row and "plans, next hour" in budget
