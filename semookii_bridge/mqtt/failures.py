"""Why the broker connection fails, named for the operator: unreachable, credentials refused, or the session
taken over by another client with the same client_id. Each has its own message, log event and exit code."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

FailureKind = Literal["unreachable", "not_authorized", "taken_over", "refused"]
EXIT_CODES: dict[str, int] = {"unreachable": 3, "refused": 3, "not_authorized": 4, "taken_over": 5}
"""`run`'s exit code when the bridge cannot start for this reason (docs/troubleshooting.md)."""
NOT_AUTHORIZED = frozenset({134, 135})
"""CONNACK reason codes: bad user name or password, not authorized (MQTT 3.1.1's 4 and 5 arrive as these)."""
TAKEOVER_COUNT = 3
TAKEOVER_WINDOW = 60.0
SHORT_LIVED = 10.0
"""A connection the broker closes within this many seconds of accepting it counts towards a takeover."""


class MqttFailure(Exception):
    """The broker connection failed for a named reason; `exit_code` is what `run` exits with."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message
        self.exit_code = EXIT_CODES[kind]


def unreachable(where: str, exc: BaseException) -> MqttFailure:
    """The TCP (or TLS) connection to `where` (host:port) could not be opened."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return MqttFailure("unreachable", f"broker unreachable at {where}: {reason}")


def refused(where: str, code: int, reason: str) -> MqttFailure:
    """The broker at `where` answered CONNACK with the failure `code`."""
    if code in NOT_AUTHORIZED:
        return MqttFailure(
            "not_authorized",
            f"the broker at {where} refused the credentials: not authorized "
            "(check mqtt.username and mqtt.password or mqtt.password_file)",
        )
    return MqttFailure("refused", f"the broker at {where} refused the connection: {reason}")


class ConnectionWatch:
    """Names each failure of one link and remembers the latest (for the error `start` raises)."""

    def __init__(self, host: str, port: int, client_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port, self.client_id, self._clock = host, port, client_id, clock
        self.last: MqttFailure | None = None
        self.on_takeover: Callable[[MqttFailure], None] | None = None
        """Told when another client keeps taking the session: the service stops (exit 5) rather than fight."""
        self._connected_at: float | None = None
        self._short: deque[float] = deque()
        self.rival: Callable[[], bool] = lambda: True
        """Whether another bridge that may take this session is present (`copies.py`); while not, connections
        that end soon after they opened are the broker restarting, not a takeover."""

    def unreachable(self, exc: BaseException) -> None:
        """The TCP (or TLS) connection could not be opened."""
        self._fail(unreachable(f"{self.host}:{self.port}", exc), logging.WARNING)

    def refused(self, code: int, reason: str) -> None:
        """The broker answered CONNACK with a failure."""
        self._fail(refused(f"{self.host}:{self.port}", code, reason), logging.ERROR)

    def connected(self) -> None:
        self._connected_at = self._clock()

    def lost(self, expected: bool) -> None:
        """A connection ended; several short-lived ones in a row mean another client takes the session."""
        now, began, self._connected_at = self._clock(), self._connected_at, None
        if expected or began is None or now - began > SHORT_LIVED:
            return
        self._short.append(now)
        while self._short and self._short[0] < now - TAKEOVER_WINDOW:
            self._short.popleft()
        if len(self._short) >= TAKEOVER_COUNT and not self.rival():
            cause = (
                f"the broker closed the connection {len(self._short)} times in {TAKEOVER_WINDOW:g} s soon after it "
                "opened: the broker restarting, or a client that is no bridge using this client_id; the bridge "
                "keeps reconnecting"
            )
            log.warning(
                "mqtt_flapping host=%s port=%d client_id=%s cause=%s", self.host, self.port, self.client_id, cause
            )
        elif len(self._short) >= TAKEOVER_COUNT:
            text = (
                f"session taken over by another client with the same client_id {self.client_id!r} "
                f"({len(self._short)} times in {TAKEOVER_WINDOW:g} s): stop the other client; two bridges on one "
                "prefix would each send every command, so run one, or a hot standby ([ha] on PostgreSQL)"
            )
            self._fail(MqttFailure("taken_over", text), logging.ERROR)
            if self.on_takeover is not None and self.last is not None:
                self.on_takeover(self.last)

    def _fail(self, failure: MqttFailure, level: int) -> None:
        self.last = failure
        log.log(
            level,
            "mqtt_%s host=%s port=%d client_id=%s cause=%s",
            failure.kind,
            self.host,
            self.port,
            self.client_id,
            failure.message,
        )

    def error(self, waited: float) -> MqttFailure:
        """What `start` raises when no connection came up within `waited` seconds."""
        if self.last is not None:
            return self.last
        return MqttFailure(
            "unreachable", f"broker unreachable at {self.host}:{self.port}: no CONNACK within {waited:g} s"
        )
