"""What a control message must pass before it is journaled: size, retain flag, topic id, decoding, the
allow-lists and ceilings; and when it expires. Plain functions of the message and the configuration."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from ..config import BridgeConfig
from ..errors import BridgeError
from ..interface.payloads import Incoming
from ..interface.topics import Target
from .commands import Command, decode_command, is_safety, max_power


class Admission:
    """Checks control messages against one configuration (its allow-lists kept as sets)."""

    def __init__(self, config: BridgeConfig, wall: Callable[[], float]) -> None:
        self.config = config
        self.wall = wall
        self.allow_groups = frozenset(config.commands.allow_groups)
        self.allow_inverters = frozenset(config.commands.allow_inverters)

    def validate(self, target: Target, msg: Incoming, *, safety: bool = False) -> Command:
        """Decode and check a control message; raises BridgeError with the code for its class of bad input.
        `safety`: it came on the safety lane, which takes only the commands that stop or release devices."""
        self.check_message(target, msg, "control messages must not be retained; it was not sent")
        command = decode_command(msg.payload)
        if target.kind == "batch" and not command.sns:
            raise BridgeError("validation_error", "batch commands need `sns`, a list of serial numbers - at `$.sns`")
        if target.kind != "batch" and command.sns:
            raise BridgeError("validation_error", "`sns` is only valid on the batch topic - at `$.sns`")
        if safety and not is_safety(command):
            raise BridgeError(
                "not_allowed",
                "the safety topics take only manual stop, exit_remote_control and "
                "system_switch off; send this command on the ordinary /set topic",
            )
        self.check_targets(target, command)
        self.check_ceilings(command)
        return command

    def check_message(self, target: Target, msg: Incoming, retained: str) -> None:
        """What every message to a target must pass before it is read: not retained (refused with `retained`),
        not oversized, a valid id in the topic."""
        if msg.retain:
            raise BridgeError("retained_command", retained)
        limit = self.config.mqtt.max_payload
        if len(msg.payload) > limit:
            raise BridgeError("payload_too_large", f"payload of {len(msg.payload)} bytes exceeds {limit}")
        problem = target.problem()
        if problem:
            raise BridgeError("validation_error", problem)

    def check_targets(self, target: Target, command: Command) -> None:
        """`not_allowed` for a group or inverter outside `commands.allow_groups` / `allow_inverters`."""
        if target.kind == "group" and self.allow_groups and target.id not in self.allow_groups:
            raise BridgeError("not_allowed", f"group {target.id} is not in commands.allow_groups")
        sns = [target.id] if target.kind == "inverter" else list(command.sns or ())
        if self.allow_inverters and sns:
            outside = [sn for sn in sns if sn not in self.allow_inverters]
            if outside:
                raise BridgeError("not_allowed", f"inverter(s) {', '.join(map(str, outside))} not in allow_inverters")

    def check_ceilings(self, command: Command) -> None:
        """`not_allowed` for power, duration or timeout above `commands.max_abs_power` / `max_duration` /
        `max_timeout`, before any call is spent."""
        cfg = self.config.commands
        power = max_power(command)
        if power > cfg.max_abs_power:
            raise BridgeError("not_allowed", f"power {power} exceeds commands.max_abs_power {cfg.max_abs_power}")
        duration = getattr(command, "duration", None)
        if duration is not None and duration > cfg.max_duration:
            message = f"duration {duration} s exceeds commands.max_duration {cfg.max_duration} s - at `$.duration`"
            raise BridgeError("not_allowed", message)
        timeout = getattr(command, "timeout", None)
        if timeout is not None and timeout > cfg.max_timeout:
            message = f"timeout {timeout} s exceeds commands.max_timeout {cfg.max_timeout} s - at `$.timeout`"
            raise BridgeError("not_allowed", message)

    def deadline(self, command: Command, msg: Incoming, now: float) -> float:
        """When the command expires on the steady clock: its ttl (or the default), `expires_at` read against
        the wall clock now, and the MQTT 5 message expiry, whichever comes first."""
        deadline = now + (command.ttl if command.ttl is not None else self.config.commands.default_ttl)
        if command.expires_at is not None:
            deadline = min(deadline, now + command.expires_at.timestamp() - self.wall())
        if msg.message_expiry is not None:
            deadline = min(deadline, now + msg.message_expiry)
        return deadline


def delivery_hash(msg: Incoming) -> tuple[str, str]:
    """Identifies one MQTT delivery (topic, packet id, payload) to recognise a broker redelivery.

    The key starts with the packet id, which counts up: consecutive commands land next to each other in
    the journal's index instead of on a random page each (a third fewer pages written per command). The
    second value is the key earlier versions journaled, so a redelivery across the
    upgrade is still recognised.
    """
    digest = hashlib.sha256(msg.topic.encode() + b"\0" + str(msg.mid).encode() + b"\0" + msg.payload).hexdigest()
    return f"{msg.mid:05d}:{digest[:26]}", digest[:32]


_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([\x21\x23-\x5b\x5d-\x7e]{1,128})"')


def guess_request_id(payload: bytes) -> str | None:
    """The request_id of a payload that failed validation, if one can be read, so the operator can match it:
    from the parsed object (Python's parser also takes numbers like 1e999), else, for a payload no parser
    takes (nested too deeply, cut short), from the first plain `"request_id": "..."` in its bytes."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        found = _REQUEST_ID.search(payload)
        return found.group(1).decode() if found else None
    rid = doc.get("request_id") if isinstance(doc, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None
