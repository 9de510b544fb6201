"""The monitoring kit in deploy/: the alert rules pass promtool's check and unit tests (Debian's `prometheus`
package), the dashboard is well formed, and every metric either names exists in a real scrape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import Mosquitto, Probe

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy/prometheus/semookii-alerts.yml"
RULE_TESTS = ROOT / "deploy/prometheus/semookii-alerts.test.yml"
DASHBOARD = ROOT / "deploy/grafana/semookii-bridge.json"
METRIC = re.compile(r"\b((?:semookii|process)_[a-z0-9_]+)")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool (Debian package prometheus) is needed: `make test` installs it")
    return found


def test_the_alert_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts the rules file."""
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    """`promtool test rules`: each alert fires on its condition (labels and annotations exact) and not before."""
    out = subprocess.run([promtool(), "test", "rules", RULE_TESTS.name], capture_output=True, text=True, timeout=60,
                         cwd=RULE_TESTS.parent)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_unit_test() -> None:
    """No alert in the rules goes untested."""
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in test["alert_rule_test"] if case.get("exp_alerts")}  # fmt: skip
    assert alerts == tested


def test_the_dashboard_is_well_formed() -> None:
    """Unique panel ids, every query on the chosen data source, panels inside the 24-column grid."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}" and target["expr"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}


def named_metrics() -> set[str]:
    """Every metric the dashboard's queries and the alert rules name."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    return {name for expr in exprs for name in METRIC.findall(expr)}


async def test_every_metric_named_exists_in_a_real_scrape(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path, pg_url: str
) -> None:
    """A bridge with a daily quota, a rate limit and the hot standby, after one command, exports every metric
    the dashboard and the alerts use."""
    cfg = bridge_config_for(broker.port, sim, tmp_path, rate_limit={"rate": 5, "burst": 5, "daily_quota": 1000},
                            journal={"url": pg_url}, ha={"enabled": True, "name": "scraped", "lease": 3})  # fmt: skip
    service = Service(cfg, Secret(TOKEN), retry=RetryPolicy.instant())
    await service.start()
    try:
        group_id = sim.simulator.state.list_groups()[0].id
        with Probe(broker.port) as probe:
            probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "scrape"})
            await probe.wait_status(f"vpp/group/{group_id}/state", "scrape", "completed")
        url = f"http://127.0.0.1:{service.http_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
    finally:
        await service.stop()
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    missing = sorted(named_metrics() - exported)
    assert missing == [], f"named in deploy/ but not exported: {missing}"
    assert len(named_metrics()) >= 20
