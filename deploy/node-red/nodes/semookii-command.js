"use strict";
// The `semookii-command` node: publishes a command to the bridge with a request id, follows that command's
// states on its target's state topic, shows each as the node's status, sends every state on output 1 and the
// final one on output 2, and fails (done(err), for a Catch node) on a final failure or when the bridge is silent.

const P = require("./lib/protocol");
const { unconfigured } = require("./lib/link");

const FAILURE_STATUS = { fill: "red", shape: "ring" };

module.exports = function (RED) {
    function SemookiiCommandNode(config) {
        RED.nodes.createNode(this, config);
        this.bridge = RED.nodes.getNode(config.bridge);
        this.target = config.targetKind && config.targetKind !== "msg"
            ? { kind: config.targetKind, id: config.targetKind === "batch" ? null : config.targetId }
            : null;
        this.safety = config.safety === true || config.safety === "true";
        this.ackSeconds = P.seconds(config.ackTimeout, 10);
        this.finalSeconds = P.seconds(config.finalTimeout, 900);
        this.tracks = new Map();
        this.fixed = null;
        try {
            this.fixed = config.command ? P.asObject(config.command, "the node's command") : null;
        } catch (err) {
            this.error(err.message);
        }
        if (!this.bridge || !this.bridge.link) {
            unconfigured(this);
            return;
        }
        this.bridge.link.register(this);
        this.on("input", (msg, send, done) => this.handle(msg, send, done));
        this.on("close", (removed, done) => {
            for (const track of [...this.tracks.values()]) {
                this.forget(track);
            }
            this.bridge.link.deregister(this, done);
        });
    }

    /** Check the command and its target, start following its state topic, then publish it. */
    SemookiiCommandNode.prototype.handle = function (msg, send, done) {
        let command;
        let target;
        try {
            command = { ...P.commandOf(msg.payload, this.fixed) };
            target = P.parseTarget(this.target || msg.target);
            if (this.safety && !P.isSafetyCommand(command)) {
                throw new P.PaletteError("not_allowed", "the safety lane takes only a stop (manual, action stop), " +
                    `exit_remote_control or system_switch with on false, not ${JSON.stringify(command.type)}`);
            }
        } catch (err) {
            this.status({ ...FAILURE_STATUS, text: err.code });
            done(err);
            return;
        }
        command.request_id = typeof command.request_id === "string" ? command.request_id : P.newId();
        const prefix = this.bridge.prefix;
        const track = { id: command.request_id, msg, send, done, topic: P.stateTopic(prefix, target), target };
        this.follow(track);
        this.bridge.link.publish(P.commandTopic(prefix, target, this.safety), command).then(
            () => track.seen || this.status({ fill: "blue", shape: "ring", text: "sent" }),
            (err) => this.fail(track, err),
        );
    };

    /** Subscribe to the target's state topic for this request id and arm the no-answer timer. */
    SemookiiCommandNode.prototype.follow = function (track) {
        const previous = this.tracks.get(track.id);
        if (previous) {
            this.forget(previous); // the same request id again: the bridge answers it as a duplicate
            previous.done();
        }
        this.tracks.set(track.id, track);
        track.stop = this.bridge.link.subscribe(track.topic, (topic, state) => {
            if (state.request_id === track.id) {
                this.onState(track, topic, state);
            }
        });
        track.timer = setTimeout(() => this.fail(track, new P.PaletteError("no_answer",
            `no state for ${track.id} within ${this.ackSeconds} s: is the bridge running with mqtt.prefix ` +
            `"${this.bridge.prefix}", and may this user publish on ${track.topic.replace(/state$/, "set")}?`)),
        this.ackSeconds * 1000);
        track.finalTimer = setTimeout(() => this.fail(track, new P.PaletteError("no_final_state",
            `no final state for ${track.id} within ${this.finalSeconds} s`)), this.finalSeconds * 1000);
    };

    /** One state of the followed command: the node's status, output 1, and output 2 when it is final. */
    SemookiiCommandNode.prototype.onState = function (track, topic, state) {
        clearTimeout(track.timer);
        track.seen = true;
        this.status(P.commandStatus(state));
        const out = RED.util.cloneMessage(track.msg);
        const result = P.outcome(state);
        Object.assign(out, { payload: state, topic, request_id: track.id, target: track.target,
            final: P.TERMINAL.has(state.status), outcome: result });
        if (result === "unrecognised") {
            this.warn(`status ${JSON.stringify(state.status)} is not known to this palette: update it for the bridge`);
        }
        if (!out.final) {
            track.send([out, null]);
            return;
        }
        this.forget(track);
        track.send([out, RED.util.cloneMessage(out)]);
        if (result === "failure") {
            const code = state.error && state.error.code ? state.error.code : state.status;
            const detail = state.error && state.error.message ? `: ${state.error.message}` : "";
            track.done(new P.PaletteError(code, `command ${track.id} ${state.status}${detail}`));
        } else {
            track.done();
        }
    };

    SemookiiCommandNode.prototype.fail = function (track, err) {
        if (this.tracks.get(track.id) !== track) {
            return;
        }
        this.forget(track);
        this.status({ ...FAILURE_STATUS, text: err.code || "error" });
        track.done(err);
    };

    SemookiiCommandNode.prototype.forget = function (track) {
        clearTimeout(track.timer);
        clearTimeout(track.finalTimer);
        if (track.stop) {
            track.stop();
        }
        if (this.tracks.get(track.id) === track) {
            this.tracks.delete(track.id);
        }
    };

    RED.nodes.registerType("semookii-command", SemookiiCommandNode);
};
