"""Sparkplug B 3.0 edge node (`[sparkplug] enabled = true`), a client of the bridge's JSON topics at the MQTT
edge: docs/sparkplug.md. `sparkplug_b_pb2` is generated from `sparkplug_b.proto` when the package is built."""
