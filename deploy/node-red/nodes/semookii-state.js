"use strict";
// The `semookii-state` node: emits the bridge's command states (and, when asked, plan states) for one target or
// for all, with the retained ones at start unless told not to; its status is the last state seen.

const P = require("./lib/protocol");

/** The topics to follow: one target's, or every target's (groups, inverters, batches). */
function topicsFor(prefix, target, plans) {
    if (!target) {
        const all = [`${prefix}/group/+/state`, `${prefix}/inverter/+/state`, `${prefix}/batch/state`];
        return plans ? [...all, `${prefix}/group/+/plan/state`, `${prefix}/inverter/+/plan/state`] : all;
    }
    const topics = [P.stateTopic(prefix, target)];
    return plans && target.kind !== "batch" ? [...topics, P.planTopic(prefix, target, "state")] : topics;
}

/** Where a state came from, read off its topic: `{kind, id}` and whether it is a plan state. */
function origin(prefix, topic) {
    const parts = topic.slice(prefix.length + 1).split("/");
    const target = parts[0] === "batch" ? { kind: "batch", id: null } : { kind: parts[0], id: parts[1] };
    return { target, plan: parts[parts.length - 2] === "plan" };
}

module.exports = function (RED) {
    function SemookiiStateNode(config) {
        RED.nodes.createNode(this, config);
        this.bridge = RED.nodes.getNode(config.bridge);
        if (!this.bridge || !this.bridge.link) {
            this.status({ fill: "red", shape: "ring", text: "no semookii-bridge config" });
            return;
        }
        let target = null;
        try {
            target = config.targetKind && config.targetKind !== "all"
                ? P.parseTarget({ kind: config.targetKind, id: config.targetId }) : null;
        } catch (err) {
            this.status({ fill: "red", shape: "ring", text: err.code });
            this.error(err.message);
            return;
        }
        const retained = config.retained !== false && config.retained !== "false";
        const prefix = this.bridge.prefix;
        this.bridge.link.register(this);
        this.stops = topicsFor(prefix, target, config.plans === true || config.plans === "true").map((topic) =>
            this.bridge.link.subscribe(topic, (t, state, isRetained) => {
                if (isRetained && !retained) {
                    return;
                }
                const from = origin(prefix, t);
                this.status(from.plan ? P.planStatus(state) : P.commandStatus(state));
                const msg = { payload: state, topic: t, target: from.target, plan: from.plan,
                    request_id: state.request_id, retained: isRetained };
                if (!from.plan) {
                    Object.assign(msg, { final: P.TERMINAL.has(state.status), outcome: P.outcome(state) });
                }
                this.send(msg);
            }));
        this.on("close", (removed, done) => {
            this.stops.forEach((stop) => stop());
            this.bridge.link.deregister(this, done);
        });
    }

    RED.nodes.registerType("semookii-state", SemookiiStateNode);
};
