"""The API client under the hot standby, against the simulator: no byte of a request is written once this process
no longer leads, whatever point of the request path the lease runs out at, and its sockets bound how long
unacknowledged bytes may stay on the wire."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from semookii_bridge.api import CloudClient, ControlParams, NotLeading, RetryPolicy
from semookii_bridge.api.transport import bounded_socket_factory
from semookii_bridge.config.secret import Secret
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN

CONTROL = "/commandapi/groupControl"
PARAMS = ControlParams(super_type=0, mode=1, set_type=1, active_power=100, reactive_power=0, proid_time=60, timeout=10)


class Lease:
    """`valid()` answers from a script: True, True, ... then False (the lease ran out at that check)."""

    def __init__(self, answers: Iterator[bool]) -> None:
        self.answers, self.asked = answers, 0

    def valid(self) -> bool:
        self.asked += 1
        return next(self.answers, False)


def client(sim: RunningSimulator, lease: Lease) -> CloudClient:
    return CloudClient(sim.base_url, Secret(TOKEN), timeout=2.0, retry=RetryPolicy.instant(), may_send=lease.valid,
                       wire_bound=2.0)  # fmt: skip


async def test_no_attempt_once_the_lease_is_gone(sim: RunningSimulator) -> None:
    """A control call after the lease ran out raises not_leading, and the simulator sees nothing."""
    group = sim.simulator.state.add_group("g")
    async with client(sim, Lease(iter([]))) as api:
        with pytest.raises(NotLeading) as caught:
            await api.group_control(group, PARAMS)
    assert caught.value.code == "not_leading" and sim.simulator.calls_to(CONTROL) == []


async def test_a_lease_that_runs_out_before_the_write_stops_the_request_on_a_pooled_connection(
    sim: RunningSimulator,
) -> None:
    """The lease holds when the call starts and runs out before its bytes are written (a pause between the two):
    the guard in front of the socket refuses the write, on a warm keep-alive connection; its retries find the
    lease still gone, so nothing more is written and the simulator saw only the first call."""
    group = sim.simulator.state.add_group("g")
    lease = Lease(iter([True, True, True]))  # the first call: its check and its write(s); the second: its check
    async with client(sim, lease) as api:
        await api.group_control(group, PARAMS)
        first = lease.asked
        lease.answers = iter([True])
        with pytest.raises(NotLeading):
            await api.group_control(group, PARAMS)
    assert first >= 2, "the first call's write did not ask the lease"
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_a_write_refused_while_a_late_renewal_catches_up_goes_out_once_the_lease_is_valid_again(
    sim: RunningSimulator,
) -> None:
    """A stalled loop lets the lease look gone at the write while its renewal's answer is still unread; the
    renewal then lands: the refused attempt (no byte written) is retried and the call reaches the API once."""
    group = sim.simulator.state.add_group("g")
    lease = Lease(iter([True, False, True, True, True, True]))  # check, refused write, then valid again
    async with client(sim, lease) as api:
        await api.group_control(group, PARAMS)
    assert len(sim.simulator.calls_to(CONTROL)) == 1


def test_the_sockets_bound_unacknowledged_bytes() -> None:
    """TCP_USER_TIMEOUT is set to the wire bound on each socket the client opens (Linux)."""
    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        pytest.skip("TCP_USER_TIMEOUT is Linux only")
    info = socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0]
    with bounded_socket_factory(2.5)(info) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2500
