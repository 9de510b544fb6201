// A Sparkplug B host for the tests, built on Eclipse Tahu's sparkplug-payload codec and MQTT.js (both from
// npm, neither part of this project). It prints every Sparkplug message it receives as one JSON line and
// publishes what it is told on stdin: {"dcmd": {"topic", "metrics"}}, {"ncmd": ...} or {"state": bool}.
"use strict";
const mqtt = require("mqtt");
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const readline = require("readline");

const [url, group, hostId] = process.argv.slice(2);
const client = mqtt.connect(url, { clean: true, protocolVersion: 4, reconnectPeriod: 500,
  will: hostId ? { topic: `spBv1.0/STATE/${hostId}`, payload: JSON.stringify({ online: false, timestamp: 0 }),
                   qos: 1, retain: true } : undefined });

function plain(key, value) {
  if (value && typeof value === "object" && typeof value.toNumber === "function" && "low" in value) {
    return value.toNumber();  // Long
  }
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  return value;
}

function emit(doc) { process.stdout.write(JSON.stringify(doc, plain) + "\n"); }

client.on("connect", () => {
  client.subscribe(`spBv1.0/${group}/#`, { qos: 1 }, () => emit({ ready: true }));
});

client.on("message", (topic, message) => {
  try {
    emit({ topic, payload: sparkplug.decodePayload(message) });
  } catch (err) {
    emit({ topic, error: String(err) });
  }
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const order = JSON.parse(line);
  if ("state" in order) {
    const payload = JSON.stringify({ online: order.state, timestamp: Date.now() });
    client.publish(`spBv1.0/STATE/${hostId}`, payload, { qos: 1, retain: true });
    return;
  }
  const command = order.dcmd || order.ncmd;
  const payload = sparkplug.encodePayload({ timestamp: Date.now(), metrics: command.metrics });
  client.publish(command.topic, Buffer.from(payload), { qos: 0 });
});
