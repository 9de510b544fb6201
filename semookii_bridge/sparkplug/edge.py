"""The Sparkplug B edge node: births, deaths, commands and data, on its own clean MQTT session.

It is a client of the bridge's JSON interface, like a Node-RED flow: a device write becomes a command on
the `/set` topic (so it takes exactly the path of any command: validation, allow-lists, journal, rate
limit, merging, lifecycle), and each state the bridge publishes for a device's target becomes a DDATA. The
command core does not know this module exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec

from .. import __version__
from ..budget.report import Budget
from ..common.backoff import Backoff
from ..config import BridgeConfig, MqttConfig
from ..interface.payloads import Incoming, StateMessage
from ..interface.topics import Target, Topics
from ..mqtt.client import Will
from ..mqtt.session import MqttSession
from .codec import DataType, Metric, PayloadError, decode, encode
from .devices import Device, Refusal, device_id, target_of
from .discovery import DiscoveryError, Requests, discover
from .pacing import Paced
from .session import Namespace, Sequence, Store, parse_host_state, state_topic

log = logging.getLogger(__name__)

REBIRTH = "Node Control/Rebirth"
REFRESH = "Node Control/Refresh"


def _broker(cfg: BridgeConfig) -> MqttConfig:
    """The bridge's broker settings, with the edge node's own user when `sparkplug.username` is set."""
    sp = cfg.sparkplug
    if not sp.username:
        return cfg.mqtt
    return msgspec.structs.replace(cfg.mqtt, username=sp.username, password=sp.password, password_file=sp.password_file)


def now_ms() -> int:
    """UTC milliseconds since the epoch, as Sparkplug timestamps are."""
    return int(time.time() * 1000)


class EdgeNode:
    """One Sparkplug edge node for this bridge instance and the devices it owns."""

    def __init__(
        self, cfg: BridgeConfig, *, clock_ms: Callable[[], int] = now_ms, bd_seq: Callable[[], int] | None = None
    ) -> None:
        sp = cfg.sparkplug
        self.cfg, self.sp, self.clock_ms = cfg, sp, clock_ms
        self.ns = Namespace(sp.group_id, sp.edge_node_id)
        self.topics = Topics(cfg.mqtt.prefix)
        state_file = sp.state_file or Path(cfg.journal.path).with_suffix(".sparkplug.json")
        self.store = Store(state_file, shared_counter=bd_seq)
        self.seq = Sequence()
        self.devices: dict[str, Device] = {}
        self.bd_seq = 0
        self._bd_seq_used = True  # the next CONNECT takes a new bdSeq
        self.born = False
        self.host_online = not sp.primary_host_id
        self._host_ts = -1
        self._budget: tuple[int | None, int | None] = (None, None)
        self.session = MqttSession(
            _broker(cfg),
            f"{cfg.mqtt.client_id}-sparkplug",
            will=self._will,
            on_connect=self._connected,
            on_message=self._message,
        )
        self.requests = Requests(self.topics, lambda t, p: self.session.publish(t, p, qos=1), sp.discovery_timeout)
        self._tasks: set[asyncio.Task[None]] = set()
        self._up = asyncio.Event()
        self.limited: Counter[str] = Counter()
        """Node commands merged and DCMDs refused, by reason (`semookii_sparkplug_limited_total`)."""
        self._rebirths = Paced("rebirth", self._rebirth, sp.rebirth_interval, self.limited)
        self._refreshes = Paced("refresh", self._refresh, sp.refresh_interval, self.limited)

    # ---- life -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect; devices come from the configuration at once, or from the lists once the bridge answers."""
        if self.sp.devices:
            self._set_devices([t for d in self.sp.devices if (t := target_of(d)) is not None])
        self.session.start()
        if not self.sp.devices:
            self._spawn(self._discover_until_done())

    async def stop(self) -> None:
        """Publish NDEATH and disconnect (a DISCONNECT makes the broker drop the will)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._rebirths.close()
        await self._refreshes.close()
        await self.session.stop(last=(self.ns.node("NDEATH"), self._death()))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- session ------------------------------------------------------------------------------------

    def _will(self) -> Will:
        """Before each connection attempt (paho's thread): the NDEATH will with the bdSeq of this CONNECT. A
        new one (on disk first) once the last was used by an accepted session; an attempt that never got a
        CONNACK (the broker was down) left no will behind, so its bdSeq is used again: the host sees the
        bdSeq grow by one per session."""
        if self._bd_seq_used:
            self.bd_seq = self.store.next_bd_seq()
            self._bd_seq_used = False
        return Will(self.ns.node("NDEATH"), self._death(), retain=False)

    def _death(self) -> bytes:
        """NDEATH: only the bdSeq metric, and no seq."""
        return encode([Metric("bdSeq", DataType.Int64, self.bd_seq)], timestamp=self.clock_ms(), seq=None)

    def _connected(self) -> None:
        """Subscribe (the session is clean), then be born unless a primary host must be seen online first."""
        self.born = False
        self._bd_seq_used = True
        self._up.set()
        filters = [
            *self.ns.commands(),
            *self.topics.state_filters(),
            *self.requests.filters(),
            self.topics.bridge_budget,
        ]
        if self.sp.primary_host_id:
            filters.append(state_topic(self.sp.primary_host_id))
        self.session.subscribe(filters)
        self.birth()

    def birth(self) -> None:
        """NBIRTH (seq 0, this connection's bdSeq), then a DBIRTH per device; nothing while the primary host
        is offline or the session is down."""
        if not (self.session.connected and self.host_online):
            return
        ts = self.clock_ms()
        self.session.publish(self.ns.node("NBIRTH"), encode(self._node_metrics(ts), timestamp=ts, seq=self.seq.reset()))
        self.born = True
        for device in self.devices.values():
            self._publish_device("DBIRTH", device, device.birth(ts))
        log.info(
            "sparkplug_birth edge_node=%s bd_seq=%d devices=%d", self.ns.edge_node_id, self.bd_seq, len(self.devices)
        )

    def _node_metrics(self, ts: int) -> list[Metric]:
        used, remaining = self._budget
        return [
            Metric("bdSeq", DataType.Int64, self.bd_seq, ts),
            Metric(REBIRTH, DataType.Boolean, False, ts),
            Metric(REFRESH, DataType.Boolean, False, ts),
            Metric("Bridge/Version", DataType.String, __version__, ts),
            Metric("Budget/Used", DataType.Int64, used, ts),
            Metric("Budget/Remaining", DataType.Int64, remaining, ts),
        ]

    def _publish_device(self, kind: str, device: Device, metrics: list[Metric]) -> None:
        """DBIRTH, DDATA or DDEATH for one device, with the next seq (QoS 0, never retained)."""
        payload = encode(metrics, timestamp=self.clock_ms(), seq=self.seq.take())
        self.session.publish(self.ns.device(kind, device.id), payload)

    # ---- messages -----------------------------------------------------------------------------------

    def _message(self, msg: Incoming) -> None:
        """Route one message: host STATE, NCMD/DCMD, the bridge's states, budget and answers."""
        if self.requests.answer(msg):
            return
        if self.sp.primary_host_id and msg.topic == state_topic(self.sp.primary_host_id):
            self._host_state(msg.payload)
        elif msg.topic == self.topics.bridge_budget:
            self._budget_changed(msg.payload)
        elif (parsed := self.ns.parse(msg.topic)) is not None:
            self._command(*parsed, msg.payload)
        elif (target := self.topics.parse_state(msg.topic)) is not None:
            self._observe(target, msg.payload)

    def _command(self, kind: str, device: str | None, payload: bytes) -> None:
        """NCMD (rebirth, refresh) or DCMD (a write); other message types on our topics are ignored."""
        try:
            metrics = decode(payload).metrics
        except PayloadError as exc:
            metrics = ()
            log.warning("sparkplug_command_undecodable type=%s device=%s error=%s", kind, device, exc)
            if kind == "DCMD" and device in self.devices:
                self._refuse(self.devices[device], Refusal("invalid_payload", str(exc)))
            return
        if kind == "NCMD" and device is None:
            self._node_command(metrics)
        elif kind == "DCMD" and device is not None:
            self._write(device, metrics)

    def _node_command(self, metrics: tuple[Metric, ...]) -> None:
        for metric in metrics:
            if metric.name == REBIRTH and metric.value is True:
                self._rebirths.request()
            elif metric.name == REFRESH and metric.value is True:
                self._refreshes.request()
            else:
                log.warning("sparkplug_ncmd_ignored metric=%s", metric.name)

    def _write(self, device_name: str, metrics: tuple[Metric, ...]) -> None:
        """A DCMD: refused as a whole, or settings stored and commands published on the `/set` topic."""
        device = self.devices.get(device_name)
        if device is None:
            log.warning("sparkplug_dcmd_unknown_device device=%s", device_name)
            return
        outcome = device.write(metrics, self.clock_ms())
        if isinstance(outcome, Refusal):
            self._refuse(device, outcome)
            return
        sends, changed = outcome
        if any(m.name.startswith("Setpoint/") and m.name != "Setpoint/ActivePower" for m in changed):
            self.store.keep_settings(device.id, device.settings)
        if changed and self.born:
            self._publish_device("DDATA", device, changed)
        for send in sends:
            self.session.publish(self.topics.command(send.target, safety=send.safety), send.payload, qos=1)

    def _refuse(self, device: Device, refusal: Refusal) -> None:
        self.limited[f"dcmd_{refusal.code}"] += 1
        log.info("sparkplug_write_refused device=%s code=%s", device.id, refusal.code)
        metrics = device.refused(refusal, self.clock_ms())
        if self.born:
            self._publish_device("DDATA", device, metrics)

    def _observe(self, target: Target, payload: bytes) -> None:
        """A lifecycle state for a device's target: its `State/*` metrics as DDATA (repeats for duplicates
        are not states of the device's command, and are skipped)."""
        device = self.devices.get(device_id(target))
        if device is None or not payload:
            return
        try:
            state = msgspec.json.decode(payload, type=StateMessage)
        except msgspec.MsgspecError:
            return
        if state.duplicate:
            return
        metrics = device.observe(state)
        if self.born:
            self._publish_device("DDATA", device, metrics)

    def _budget_changed(self, payload: bytes) -> None:
        """The bridge's budget: Budget/Used and Budget/Remaining as NDATA when they change."""
        try:
            budget = msgspec.json.decode(payload, type=Budget)
        except msgspec.MsgspecError:
            return
        values = (budget.used, budget.remaining)
        if values == self._budget:
            return
        self._budget = values
        if self.born:
            ts = self.clock_ms()
            metrics = [
                Metric("Budget/Used", DataType.Int64, values[0], ts),
                Metric("Budget/Remaining", DataType.Int64, values[1], ts),
            ]
            self.session.publish(self.ns.node("NDATA"), encode(metrics, timestamp=ts, seq=self.seq.take()))

    # ---- primary host -------------------------------------------------------------------------------

    def _host_state(self, payload: bytes) -> None:
        """Online: be born (again). Offline (not older than the last online): end the session with an
        NDEATH and reconnect, then wait for online again, as Sparkplug 3.0 asks."""
        state = parse_host_state(payload)
        if state is None:
            return
        if state.online:
            self._host_ts = state.timestamp
            was_online, self.host_online = self.host_online, True
            if not (was_online and self.born):
                self.birth()
        elif state.timestamp >= self._host_ts and self.host_online:
            self.host_online = False
            log.warning("sparkplug_primary_host_offline host=%s action=reconnecting", self.sp.primary_host_id)
            self._spawn(self.session.restart(last=(self.ns.node("NDEATH"), self._death())))

    # ---- devices ------------------------------------------------------------------------------------

    def _set_devices(self, targets: list[Target]) -> None:
        """Make the device set `targets`: DDEATH for those gone, DBIRTH for new ones (when born)."""
        wanted = {device_id(t): t for t in targets}
        for name in [n for n in self.devices if n not in wanted]:
            gone = self.devices.pop(name)
            if self.born:
                self._publish_device("DDEATH", gone, [])
        for name, target in wanted.items():
            if name not in self.devices:
                settings = {
                    "reactive_power": 0,
                    "duration": self.sp.setpoint_duration,
                    "timeout": self.sp.setpoint_timeout,
                    **self.store.settings(name),
                }
                self.devices[name] = device = Device(target, settings)
                if self.born:
                    self._publish_device("DBIRTH", device, device.birth(self.clock_ms()))

    async def _rebirth(self) -> None:
        """Node Control/Rebirth, paced: the births again."""
        self.birth()

    async def _refresh(self) -> None:
        """Node Control/Refresh: read the lists again (or the configured devices) and update the devices."""
        if self.sp.devices:
            self.birth()
            return
        with contextlib.suppress(DiscoveryError):
            await self._discover_once()

    async def _discover_once(self) -> None:
        try:
            targets = await discover(self.requests)
        except DiscoveryError as exc:
            log.warning("sparkplug_discovery_failed error=%s", exc)
            raise
        self._set_devices(targets)

    async def _discover_until_done(self) -> None:
        """Read the lists once the session is up, retrying with backoff until they are read."""
        backoff = Backoff(5.0, 300.0)
        wait = backoff.initial
        while True:
            await self._up.wait()
            with contextlib.suppress(DiscoveryError):
                await self._discover_once()
                return
            await asyncio.sleep(wait)
            wait = backoff.after(wait)
