"""Property-based: random JSON and random bytes on every topic; the bridge answers each and never dies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semookii_bridge.bridge import Bridge
from semookii_bridge.budget.ratelimit import RateLimiter, TokenBucket
from semookii_bridge.config import BridgeConfig, CommandsConfig
from semookii_bridge.interface import wire
from semookii_bridge.interface.payloads import Incoming
from semookii_bridge.journal.sqlite import Journal
from semookii_bridge.management.ops import OPS


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, correlation_data: bytes | None = None,
                on_sent: Any = None) -> None:  # fmt: skip
        self.sent.append((topic, wire.decode(payload, Any)))


class RefusingApi:
    """Every API call fails as the API would for unknown ids; enough for requests that happen to be valid."""

    base_url = "http://fuzz.invalid"

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            from semookii_bridge.api import ApiRejected

            raise ApiRejected("Group does not exist", endpoint=name)

        return call


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
command_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["power_control", "manual", "schedule", "soc_control", "nope"])},
    optional={"active_power": json_values, "action": json_values, "duration": json_values, "timeout": json_values,
              "period1": json_values, "target_soc": json_values, "request_id": json_values, "sns": json_values},
)  # fmt: skip
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(msgspec.json.encode),
    command_like.map(msgspec.json.encode),
)
control_topics = st.sampled_from(["vpp/group/123/set", "vpp/inverter/H475A/set", "vpp/batch/set",
                                  "vpp/group/x y/set", "vpp/inverter/../set"])  # fmt: skip
request_topics = st.sampled_from([f"vpp/bridge/request/{op}" for op in [*OPS, "nope", "group/add/x"]])


def make_bridge(tmp: Path, publisher: Recorder) -> Bridge:
    config = BridgeConfig(commands=CommandsConfig(dry_run=True))
    limiter = RateLimiter(TokenBucket(0, 1))
    journal = Journal(tmp / "fuzz.db")
    return Bridge(config, api=RefusingApi(), publisher=publisher, journal=journal, limiter=limiter)  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=control_topics, payload=payloads, retain=st.booleans())
def test_every_control_message_gets_a_state(tmp_path: Path, topic: str, payload: bytes, retain: bool) -> None:
    """Any payload on any control topic yields a state message: `rejected` with a code, or a dry-run lifecycle."""
    publisher = Recorder()
    bridge = make_bridge(tmp_path, publisher)

    async def run() -> None:
        await bridge.handle(Incoming(topic=topic, payload=payload, retain=retain))

    asyncio.run(run())
    bridge.journal.close()
    (tmp_path / "fuzz.db").unlink()
    if retain and not payload:
        assert publisher.sent == []
        return
    statuses = [doc["status"] for _, doc in publisher.sent]
    assert statuses in (["rejected"], ["queued", "completed"]), statuses
    last = publisher.sent[-1][1]
    assert last["error"]["code"] and last["error"]["message"] and isinstance(last["request_id"], str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=request_topics, payload=payloads)
def test_every_request_gets_a_response(tmp_path: Path, topic: str, payload: bytes) -> None:
    """Any payload on any request topic yields exactly one response with a status and, on error, a code."""
    publisher = Recorder()
    bridge = make_bridge(tmp_path, publisher)

    async def run() -> None:
        await bridge.handle(Incoming(topic=topic, payload=payload))
        await asyncio.gather(*bridge._tasks)

    asyncio.run(run())
    bridge.journal.close()
    (tmp_path / "fuzz.db").unlink()
    [(reply_topic, response)] = publisher.sent
    assert reply_topic == topic.replace("/request/", "/response/")
    assert response["status"] in ("ok", "error")
    if response["status"] == "error":
        assert response["error"]["code"] and response["error"]["message"]
