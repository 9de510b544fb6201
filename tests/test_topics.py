"""Topic parsing and building under a configurable prefix."""

from __future__ import annotations

import pytest

from semookii_bridge.interface.topics import ControlRoute, PlanRoute, RequestRoute, Target, Topics


@pytest.mark.parametrize(
    ("topic", "route"),
    [
        ("vpp/group/123/set", ControlRoute(Target("group", "123"))),
        ("vpp/inverter/H475X/set", ControlRoute(Target("inverter", "H475X"))),
        ("vpp/batch/set", ControlRoute(Target("batch"))),
        ("vpp/bridge/request/group/list", RequestRoute("group/list")),
        ("vpp/group/123/state", None),
        ("vpp/bridge/request/", None),
        ("other/group/1/set", None),
        ("vpp/group/1/2/set", None),
        ("vpp/group/123/plan/set", PlanRoute(Target("group", "123"))),
        ("vpp/inverter/H475X/plan/set", PlanRoute(Target("inverter", "H475X"))),
        ("vpp/batch/plan/set", None),
        ("vpp/group/123/plan/state", None),
    ],
)
def test_parse(topic: str, route: object) -> None:
    """Control, request and foreign topics are told apart."""
    assert Topics("vpp").parse(topic) == route


def test_multi_level_prefix_and_builders() -> None:
    """A prefix may have levels; state and response topics are built under it."""
    topics = Topics("site/a/vpp")
    assert topics.parse("site/a/vpp/group/9/set") == ControlRoute(Target("group", "9"))
    assert topics.state(Target("inverter", "H1")) == "site/a/vpp/inverter/H1/state"
    assert topics.state(Target("batch")) == "site/a/vpp/batch/state"
    assert topics.response("group/add") == "site/a/vpp/bridge/response/group/add"


def test_the_bridge_subscribes_to_its_command_plan_and_request_topics_only() -> None:
    """The ordinary session's filters and the safety lane's, under the prefix, never shared subscriptions (the
    removed `mqtt.shared_group` is refused at load: tests/test_config.py)."""
    topics = Topics("vpp")
    assert topics.subscriptions() == ["vpp/group/+/set", "vpp/inverter/+/set", "vpp/batch/set", "vpp/group/+/plan/set",
                                      "vpp/inverter/+/plan/set", "vpp/bridge/request/#"]
    assert topics.safety_subscriptions() == ["vpp/safety/group/+/set", "vpp/safety/inverter/+/set",
                                             "vpp/safety/batch/set"]


def test_target_problems() -> None:
    """Group ids must be digits; serial numbers a safe character set."""
    assert Target("group", "12a").problem() and Target("inverter", "a b").problem()
    assert Target("group", "12").problem() is None and Target("inverter", "H475-1").problem() is None


def test_response_topics_outside_the_prefix_only() -> None:
    """MQTT 5 response topics may not hold wildcards or point into the bridge's own namespace."""
    topics = Topics("vpp")
    assert topics.reply_allowed("replies/7") and topics.reply_allowed("vppx/7")
    assert not topics.reply_allowed("vpp/bridge/state") and not topics.reply_allowed("vpp/group/1/state")
    assert not topics.reply_allowed("replies/#") and not topics.reply_allowed("a/+/b") and not topics.reply_allowed("")


def test_command_topics_and_state_filters_are_built_in_one_place() -> None:
    """Operators' command topics and the state subscriptions come from Topics, for any prefix."""
    from semookii_bridge.interface.topics import Target, Topics

    topics = Topics("site/a")
    assert topics.command(Target("group", "42")) == "site/a/group/42/set"
    assert topics.command(Target("inverter", "H4751")) == "site/a/inverter/H4751/set"
    assert topics.command(Target("batch", None)) == "site/a/batch/set"
    assert topics.state_filters() == ["site/a/group/+/state", "site/a/inverter/+/state", "site/a/batch/state"]
    assert topics.parse(topics.command(Target("group", "42"))) is not None
