"""The token's standing: only the token check decides it is refused; other answers raise a doubt, at most one
check per CONFIRM_EVERY seconds; safety commands are attempted whatever the standing."""

from __future__ import annotations

import asyncio

from semookii_bridge.budget.authorization import ATTEMPT, CONFIRM_EVERY, PROBING, Authorization


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_ordinary_refusal_is_a_doubt_and_doubts_are_rate_limited() -> None:
    """A refusal from an ordinary call leaves the state, raises one doubt; another within CONFIRM_EVERY none."""

    async def scenario() -> list[bool]:
        clock = Clock()
        auth = Authorization(clock)
        auth.told(True, "")
        seen = [auth.told(False, "Inverter token.invalid does not exist"), auth.state == "authorized"]
        seen.append(await auth.doubt_within(0.01))
        auth.told(False, "again")
        seen.append(await auth.doubt_within(0.01))
        clock.now += CONFIRM_EVERY
        auth.told(False, "later")
        seen.append(await auth.doubt_within(0.01))
        return seen

    assert asyncio.run(scenario()) == [False, True, True, False, True]


def test_the_check_decides_and_a_safety_command_is_attempted_anyway() -> None:
    """The token check's refusal counts; then ordinary calls are refused at once, a safety command is not."""
    auth = Authorization(Clock())
    probing = PROBING.set(True)
    assert auth.told(False, "tokenId is invalid or expired") and auth.state == "unauthorized"
    PROBING.reset(probing)
    assert auth.refused()
    attempt = ATTEMPT.set(True)
    assert not auth.refused()
    ATTEMPT.reset(attempt)
    assert auth.told(False, "tokenId is invalid or expired"), "once refused, the vendor's refusal counts"


def test_a_refused_call_names_its_endpoint_and_the_vendors_words_and_listeners_hear_each_change() -> None:
    """While refused, a call's error names its endpoint and the check's words; listeners hear each change of
    standing once (refused, then accepted again), not a repeat of the same standing."""
    auth, heard = Authorization(Clock()), list[str]()
    auth.listeners.append(heard.append)
    auth.told(True, "")
    probing = PROBING.set(True)
    auth.told(False, "tokenId is invalid or expired")
    auth.told(False, "tokenId is invalid or expired")
    PROBING.reset(probing)
    error = auth.refusal("groupControl")
    assert error.endpoint == "groupControl" and "tokenId is invalid or expired" in error.message
    assert error.code == "unauthorized"
    auth.told(True, "")
    assert heard == ["authorized", "unauthorized", "authorized"] and auth.state == "authorized" and not auth.refused()
