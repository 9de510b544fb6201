"""The bridge as the tests run it: a configuration against the test broker and simulator (in-process), or
`semookii-bridge run` as a real process with its log beside its configuration."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import msgspec

from semookii_bridge import config as bridge_config
from semookii_bridge.simulator import RunningSimulator

TOKEN = "test-token-2020110909210abcdef"


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


def start_bridge(config: Path, level: str = "WARNING") -> subprocess.Popen[bytes]:
    """`semookii-bridge run` as a real process; its log (at `level`) goes to bridge.log beside the config."""
    env = {**os.environ, "SEMOOKII_TOKEN": TOKEN}
    log = (config.parent / "bridge.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "semookii_bridge.cli", "--log-level", level, "run",
                             "--config", str(config)], env=env, stdout=subprocess.DEVNULL, stderr=log)
