"""The MQTT edge: the only package that imports paho. `MqttLink` is the bridge's connection; `StateFollower`
an operator-side client used by `semookii-bridge send` and the demo."""

from .failures import MqttFailure
from .follower import StateFollower
from .link import MqttLink

__all__ = ["MqttFailure", "MqttLink", "StateFollower"]
