"""An operator-side client of the interface: publish a command, follow its states (paho, like the link)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..control.statuses import TERMINAL
from ..interface import wire
from ..interface.topics import Topics

log = logging.getLogger(__name__)


class StateFollower:
    """An operator-side client: publish a command, then follow its lifecycle on the state topics.

    Used by `semookii-bridge send` and the demo; it sees the same topics and payloads a Node-RED flow does.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        prefix: str = "vpp",
        username: str = "",
        password: str = "",
        client_id: str = "",
    ) -> None:
        self.topics = Topics(prefix)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._host, self._port = host, port
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if username:
            self._client.username_pw_set(username, password or None)
        self._client.on_connect = self._paho_connect
        self._client.on_message = self._paho_message
        self._client.on_subscribe = self._paho_subscribed

    async def __aenter__(self) -> StateFollower:
        self._loop = asyncio.get_running_loop()
        self._client.connect_async(self._host, self._port)
        self._client.loop_start()
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _paho_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("operator_connect_refused reason=%s", reason)
            return
        client.subscribe([(f, 1) for f in [*self.topics.state_filters(), *self.topics.plan_state_filters()]])

    def _paho_subscribed(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._ready.set)

    def _paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if not message.payload or self._loop is None or (message.retain and message.topic.endswith("/plan/state")):
            return  # a retained plan state is an earlier plan's
        try:
            doc = wire.decode(bytes(message.payload), dict[str, Any])
        except ValueError:
            return
        self._loop.call_soon_threadsafe(self._states.put_nowait, doc)

    def send(self, topic: str, payload: bytes) -> None:
        """Publish a command (QoS 1, not retained)."""
        self._client.publish(topic, payload, qos=1)

    async def plan_answer(self, plan_id: str, wait_seconds: float) -> dict[str, Any] | None:
        """The first plan state for `plan_id` (`active` or `rejected`, ...), or None after `wait_seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while (remaining := deadline - loop.time()) > 0:
            try:
                doc = await asyncio.wait_for(self._states.get(), remaining)
            except TimeoutError:
                return None
            if doc.get("plan_id") == plan_id and "request_id" not in doc:
                return doc
        return None

    async def follow(self, request_id: str, wait_seconds: float) -> AsyncIterator[dict[str, Any]]:
        """Yield the command's state messages until a terminal one, or stop after `wait_seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                doc = await asyncio.wait_for(self._states.get(), remaining)
            except TimeoutError:
                return
            if doc.get("request_id") != request_id:
                continue
            yield doc
            if doc.get("status") in TERMINAL:
                return
