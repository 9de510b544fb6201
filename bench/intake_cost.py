"""Instructions the bridge spends to take in one command (decode, validate, journal, queue), counted by
valgrind, so two commits can be compared on a machine whose speed varies from run to run.

.venv/bin/python bench/intake_cost.py            # about a minute; needs valgrind
.venv/bin/python bench/intake_cost.py --inner N  # (internal) take in N commands in-process

Two runs under callgrind, with 2,000 and 6,000 commands; the difference divided by 4,000 leaves out start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from semookii_bridge import config as bridge_config
from semookii_bridge.bridge import Bridge
from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.interface.payloads import Incoming
from semookii_bridge.journal.sqlite import Journal

SMALL, LARGE = 2000, 6000


class Quiet:
    """A publisher that acknowledges at once."""

    def publish(self, topic: str, payload: bytes, **kw: Any) -> None:
        if kw.get("on_sent"):
            kw["on_sent"]()


async def take_in(count: int) -> None:
    """`count` power_control commands on 1,000 groups through Bridge.handle, 64 per journal commit."""
    workdir = tempfile.mkdtemp()
    cfg = msgspec.convert({"journal": {"path": f"{workdir}/j.db"}, "commands": {"merge": False}},
                          bridge_config.BridgeConfig)  # fmt: skip
    journal = Journal(cfg.journal.path)
    bridge = Bridge(cfg, api=None, publisher=Quiet(), journal=journal,  # type: ignore[arg-type]
                    limiter=RateLimiter(TokenBucket(0, 1)))  # fmt: skip
    for i in range(count):
        doc = {"type": "power_control", "active_power": -(i % 5000), "duration": 600, "timeout": 30,
               "request_id": f"r{i}"}  # fmt: skip
        await bridge.handle(Incoming(topic=f"vpp/group/{1000 + i % 1000}/set", payload=json.dumps(doc).encode(),
                                     mid=i % 65535 + 1))  # fmt: skip
        if i % 64 == 63:
            await journal.durable()
    await journal.durable()
    journal.close()
    shutil.rmtree(workdir, ignore_errors=True)


def instructions(count: int) -> int:
    """Instructions of one whole run taking in `count` commands, as callgrind counts them."""
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={Path(out) / 'cg'}", sys.executable, __file__,
             "--inner", str(count)], capture_output=True, text=True, check=True, timeout=1800,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise RuntimeError("callgrind printed no instruction count")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        asyncio.run(take_in(args.inner))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    small, large = instructions(SMALL), instructions(LARGE)
    print(f"instructions per command taken in: {(large - small) / (LARGE - SMALL):,.0f}")


if __name__ == "__main__":
    main()
