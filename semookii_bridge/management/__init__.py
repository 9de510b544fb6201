"""Management over MQTT: `<prefix>/bridge/request/<op>` -> `<prefix>/bridge/response/<op>`.

`requests` holds the request types, `ops` the one dispatch table from op to (request type, handler), `guard` the
allow-lists and read-only mode, and `answer` the one catch point that turns every outcome into
`{"status", "data", "error", "transaction"}` and publishes it. Handlers only return data.
"""
