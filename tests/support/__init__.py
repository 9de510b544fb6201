"""What the tests share: real servers started on free loopback ports (`broker` for mosquitto and an MQTT probe,
`postgres` for a throwaway PostgreSQL, `relay` for a TCP path the test can cut, hold or delay), the bridge's test
configuration and processes (`bridges`), and journal rows (`journal`)."""
