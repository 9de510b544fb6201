"""semookii-bridge: MQTT commands for a virtual power plant, forwarded to the Semookii Cloud Control API."""

__version__ = "0.1.0"
