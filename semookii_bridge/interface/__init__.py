"""The MQTT interface as code: topic names, published payloads, the JSON codec every edge shares, and the
documents (JSON Schema, AsyncAPI) generated from those types."""
