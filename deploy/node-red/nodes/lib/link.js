"use strict";
// The palette's MQTT, through Node-RED's own `mqtt-broker` config node (its connection, credentials and TLS):
// JSON subscriptions shared by reference count, publishes that fail clearly while the broker is down, and
// management requests matched to their answers by `transaction`.

const { PaletteError, asObject, newId } = require("./protocol");

class Link {
    /** `broker`: the mqtt-broker config node; `owner`: the semookii-bridge config node (its id is the
     * subscriptions' reference). */
    constructor(broker, owner) {
        this.broker = broker;
        this.owner = owner;
        this.handlers = new Map(); // topic -> Set of callbacks
        this.pending = new Map(); // transaction -> {resolve, reject, timer}
        this.answering = new Set(); // response topics subscribed
        this.last = new Map(); // subscribed topic -> the last message handed on: {topic, text, at}
    }

    /** A palette node joins the broker's users, so the connection opens and the node shows its state. */
    register(node) {
        this.broker.register(node);
    }

    deregister(node, done) {
        this.broker.deregister(node, done, false);
    }

    get connected() {
        return Boolean(this.broker.connected);
    }

    /** Call `callback(topic, json, retained)` for each message on `topic`; returns the function that stops it. */
    subscribe(topic, callback) {
        let callbacks = this.handlers.get(topic);
        if (!callbacks) {
            callbacks = new Set();
            this.handlers.set(topic, callbacks);
            this.broker.subscribe(topic, { qos: 1 }, (t, payload, packet) => this.deliver(topic, t, payload, packet),
                this.owner.id);
        }
        callbacks.add(callback);
        return () => this.unsubscribe(topic, callback);
    }

    unsubscribe(topic, callback) {
        const callbacks = this.handlers.get(topic);
        if (!callbacks || !callbacks.delete(callback) || callbacks.size > 0) {
            return;
        }
        this.handlers.delete(topic);
        this.last.delete(topic);
        this.broker.unsubscribe(topic, this.owner.id, true);
    }

    deliver(subscribed, topic, payload, packet) {
        if (payload === undefined || payload === null || payload.length === 0) {
            return; // a retained message cleared
        }
        if (this.repeated(subscribed, topic, payload.toString())) {
            return;
        }
        let value;
        try {
            value = asObject(payload, `the message on ${topic}`);
        } catch (err) {
            this.owner.warn(`ignored: ${err.message}`);
            return;
        }
        for (const callback of [...(this.handlers.get(subscribed) || [])]) {
            callback(topic, value, Boolean(packet && packet.retain));
        }
    }

    /** Whether this exact message was just handed on for this subscription. Over MQTT 3.1.1 a broker delivers a
     * message once per matching subscription of the client, and Node-RED's broker node then calls every
     * matching handler for each copy (MQTT 5's subscription identifiers prevent that): without this a command
     * node beside a state node for all targets would see each state twice. The bridge's messages carry a
     * millisecond `ts`, so two real messages are never the same text within a second. */
    repeated(subscribed, topic, text) {
        const now = Date.now();
        const last = this.last.get(subscribed);
        this.last.set(subscribed, { topic, text, at: now });
        return Boolean(last) && last.topic === topic && last.text === text && now - last.at < 1000;
    }

    /** Publish JSON with QoS 1, not retained; rejects with `broker_disconnected` while there is no connection
     * (Node-RED's broker node would drop it without a word). */
    publish(topic, payload) {
        if (!this.connected) {
            return Promise.reject(new PaletteError("broker_disconnected",
                "not connected to the MQTT broker: nothing was sent (see the broker node's status)"));
        }
        return new Promise((resolve, reject) => {
            this.broker.publish({ topic, payload: JSON.stringify(payload), qos: 1, retain: false }, (err) => {
                if (err) {
                    reject(new PaletteError("publish_failed", `the broker refused the message on ${topic}: ${err}`));
                } else {
                    resolve();
                }
            });
        });
    }

    /** A management request: publish `body` with a fresh `transaction` on `<prefix>/bridge/request/<op>` and
     * resolve with the answer's `data`, reject with its error (code and message) or `no_answer` after `seconds`. */
    request(prefix, op, body, seconds) {
        const transaction = newId();
        const responses = `${prefix}/bridge/response/${op}`;
        if (!this.answering.has(responses)) {
            this.answering.add(responses);
            this.subscribe(responses, (_topic, answer) => this.answered(answer));
        }
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => {
                this.pending.delete(transaction);
                reject(new PaletteError("no_answer", `no answer to ${op} within ${seconds} s: is the bridge running ` +
                    `with mqtt.prefix "${prefix}", and may this user publish on ${prefix}/bridge/request/#?`));
            }, seconds * 1000);
            this.pending.set(transaction, { resolve, reject, timer });
            this.publish(`${prefix}/bridge/request/${op}`, { ...body, transaction }).catch((err) => {
                clearTimeout(timer);
                this.pending.delete(transaction);
                reject(err);
            });
        });
    }

    answered(answer) {
        const waiting = this.pending.get(answer.transaction);
        if (!waiting) {
            return;
        }
        this.pending.delete(answer.transaction);
        clearTimeout(waiting.timer);
        if (answer.status === "ok") {
            waiting.resolve(answer.data);
        } else {
            const error = answer.error || {};
            waiting.reject(new PaletteError(error.code || "error", error.message || "the bridge answered error"));
        }
    }

    /** Stop everything: pending requests fail with `closed`, subscriptions end. */
    close() {
        for (const [transaction, waiting] of this.pending) {
            clearTimeout(waiting.timer);
            waiting.reject(new PaletteError("closed", "the flow was redeployed or stopped before the answer came"));
            this.pending.delete(transaction);
        }
        for (const topic of this.handlers.keys()) {
            this.broker.unsubscribe(topic, this.owner.id, true);
        }
        this.handlers.clear();
        this.answering.clear();
    }
}

/** A palette node without a usable config node: it says so in its status and refuses every message. */
function unconfigured(node) {
    node.status({ fill: "red", shape: "ring", text: "no semookii-bridge config" });
    node.on("input", (msg, send, done) => done(new PaletteError("not_configured",
        "choose a semookii-bridge config node with a broker and a valid topic prefix")));
}

module.exports = { Link, unconfigured };
