"""The Sparkplug session's bookkeeping, free of MQTT: topic names, the message sequence number, the
birth/death sequence number kept on disk, and the primary host's STATE messages."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"


class Namespace:
    """The topics of one edge node: `spBv1.0/<group>/<type>/<edge node>[/<device>]`."""

    def __init__(self, group_id: str, edge_node_id: str) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id

    def node(self, kind: str) -> str:
        """NBIRTH, NDEATH, NDATA or NCMD of this edge node."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}"

    def device(self, kind: str, device_id: str) -> str:
        """DBIRTH, DDEATH, DDATA or DCMD of one of its devices."""
        return f"{NAMESPACE}/{self.group_id}/{kind}/{self.edge_node_id}/{device_id}"

    def commands(self) -> list[str]:
        """What the edge node subscribes to: its NCMD and its devices' DCMD."""
        return [self.node("NCMD"), f"{NAMESPACE}/{self.group_id}/DCMD/{self.edge_node_id}/+"]

    def parse(self, topic: str) -> tuple[str, str | None] | None:
        """(message type, device id or None) of a topic of this edge node; None for any other topic."""
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[0] != NAMESPACE or parts[1] != self.group_id:
            return None
        if parts[3] != self.edge_node_id:
            return None
        return parts[2], parts[4] if len(parts) == 5 else None


def state_topic(host_id: str) -> str:
    """Where a primary host application publishes its STATE (Sparkplug 3.0)."""
    return f"{NAMESPACE}/STATE/{host_id}"


class HostState(msgspec.Struct, frozen=True):
    """A primary host's STATE payload: `{"online": bool, "timestamp": ms}`."""

    online: bool
    timestamp: int = 0


def parse_host_state(payload: bytes) -> HostState | None:
    """The STATE message, or None when it is not one (logged: a misconfigured host is worth seeing)."""
    try:
        return msgspec.json.decode(payload, type=HostState)
    except msgspec.MsgspecError:
        log.warning("sparkplug_state_ignored reason=invalid_payload bytes=%d", len(payload))
        return None


class Sequence:
    """The message sequence number: 0 in NBIRTH, then +1 per message up to 255, wrapping to 0."""

    def __init__(self) -> None:
        self._next = 0

    def reset(self) -> int:
        """Start a birth: the NBIRTH's number, 0."""
        self._next = 1
        return 0

    def take(self) -> int:
        """The number for the next message after the NBIRTH."""
        value = self._next
        self._next = (value + 1) % 256
        return value


class Store:
    """What survives a restart, in one small JSON file written atomically: the last bdSeq used, and each
    device's stored setpoint settings (so a host does not see them reset)."""

    def __init__(self, path: str | Path, *, shared_counter: Callable[[], int] | None = None) -> None:
        self.path = Path(path)
        self.shared_counter = shared_counter
        """With a hot standby: the database's counter (one more per call), so a new leader's bdSeq follows
        the last one any leader used."""
        self._doc: dict[str, Any] = self._read()
        self._lock = threading.Lock()  # bdSeq is taken in paho's thread, settings kept in the loop's

    def _read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("sparkplug_store_unreadable path=%s error=%s action=starting_afresh", self.path, exc)
            return {}
        return doc if isinstance(doc, dict) else {}

    def next_bd_seq(self) -> int:
        """The bdSeq for the next MQTT CONNECT: one more than the last (0 on the first start), 255 -> 0,
        on disk before it is used, so a host never sees the same bdSeq twice in a row across a restart."""
        with self._lock:
            last = self._doc.get("bd_seq")
            value = 0 if not isinstance(last, int) else (last + 1) % 256
            if self.shared_counter is not None:
                try:
                    value = self.shared_counter() % 256
                except Exception as exc:  # the database away: the local count, which is at least as new here
                    log.warning("sparkplug_bd_seq_unshared error=%s", type(exc).__name__)
            self._doc["bd_seq"] = value
            self._save()
        return value

    def settings(self, device_id: str) -> dict[str, int]:
        """A device's stored settings (empty when none were written)."""
        found = self._doc.get("devices", {}).get(device_id, {})
        return {k: v for k, v in found.items() if isinstance(v, int)} if isinstance(found, dict) else {}

    def keep_settings(self, device_id: str, values: dict[str, int]) -> None:
        """Remember a device's settings for the next start."""
        with self._lock:
            self._doc.setdefault("devices", {})[device_id] = dict(values)
            self._save()

    def _save(self) -> None:
        """Write the file atomically (temporary file, fsync, rename); a failure is logged, not raised."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as out:
                json.dump(self._doc, out)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            log.error("sparkplug_store_write_failed path=%s error=%s", self.path, exc)
