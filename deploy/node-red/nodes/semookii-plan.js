"use strict";
// The `semookii-plan` node: publishes a dispatch plan (a plan, rows of {start, end, command}, or CSV) to its
// target's plan/set topic; output 1 is the bridge's answer to each plan sent (the input message with the plan's
// first state), output 2 every plan state of the target, also shown as the node's status; a plan the bridge
// rejects, or does not answer, ends its message with an error (done(err)).

const P = require("./lib/protocol");
const { unconfigured } = require("./lib/link");
const { toPlan } = require("./lib/plan-input");

module.exports = function (RED) {
    function SemookiiPlanNode(config) {
        RED.nodes.createNode(this, config);
        this.bridge = RED.nodes.getNode(config.bridge);
        this.target = config.targetKind && config.targetKind !== "msg"
            ? { kind: config.targetKind, id: config.targetId } : null;
        this.ackSeconds = P.seconds(config.ackTimeout, 10);
        this.waiting = new Map(); // plan_id -> {msg, send, done, timer}
        if (!this.bridge || !this.bridge.link) {
            unconfigured(this);
            return;
        }
        this.bridge.link.register(this);
        if (this.target) {
            try {
                this.watch(P.parseTarget(this.target));
            } catch (err) {
                this.status({ fill: "red", shape: "ring", text: err.code });
            }
        }
        this.on("input", (msg, send, done) => this.handle(msg, send, done));
        this.on("close", (removed, done) => {
            this.unwatch();
            for (const waiting of this.waiting.values()) {
                clearTimeout(waiting.timer);
            }
            this.waiting.clear();
            this.bridge.link.deregister(this, done);
        });
    }

    /** Follow one target's plan state (the configured one, or the last one a message named). */
    SemookiiPlanNode.prototype.watch = function (target) {
        const topic = P.planTopic(this.bridge.prefix, target, "state");
        if (this.watching && this.watching.topic === topic) {
            return;
        }
        this.unwatch();
        const stop = this.bridge.link.subscribe(topic, (t, state) => this.onState(t, state, target));
        this.watching = { topic, stop };
    };

    SemookiiPlanNode.prototype.unwatch = function () {
        if (this.watching) {
            this.watching.stop();
            this.watching = null;
        }
    };

    SemookiiPlanNode.prototype.handle = function (msg, send, done) {
        let plan;
        let target;
        try {
            target = P.parseTarget(this.target || msg.target);
            plan = toPlan(msg.payload, typeof msg.plan_id === "string" ? msg.plan_id : `nr-${P.newId().slice(0, 12)}`);
            this.watch(target);
        } catch (err) {
            this.status({ fill: "red", shape: "ring", text: err.code });
            done(err);
            return;
        }
        const previous = this.waiting.get(plan.plan_id);
        if (previous) {
            clearTimeout(previous.timer);
            previous.done();
        }
        const timer = setTimeout(() => this.settle(plan.plan_id, new P.PaletteError("no_answer",
            `no plan state for ${plan.plan_id} within ${this.ackSeconds} s: is the bridge running with mqtt.prefix ` +
            `"${this.bridge.prefix}" (interface 1.5 or later)?`)), this.ackSeconds * 1000);
        this.waiting.set(plan.plan_id, { msg, send, done, timer });
        this.bridge.link.publish(P.planTopic(this.bridge.prefix, target, "set"), plan).then(
            () => this.waiting.has(plan.plan_id) && this.status({ fill: "blue", shape: "ring", text: `sent ${plan.plan_id}` }),
            (err) => this.settle(plan.plan_id, err),
        );
    };

    /** A plan state: the status and the output; the first answer for a plan just sent ends its message. */
    SemookiiPlanNode.prototype.onState = function (topic, state, target) {
        this.status(P.planStatus(state));
        this.send([null, { payload: state, topic, plan_id: state.plan_id, target }]);
        const waiting = this.waiting.get(state.plan_id);
        if (!waiting) {
            return;
        }
        if (state.status === "rejected") {
            const error = state.error || { code: "rejected", message: "no reason given" };
            this.settle(state.plan_id, new P.PaletteError(error.code, `plan ${state.plan_id} rejected: ${error.message}`),
                false);
            return;
        }
        const answer = RED.util.cloneMessage(waiting.msg);
        waiting.send([Object.assign(answer, { payload: state, topic, plan_id: state.plan_id, target }), null]);
        this.settle(state.plan_id, null);
    };

    SemookiiPlanNode.prototype.settle = function (planId, err, show = true) {
        const waiting = this.waiting.get(planId);
        if (!waiting) {
            return;
        }
        this.waiting.delete(planId);
        clearTimeout(waiting.timer);
        if (err) {
            if (show) {
                this.status({ fill: "red", shape: "ring", text: err.code || "error" });
            }
            waiting.done(err);
        } else {
            waiting.done();
        }
    };

    RED.nodes.registerType("semookii-plan", SemookiiPlanNode);
};
