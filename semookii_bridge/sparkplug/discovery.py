"""Which devices the edge node announces: the groups and their inverters, read through the bridge's own
management topics (`group/list`, `inverter/list`), so the calls go through its rate limit, quota, allow-lists
and read-only rules, and are counted in its budget like any operator's request."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from ..interface.payloads import Incoming, Response
from ..interface.topics import Target, Topics

log = logging.getLogger(__name__)

OPS = ("group/list", "inverter/list")


class DiscoveryError(Exception):
    """A listing failed (an error answer, or none within the timeout)."""


class Requests:
    """Management requests over MQTT: published with a `transaction`, answered on the response topic."""

    def __init__(self, topics: Topics, publish: Callable[[str, bytes], None], timeout: float) -> None:
        self.topics = topics
        self._publish = publish
        self.timeout = timeout
        self._waiting: dict[str, asyncio.Future[Response]] = {}
        self._numbers = itertools.count(1)

    def filters(self) -> list[str]:
        """The response topics to subscribe to."""
        return [self.topics.response(op) for op in OPS]

    def answer(self, msg: Incoming) -> bool:
        """Resolve the request a response belongs to; False when the message is not one of ours."""
        if msg.topic not in self.filters():
            return False
        try:
            response = msgspec.json.decode(msg.payload, type=Response)
        except msgspec.MsgspecError:
            return True
        waiting = self._waiting.pop(str(response.transaction), None)
        if waiting is not None and not waiting.done():
            waiting.set_result(response)
        return True

    async def ask(self, op: str, body: dict[str, Any]) -> Any:
        """Send one request and return its `data`; DiscoveryError on an error answer or a timeout."""
        transaction = f"sparkplug-{next(self._numbers)}"
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        self._publish(self.topics.request(op), msgspec.json.encode({**body, "transaction": transaction}))
        try:
            response = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise DiscoveryError(f"{op}: no answer within {self.timeout:g} s") from None
        finally:
            self._waiting.pop(transaction, None)
        if response.status != "ok":
            code = response.error.code if response.error is not None else "error"
            raise DiscoveryError(f"{op}: {code}")
        return response.data


async def discover(requests: Requests) -> list[Target]:
    """Every group, then every inverter of each group (each target once, valid ones only)."""
    targets: list[Target] = []
    groups = await requests.ask("group/list", {"all": True})
    for group in _items(groups):
        group_id = str(group.get("id", ""))
        targets.append(Target("group", group_id))
        inverters = await requests.ask("inverter/list", {"group_id": group_id, "all": True})
        targets.extend(Target("inverter", str(row.get("inverter_sn", ""))) for row in _items(inverters))
    kept = list(dict.fromkeys(t for t in targets if t.problem() is None))
    log.info("sparkplug_discovered groups=%d devices=%d", len(_items(groups)), len(kept))
    return kept


def _items(data: Any) -> list[dict[str, Any]]:
    """The rows of a listing answer (`{"total", "items"}`), ignoring anything that is not a row."""
    items = data.get("items") if isinstance(data, dict) else None
    return [row for row in items if isinstance(row, dict)] if isinstance(items, list) else []
