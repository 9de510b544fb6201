"""The token never appears in logs, exceptions, reprs or the simulator's call log."""

from __future__ import annotations

import contextlib
import logging

import pytest

from semookii_bridge.api import ApiError, CloudClient, ControlParams, RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import Fault, RunningSimulator

from .support.bridges import TOKEN
from .support.broker import Mosquitto, Probe


def test_secret_shows_stars() -> None:
    """repr and str of a Secret hide the value; redact() scrubs it from text."""
    secret = Secret(TOKEN)
    assert TOKEN not in repr(secret) and TOKEN not in str(secret) and TOKEN not in f"{secret}"
    assert secret.redact(f"url?tokenId={TOKEN}") == "url?tokenId=***"


async def test_client_repr_hides_token(client: CloudClient) -> None:
    """The client's repr names the base URL, not the token."""
    assert TOKEN not in repr(client) and "***" in repr(client)


@pytest.mark.parametrize("kind", ["http_500", "drop_after", "malformed", "reject"])
async def test_errors_and_logs_never_carry_the_token(
    kind: str, client: CloudClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Failing calls log at DEBUG and raise, and neither log lines nor exception text hold the token."""
    caplog.set_level(logging.DEBUG)
    sim.simulator.inject(Fault(kind, times=10, message=f"bad token {TOKEN}"))  # type: ignore[arg-type]
    with pytest.raises(ApiError) as info:
        await client.group_control("1", ControlParams(super_type=1, system_swich=1))
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_device_binding_errors_never_carry_the_token(
    client: CloudClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Device binding sends the token in the body; an answer quoting it back is redacted like any other call's."""
    caplog.set_level(logging.DEBUG)
    sim.simulator.inject(Fault("reject", times=1, message=f"token {TOKEN} may not bind"))
    with pytest.raises(ApiError) as info:
        await client.bind_sns(["A1"])
    assert "may not bind" in str(info.value) and TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_connect_failure_message_hides_token(caplog: pytest.LogCaptureFixture) -> None:
    """A connection error (whose URL holds tokenId) is reported without it."""
    caplog.set_level(logging.DEBUG)
    async with CloudClient("http://127.0.0.1:9", Secret(TOKEN), retry=RetryPolicy.instant(2)) as client:
        with pytest.raises(ApiError) as info:
            await client.group_find_all()
    assert TOKEN not in str(info.value) and all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_simulator_records_calls_without_the_token(client: CloudClient, sim: RunningSimulator) -> None:
    """What the simulator records shows whether the token was valid, never the token."""
    await client.group_find_all()
    await client.bind_sns(["A"])
    assert all(TOKEN not in repr(c) for c in sim.simulator.calls)


def spellings() -> list[str]:
    """The token as an API error might echo it: upper- and lower-case, URL-encoded, base64."""
    import base64
    from urllib.parse import quote

    return [TOKEN.upper(), TOKEN.lower().title(), quote(TOKEN, safe=""), base64.b64encode(TOKEN.encode()).decode()]


def leaks(text: str) -> bool:
    return any(form.lower() in text.lower() for form in spellings()) or TOKEN.lower() in text.lower()


@pytest.mark.parametrize("form", range(4))
def test_redaction_covers_case_and_encodings(form: int) -> None:
    """Each spelling of the token is starred out of a text that quotes it."""
    text = f"tokenId {spellings()[form]} is invalid"
    assert Secret(TOKEN).redact(text) == "tokenId *** is invalid"


async def test_a_ban_answer_quoting_the_token_upper_cased_leaks_nowhere(
    client: CloudClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The ban's exception text and every log line (the ban's included) hold no spelling of the token."""
    from semookii_bridge.simulator.faults import ban_text

    caplog.set_level(logging.DEBUG)
    sim.simulator.inject(Fault("reject", times=1, message=f"{ban_text(90)} (token {TOKEN.upper()})"))
    with pytest.raises(ApiError) as info:
        await client.group_control("1", ControlParams(super_type=1, system_swich=1))
    assert info.value.code == "api_banned" and not leaks(str(info.value))
    assert any("api_banned" in r.getMessage() for r in caplog.records)
    assert not any(leaks(r.getMessage()) for r in caplog.records)


def test_every_log_line_is_scrubbed_once_the_token_is_known(capsys: pytest.CaptureFixture[str]) -> None:
    """`logs.redact`: a line from anywhere (a library, a traceback) quoting the token is starred on output."""
    from semookii_bridge.ops import logs

    logs.setup("INFO")
    logs.redact(Secret(TOKEN))
    logging.getLogger("somewhere.else").warning("url=http://x/?tokenId=%s", TOKEN.upper())
    logging.getLogger().handlers[:] = []
    assert "tokenId=***" in capsys.readouterr().err


async def test_a_state_message_never_quotes_the_token_in_any_case(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """An API refusal echoing the token upper-cased ends `failed` with the token starred in `error.message`
    (the text Sparkplug's State/ErrorMessage carries too)."""
    group = sim.simulator.state.list_groups()[0].id
    sim.simulator.inject(Fault("reject", path="/commandapi/groupControl", times=1,
                               message=f"tokenId {TOKEN.upper()} is not allowed"))  # fmt: skip
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group}/set", {"type": "manual", "action": "stop", "request_id": "echo"})
        state = await probe.wait_status(f"vpp/group/{group}/state", "echo", "failed")
    assert "***" in state["error"]["message"] and not leaks(state["error"]["message"])


def encodings() -> dict[str, str]:
    """The token as a vendor's message might echo it in spellings no list of forms anticipates."""
    import base64
    from urllib.parse import quote

    return {
        "hex": TOKEN.encode().hex(),
        "double URL encoding": quote(quote(TOKEN, safe=""), safe=""),
        "HTML entities": "".join(f"&#{ord(c)};" for c in TOKEN),
        "base64 of tokenId=": base64.b64encode(f"tokenId={TOKEN}".encode()).decode(),
        "spaced out": " ".join(TOKEN),
        "dotted, upper case": ".".join(TOKEN.upper()),
    }


def holds_the_token(text: str) -> bool:
    """Whether any decoding of `text` (hex, URL, entities, base64 at any offset, gaps removed) holds the token."""
    import base64
    import binascii
    import html
    import re
    from urllib.parse import unquote

    flat = re.sub(r"[^0-9a-z]", "", text.lower())
    variants = [text, html.unescape(text), unquote(unquote(text))]
    for run in re.findall(r"[0-9A-Za-z+/=]{8,}", text):
        for cut in range(4):
            with contextlib.suppress(binascii.Error, ValueError):
                variants.append(base64.b64decode(run[cut:] + "=" * (-len(run[cut:]) % 4)).decode("latin-1"))
        with contextlib.suppress(ValueError):
            variants.append(bytes.fromhex(run).decode("latin-1"))
    return re.sub(r"[^0-9a-z]", "", TOKEN.lower()) in flat or any(TOKEN.lower() in v.lower() for v in variants)


@pytest.mark.parametrize("spelling", sorted(encodings()))
async def test_a_vendor_message_echoing_the_token_in_any_encoding_keeps_it_out(
    spelling: str, client: CloudClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The vendor's refusal quotes the token in an encoding: the error's message (what states, the status page
    and the journal carry) and the log hold no decoding of it; the rest of the vendor's words stay."""
    caplog.set_level(logging.DEBUG)
    message = f"Inverter H4751234567890 refused: token {encodings()[spelling]} is not allowed"
    sim.simulator.inject(Fault("reject", times=1, message=message))
    with pytest.raises(ApiError) as info:
        await client.group_control("1", ControlParams(super_type=1, system_swich=1))
    assert not holds_the_token(info.value.message), info.value.message
    assert info.value.message.startswith("Inverter H4751234567890 refused: token ")
    assert info.value.message.endswith(" is not allowed")
    assert not any(holds_the_token(r.getMessage()) for r in caplog.records)


def test_ordinary_vendor_words_are_kept_whole() -> None:
    """Group ids, serials, a ban's seconds and words that read like a token refusal pass unchanged."""
    kept = ["group 1028902640000737745 not found", "Inverter H4751234567890 offline, SW12345678",
            "Operation too frequent, token banned for 3600 seconds", "Inverter token.invalid does not exist"]
    assert [Secret(TOKEN).vet(text) for text in kept] == kept


@pytest.mark.parametrize(
    ("text", "vetted"),
    [
        ("id 102890264000073774512345 gone", "id 102890264000073774512345 gone"),  # 24 digits: a number
        ("the responsibilitiesandobligations", "the responsibilitiesandobligations"),  # 31 letters: a word
        ("n " + "1" * 31, "n " + "1" * 31),
        ("n " + "1" * 32, "n ***"),  # 32 of any kind may encode anything
        ("trace 3f2a5b6c9d0e1f2a3b4c5d6e", "trace ***"),  # 20+ mixing letters and digits
    ],
)
def test_vetting_stars_encoded_runs_and_keeps_numbers_and_words(text: str, vetted: str) -> None:
    """Runs of 20 or more are starred when they mix letters and digits, or when they reach 32 of any kind."""
    assert Secret(TOKEN).vet(text) == vetted


def test_a_secret_shows_stars_in_repr_and_cannot_be_pickled() -> None:
    """repr is exactly `Secret('***')`; pickling refuses, naming why."""
    import pickle

    assert repr(Secret(TOKEN)) == "Secret('***')" == str(Secret(TOKEN))
    with pytest.raises(TypeError, match="a Secret cannot be pickled"):
        pickle.dumps(Secret(TOKEN))
