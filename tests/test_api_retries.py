"""Which failures are retried, for which calls, and what a call that gives up reports."""

from __future__ import annotations

import asyncio

import pytest

from semookii_bridge.api import (
    Ambiguous,
    ApiError,
    ApiRejected,
    BadResponse,
    CloudClient,
    ConnectFailed,
    ControlParams,
    HttpStatusError,
    RateLimited,
    RetryPolicy,
    TransportError,
)
from semookii_bridge.api.retry import call_with_retries, is_transient, settle
from semookii_bridge.config.secret import Secret
from semookii_bridge.simulator import Fault, RunningSimulator, SimConfig, serve

from .support.bridges import TOKEN
from .support.broker import free_port

SWITCH = ControlParams(super_type=1, system_swich=1)
CONTROL = "/commandapi/groupControl"
QUERY = "/vppgroup/findAll"


def group_of(sim: RunningSimulator) -> str:
    return sim.simulator.state.list_groups()[0].id


@pytest.mark.parametrize("kind", ["http_500", "http_502", "http_503", "http_429", "drop_before", "malformed"])
async def test_queries_retry_transient_failures(kind: str, client: CloudClient, sim: RunningSimulator) -> None:
    """An idempotent query retries 5xx, 429, dropped connections and malformed JSON, then succeeds."""
    sim.simulator.inject(Fault(kind, path=QUERY, times=2, retry_after=0))  # type: ignore[arg-type]
    page = await client.group_find_all()
    assert page.total == 2 and len(sim.simulator.calls_to(QUERY)) == 3


async def test_queries_retry_answers_slower_than_the_timeout(sim: RunningSimulator) -> None:
    """A query whose answer takes longer than the timeout is asked again."""
    sim.simulator.inject(Fault("slow", path=QUERY, delay=1.0))
    async with CloudClient(sim.base_url, Secret(TOKEN), timeout=0.2, retry=RetryPolicy.instant()) as client:
        assert (await client.group_find_all()).total == 2
    assert len(sim.simulator.calls_to(QUERY)) == 2


async def test_queries_give_up_after_the_attempt_budget(client: CloudClient, sim: RunningSimulator) -> None:
    """Four 500s in a row exhaust the four attempts: http_error, not ambiguous (a query is harmless)."""
    sim.simulator.inject(Fault("http_500", path=QUERY, times=10))
    with pytest.raises(HttpStatusError) as info:
        await client.group_find_all()
    assert info.value.code == "http_error" and info.value.status == 500
    assert len(sim.simulator.calls_to(QUERY)) == 4


@pytest.mark.parametrize("kind", ["http_503", "http_429"])
async def test_control_retries_when_the_server_refused_it(
    kind: str, client: CloudClient, sim: RunningSimulator
) -> None:
    """A control call is retried after 503 and 429: the server says it did not take the request."""
    sim.simulator.inject(Fault(kind, path=CONTROL, retry_after=0))  # type: ignore[arg-type]
    assert await client.group_control(group_of(sim), SWITCH)
    assert [c.outcome for c in sim.simulator.calls_to(CONTROL)] == [f"fault:{kind}", "ok"]


@pytest.mark.parametrize("kind", ["http_500", "http_502", "drop_after", "malformed"])
async def test_control_is_not_repeated_when_it_may_have_landed(
    kind: str, client: CloudClient, sim: RunningSimulator
) -> None:
    """500, a dropped connection or garbage after sending: `ambiguous`, and exactly one call was made."""
    sim.simulator.inject(Fault(kind, path=CONTROL))  # type: ignore[arg-type]
    with pytest.raises(Ambiguous) as info:
        await client.group_control(group_of(sim), SWITCH)
    assert info.value.code == "ambiguous"
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_control_timeout_is_ambiguous_and_not_repeated(sim: RunningSimulator) -> None:
    """A control answer slower than the timeout (processed by the server) is not sent again."""
    sim.simulator.inject(Fault("slow", path=CONTROL, delay=1.0))
    async with CloudClient(sim.base_url, Secret(TOKEN), timeout=0.2, retry=RetryPolicy.instant()) as client:
        with pytest.raises(Ambiguous):
            await client.group_control(group_of(sim), SWITCH)
    assert len(sim.simulator.calls_to(CONTROL)) == 1
    assert len(sim.simulator.state.commands) == 1


async def test_control_success_false_is_not_retried(client: CloudClient, sim: RunningSimulator) -> None:
    """`success: false` is an answer, not a transient failure: api_error after one call."""
    sim.simulator.inject(Fault("reject", path=CONTROL, message="device offline"))
    with pytest.raises(ApiRejected, match="device offline"):
        await client.group_control(group_of(sim), SWITCH)
    assert len(sim.simulator.calls_to(CONTROL)) == 1


async def test_control_rate_limited_to_the_end_reports_rate_limited(client: CloudClient, sim: RunningSimulator) -> None:
    """429 on every attempt ends as `rate_limited` (never sent, so not ambiguous)."""
    sim.simulator.inject(Fault("http_429", path=CONTROL, times=10, retry_after=0))
    with pytest.raises(RateLimited):
        await client.group_control(group_of(sim), SWITCH)
    assert len(sim.simulator.calls_to(CONTROL)) == 4


async def test_control_retries_connect_failures_until_the_server_is_up() -> None:
    """A refused connection never reached the server, so even a control call is retried."""
    port = free_port()
    policy = RetryPolicy(attempts=20, initial_wait=0.05, max_wait=0.05, jitter=0)
    async with CloudClient(f"http://127.0.0.1:{port}", Secret(TOKEN), retry=policy) as client:
        call = asyncio.create_task(client.group_control("1", SWITCH))
        await asyncio.sleep(0.2)
        async with serve(SimConfig(tokens=[TOKEN]), port=port) as running:
            group_id = running.simulator.state.list_groups()[0].id
            call.cancel()
            assert await client.group_control(group_id, SWITCH)
            with pytest.raises(asyncio.CancelledError):
                await call


async def test_unreachable_api_gives_http_error_after_retries() -> None:
    """Nothing listening: ConnectFailed (code http_error) once the attempts are spent."""
    async with CloudClient(f"http://127.0.0.1:{free_port()}", Secret(TOKEN), retry=RetryPolicy.instant()) as client:
        with pytest.raises(ConnectFailed) as info:
            await client.group_control("1", SWITCH)
    assert info.value.code == "http_error"


def test_transience_table() -> None:
    """The retry predicate in one table: what is retried for queries and for mutating calls."""
    cases = [
        (ConnectFailed("x", endpoint="e"), True, True),
        (RateLimited("x", endpoint="e"), True, True),
        (HttpStatusError("x", endpoint="e", status=503), True, True),
        (HttpStatusError("x", endpoint="e", status=500), True, False),
        (HttpStatusError("x", endpoint="e", status=404), False, False),
        (TransportError("x", endpoint="e"), True, False),
        (BadResponse("x", endpoint="e"), True, False),
        (ApiRejected("x", endpoint="e"), False, False),
    ]
    for error, for_query, for_control in cases:
        assert is_transient(error, idempotent=True) is for_query, error
        assert is_transient(error, idempotent=False) is for_control, error


async def test_a_first_attempt_that_succeeds_runs_once() -> None:
    """The fast path: a successful first attempt is neither repeated nor reported as a retry."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        return "ok"

    retries: list[int] = []
    result = await call_with_retries(RetryPolicy.instant(), attempt, idempotent=False,
                                     on_retry=lambda n, e: retries.append(n))  # fmt: skip
    assert (result, calls, retries) == ("ok", [1], [])


async def test_retries_count_the_first_attempt() -> None:
    """With 3 attempts allowed the function runs 3 times; retries are reported as attempts 1 and 2."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        raise ConnectFailed("refused", endpoint="e")

    retries: list[int] = []
    with pytest.raises(ConnectFailed):
        await call_with_retries(RetryPolicy.instant(attempts=3), attempt, idempotent=False,
                                on_retry=lambda n, e: retries.append(n))  # fmt: skip
    assert (len(calls), retries) == (3, [1, 2])


async def test_the_time_budget_counts_the_first_attempt() -> None:
    """A first attempt that used up max_total is not retried, however many attempts are left."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        await asyncio.sleep(0.15)
        raise ConnectFailed("refused", endpoint="e")

    with pytest.raises(ConnectFailed):
        await call_with_retries(RetryPolicy(attempts=10, max_total=0.1, wait_scale=0.0), attempt, idempotent=True)
    assert len(calls) == 1


async def test_a_non_transient_first_failure_is_settled() -> None:
    """A mutating call whose first attempt may have landed is reported ambiguous and never repeated."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        raise TransportError("reset", endpoint="e")

    with pytest.raises(Ambiguous):
        await call_with_retries(RetryPolicy.instant(), attempt, idempotent=False)
    assert len(calls) == 1


def test_retry_after_is_honoured_and_scaled() -> None:
    """A server's Retry-After beats a shorter backoff; wait_scale=0 makes tests instant."""
    error = RateLimited("x", endpoint="e", retry_after=3.0)
    assert RetryPolicy(jitter=0).wait_for(1, error) == 3.0
    assert RetryPolicy.instant().wait_for(1, error) == 0.0


async def test_waiting_for_a_pooled_connection_is_not_a_connect_timeout(sim: RunningSimulator) -> None:
    """A call that waits for the only pooled connection longer than the connect timeout is not failed: it goes
    out once the connection is free (the pool's queue is not the network)."""
    sim.simulator.inject(Fault("slow", path=CONTROL, delay=1.5, times=1))
    client = CloudClient(sim.base_url, Secret(TOKEN), timeout=1.0, connect_timeout=0.3, max_connections=1,
                         retry=RetryPolicy.instant(attempts=1))  # fmt: skip
    async with client:
        first = asyncio.create_task(client.group_control(group_of(sim), SWITCH))
        await asyncio.sleep(0.05)
        assert await client.group_control(group_of(sim), SWITCH)
        with pytest.raises(Ambiguous):
            await first
    assert len(sim.simulator.calls_to(CONTROL)) == 2


async def test_hanging_polls_do_not_hold_the_connection_a_control_call_needs(sim: RunningSimulator) -> None:
    """Control has its own connection pool: with every pooled connection held by a hanging queryCommand, a
    control call is answered at once, on its first attempt."""
    sim.simulator.inject(Fault("slow", path="/commandapi/queryCommand", delay=2.0, times=4))
    client = CloudClient(sim.base_url, Secret(TOKEN), timeout=3.0, connect_timeout=0.5, max_connections=4,
                         retry=RetryPolicy.instant(attempts=1))  # fmt: skip
    async with client:
        command_id = await client.group_control(group_of(sim), SWITCH)
        hanging = [asyncio.create_task(client.query_command(command_id)) for _ in range(4)]
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        await client.group_control(group_of(sim), SWITCH)
        took = asyncio.get_running_loop().time() - started
        await asyncio.gather(*hanging)
    assert took < 0.5 and len(sim.simulator.calls_to(CONTROL)) == 2


def test_backoff_doubles_from_initial_wait_up_to_max_wait() -> None:
    """Without jitter the waits are initial_wait x 1, 2, 4, ... capped at max_wait."""
    policy = RetryPolicy(initial_wait=0.25, max_wait=2.0, jitter=0)
    assert [policy.wait_for(n, None) for n in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_jitter_only_adds_up_to_its_amount() -> None:
    """Jitter adds between 0 and `jitter` seconds to the backoff, never less, never more."""
    policy = RetryPolicy(initial_wait=1.0, max_wait=8.0, jitter=0.5)
    waits = [policy.wait_for(2, None) for _ in range(500)]
    assert all(2.0 <= w <= 2.5 for w in waits) and max(waits) - min(waits) > 0.3


def test_retry_after_is_capped_by_the_time_budget() -> None:
    """A Retry-After longer than max_total waits only max_total; a shorter backoff never wins over it."""
    policy = RetryPolicy(jitter=0, max_total=5.0)
    assert policy.wait_for(1, RateLimited("x", endpoint="e", retry_after=60.0)) == 5.0
    assert policy.wait_for(1, RateLimited("x", endpoint="e")) == 0.25


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_mutating_call_that_got_a_5xx_is_ambiguous_with_its_details(status: int) -> None:
    """A 5xx other than 503 may have landed: Ambiguous keeps the endpoint, the status and the cause."""
    settled = settle(HttpStatusError(f"HTTP {status}", endpoint="group_control", status=status), idempotent=False)
    assert isinstance(settled, Ambiguous)
    assert (settled.endpoint, settled.status) == ("group_control", status)
    assert settled.message == f"HTTP {status}; the request may have reached the API and is not repeated"


@pytest.mark.parametrize(
    "error",
    [HttpStatusError("HTTP 503", endpoint="e", status=503), RateLimited("429", endpoint="e"),
     HttpStatusError("no status", endpoint="e", status=None), HttpStatusError("HTTP 404", endpoint="e", status=404),
     ConnectFailed("refused", endpoint="e"), ApiRejected("no", endpoint="e")],
)  # fmt: skip
def test_a_mutating_call_surely_not_taken_keeps_its_error(error: ApiError) -> None:
    """503, 429, a refused connection, a 4xx or an API refusal did not land: the error is reported as it is."""
    assert settle(error, idempotent=False) is error


def test_a_query_never_becomes_ambiguous() -> None:
    """Idempotent calls report their last error unchanged."""
    error = TransportError("reset", endpoint="e")
    assert settle(error, idempotent=True) is error
    broken = settle(TransportError("reset", endpoint="e", status=None), idempotent=False)
    assert isinstance(broken, Ambiguous) and broken.status is None


async def test_each_retry_is_reported_with_its_error() -> None:
    """on_retry hears the attempt number and the error that caused each retry."""
    errors = [ConnectFailed("first", endpoint="e"), ConnectFailed("second", endpoint="e")]

    async def attempt() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    heard: list[tuple[int, str]] = []
    assert await call_with_retries(RetryPolicy.instant(), attempt, idempotent=True,
                                   on_retry=lambda n, e: heard.append((n, str(e)))) == "ok"  # fmt: skip
    assert heard == [(1, "first"), (2, "second")]


async def test_retries_work_without_a_listener() -> None:
    """on_retry is optional."""
    errors = [ConnectFailed("first", endpoint="e")]

    async def attempt() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    assert await call_with_retries(RetryPolicy.instant(), attempt, idempotent=True) == "ok"


async def test_the_wait_between_attempts_honours_retry_after() -> None:
    """Between attempts the loop waits the server's Retry-After, not just the short backoff."""
    errors = [RateLimited("slow down", endpoint="e", retry_after=0.3)]

    async def attempt() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    loop = asyncio.get_running_loop()
    started = loop.time()
    policy = RetryPolicy(initial_wait=0.01, jitter=0, max_total=5.0)
    assert await call_with_retries(policy, attempt, idempotent=False) == "ok"
    assert loop.time() - started >= 0.29


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("Several violations in a row, prohibit calls within the next hour", 3600.0),
     ("Several violations in a row, prohibit calls within the next 120 seconds", 120.0),
     ("calls are prohibited within the next 2 minutes", 120.0), ("device offline", None),
     ("prohibit nothing", None)],
)  # fmt: skip
def test_ban_answers_are_recognised(text: str, seconds: float | None) -> None:
    """The vendor's ban text and how long it lasts; other refusals are not bans."""
    from semookii_bridge.api.answers import ban_seconds

    assert ban_seconds(text) == seconds


async def test_a_ban_answer_pauses_every_call_and_is_not_retried(sim: RunningSimulator) -> None:
    """A ban answer raises Banned (code api_banned) after one attempt, and tells the gate how long it lasts."""
    from semookii_bridge.api import Banned, Endpoint
    from semookii_bridge.simulator.faults import ban_text

    class Gate:
        def __init__(self) -> None:
            self.bans: list[float] = []

        async def acquire(self, endpoint: Endpoint) -> None:
            return None

        def check(self, endpoint: Endpoint) -> None:
            return None

        def throttled(self, retry_after: float | None) -> None:
            return None

        def banned(self, seconds: float) -> None:
            self.bans.append(seconds)

    gate = Gate()
    sim.simulator.inject(Fault("reject", path=CONTROL, times=5, message=ban_text(90)))
    async with CloudClient(sim.base_url, Secret(TOKEN), retry=RetryPolicy.instant(), gate=gate) as client:
        with pytest.raises(Banned) as info:
            await client.group_control(group_of(sim), SWITCH)
    assert info.value.code == "api_banned" and info.value.seconds == 90.0 and gate.bans == [90.0]
    assert len(sim.simulator.calls_to(CONTROL)) == 1


def test_a_failure_after_sending_is_named_by_its_cause() -> None:
    """A request whose bytes the lease guard refused (wrapped by aiohttp) is `not_leading` with the refusal's
    words; a timeout is `timeout`; anything else is `transport_error` named by its exception type; each names the
    endpoint (the metrics' outcome label and the command's error come from these)."""
    from semookii_bridge.api.caller import _after_sending
    from semookii_bridge.api.endpoints import GROUP_CONTROL
    from semookii_bridge.api.transport import WRITE_REFUSED, WriteRefused

    wrapped = ConnectionError("aiohttp's own")
    wrapped.__cause__ = WriteRefused()
    outcomes = [_after_sending(e, GROUP_CONTROL) for e in (wrapped, TimeoutError(), ConnectionResetError())]
    assert [(o, type(e).__name__, e.message, e.endpoint) for o, e in outcomes] == [
        ("not_leading", "NotLeading", WRITE_REFUSED, "group_control"),
        ("timeout", "TransportError", "timed out waiting for the answer", "group_control"),
        ("transport_error", "TransportError", "ConnectionResetError", "group_control"),
    ]


async def test_a_refusal_that_names_the_token_is_unauthorized_only_when_the_verdict_counts() -> None:
    """`success: false` with the token's words: the token's standing is told (False, the words); when that counts
    the error is `unauthorized`, else the vendor's own `api_error`; both name the endpoint and keep the words."""
    from semookii_bridge.api.caller import Caller
    from semookii_bridge.api.endpoints import GROUP_FIND_ALL

    told: list[tuple[bool, str]] = []
    words = "tokenId is invalid or expired"
    for counts in (True, False):
        caller = Caller("http://127.0.0.1:1", Secret(TOKEN), on_token=lambda ok, m, c=counts: told.append((ok, m)) or c)
        error = caller._rejected(words, GROUP_FIND_ALL)
        assert (error.code, error.message, error.endpoint) == (
            "unauthorized" if counts else "api_error", words, "group_find_all")
    assert told == [(False, words), (False, words)]
