"use strict";
// The `semookii-request` node: a management request (group/list, inverter/list, ...) with its answer matched by
// transaction; `msg.payload` becomes the answer's data, or done(err) carries the bridge's error code.

const P = require("./lib/protocol");
const { unconfigured } = require("./lib/link");

module.exports = function (RED) {
    function SemookiiRequestNode(config) {
        RED.nodes.createNode(this, config);
        this.bridge = RED.nodes.getNode(config.bridge);
        this.op = config.op || "group/list";
        this.timeout = P.seconds(config.timeout, 60);
        if (!this.bridge || !this.bridge.link) {
            unconfigured(this);
            return;
        }
        this.bridge.link.register(this);
        this.on("input", (msg, send, done) => this.handle(msg, send, done));
        this.on("close", (removed, done) => this.bridge.link.deregister(this, done));
    }

    SemookiiRequestNode.prototype.handle = function (msg, send, done) {
        const op = this.op === "msg" ? msg.op : this.op;
        let body;
        try {
            if (!P.OPS.includes(op)) {
                throw new P.PaletteError("unknown_op", `unknown op ${JSON.stringify(op)}: one of ${P.OPS.join(", ")}`);
            }
            const empty = msg.payload === undefined || msg.payload === null || msg.payload === "";
            body = empty ? {} : P.asObject(msg.payload, "msg.payload (the request)");
        } catch (err) {
            this.status({ fill: "red", shape: "ring", text: err.code });
            done(err);
            return;
        }
        this.status({ fill: "blue", shape: "ring", text: op });
        this.bridge.link.request(this.bridge.prefix, op, body, this.timeout).then((data) => {
            this.status({ fill: "green", shape: "dot", text: op });
            send(Object.assign(msg, { payload: data, op }));
            done();
        }, (err) => {
            this.status({ fill: "red", shape: "ring", text: `${op}: ${err.code}` });
            done(err);
        });
    };

    RED.nodes.registerType("semookii-request", SemookiiRequestNode);
};
