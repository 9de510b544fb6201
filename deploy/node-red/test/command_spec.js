"use strict";
// semookii-command: what it publishes, the states it follows, its status and outputs, and each way it fails.

const assert = require("assert");
const { NODES, baseFlow, connected, fakeBridge, helper, onTab, startBroker, until } = require("./support");

const GROUP = "1028902640000737745";
const LIFECYCLE = ["queued", "accepted", "dispatched", "completed"];

describe("semookii-command", function () {
    this.timeout(10000);
    let broker;
    let bridge;

    before(async () => {
        broker = await startBroker();
    });
    after(() => broker.stop());
    beforeEach((done) => {
        helper.startServer(done);
    });
    afterEach(async () => {
        await helper.unload();
        await new Promise((r) => helper.stopServer(r));
        if (bridge) {
            await bridge.end();
            bridge = null;
        }
    });

    /** Load a command node (settings `extra`) wired to helpers on both outputs and a catch node. */
    async function load(extra = {}) {
        bridge = await fakeBridge(broker.port);
        const flow = [...baseFlow(broker.port),
            { id: "cmd", type: "semookii-command", bridge: "bridge", targetKind: "group", targetId: GROUP,
                ackTimeout: 2, finalTimeout: 5, wires: [["every"], ["final"]], ...extra },
            { id: "every", type: "helper" }, { id: "final", type: "helper" },
            { id: "catch", type: "catch", scope: ["cmd"], wires: [["caught"]] }, { id: "caught", type: "helper" },
            { id: "watch", type: "semookii-state", bridge: "bridge", targetKind: "all", retained: false, wires: [[]] }];
        await helper.load(Object.values(NODES), onTab(flow));
        const node = helper.getNode("cmd");
        await connected(node);
        const got = { every: [], final: [], caught: [], statuses: [] };
        for (const name of ["every", "final", "caught"]) {
            helper.getNode(name).on("input", (msg) => got[name].push(msg));
        }
        node.on("call:status", (call) => got.statuses.push(call.args[0]));
        return { node, got };
    }

    /** The fake bridge answers each command on `topic` with `statuses` (the last with `error`). */
    function answers(pattern, statuses, error = null) {
        bridge.on(pattern, (topic, body) => {
            const stateTopic = topic.replace(/^vpp\/safety\//, "vpp/").replace(/set$/, "state");
            statuses.forEach((status, i) => setTimeout(() => bridge.publish(stateTopic, {
                request_id: body.request_id, status, error: i === statuses.length - 1 ? error : null,
            }, { retain: true }), 20 * (i + 1)));
        });
    }

    it("publishes the command with a request id and follows it to completed", async () => {
        const { node, got } = await load();
        answers(/^vpp\/group\/\d+\/set$/, LIFECYCLE);
        node.receive({ payload: { type: "power_control", active_power: -3000 } });
        await until(() => got.final.length === 1);
        const sent = bridge.seen.find((m) => m.topic === `vpp/group/${GROUP}/set`).body;
        assert.match(sent.request_id, /^[0-9a-f]{32}$/);
        assert.deepStrictEqual(got.every.map((m) => m.payload.status), LIFECYCLE);
        assert.strictEqual(got.final[0].payload.status, "completed");
        assert.strictEqual(got.final[0].request_id, sent.request_id);
        assert.deepStrictEqual(got.every.map((m) => [m.final, m.outcome]), [
            [false, "pending"], [false, "pending"], [false, "pending"], [true, "ok"]]);
        assert.deepStrictEqual(got.caught, []);
    });

    it("shows queued as a blue ring, accepted and dispatched as yellow dots, completed as a green dot", async () => {
        const { node, got } = await load();
        answers(/set$/, LIFECYCLE);
        node.receive({ payload: { type: "power_control", active_power: 100 } });
        await until(() => got.final.length === 1);
        const shown = got.statuses.filter((s) => ["blue", "yellow", "green"].includes(s.fill) && s.text !== "sent" &&
            !String(s.text).startsWith("node-red:"));
        assert.deepStrictEqual(shown.map((s) => [s.fill, s.shape, s.text]), [
            ["blue", "ring", "queued"], ["yellow", "dot", "accepted"], ["yellow", "dot", "dispatched"],
            ["green", "dot", "completed"]]);
    });

    it("ends a failed command with an error a Catch node sees, carrying the bridge's code", async () => {
        const { node, got } = await load();
        answers(/set$/, ["queued", "failed"], { code: "api_error", message: "device offline" });
        node.receive({ payload: { type: "power_control", active_power: 100 } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "api_error");
        assert.match(got.caught[0].error.message, /failed: device offline/);
        assert.strictEqual(got.final[0].payload.status, "failed");
        assert.deepStrictEqual(got.statuses.at(-1), { fill: "red", shape: "ring", text: "failed: api_error" });
    });

    it("treats superseded as final without an error: a newer command took the target", async () => {
        const { node, got } = await load();
        answers(/set$/, ["queued", "superseded"]);
        node.receive({ payload: { type: "power_control", active_power: 100 } });
        await until(() => got.final.length === 1);
        await new Promise((r) => setTimeout(r, 50));
        assert.deepStrictEqual(got.caught, []);
        assert.strictEqual(got.statuses.at(-1).fill, "grey");
    });

    it("takes the target from msg.target when the node's target is msg.target", async () => {
        const { node, got } = await load({ targetKind: "msg", targetId: "" });
        answers(/set$/, ["queued", "completed"]);
        node.receive({ payload: { type: "system_switch", on: true }, target: { kind: "inverter", id: "H475A" } });
        await until(() => got.final.length === 1);
        assert.ok(bridge.seen.some((m) => m.topic === "vpp/inverter/H475A/set"));
        assert.strictEqual(got.final[0].topic, "vpp/inverter/H475A/state");
    });

    it("refuses a bad target, a non-object payload and bad JSON before publishing anything", async () => {
        const { node, got } = await load({ targetKind: "msg" });
        node.receive({ payload: { type: "manual", action: "stop" }, target: { kind: "group", id: "12a" } });
        node.receive({ payload: 42, target: { kind: "group", id: "1" } });
        node.receive({ payload: "{not json", target: { kind: "group", id: "1" } });
        await until(() => got.caught.length === 3);
        assert.deepStrictEqual(got.caught.map((m) => m.error.code), ["invalid_target", "validation_error", "invalid_json"]);
        await new Promise((r) => setTimeout(r, 100));
        assert.deepStrictEqual(bridge.seen.filter((m) => m.topic.endsWith("/set")), []);
    });

    it("sends its own command when msg.payload is not one (an inject's timestamp)", async () => {
        const { node, got } = await load({ command: "{\"type\": \"manual\", \"action\": \"stop\"}" });
        answers(/set$/, ["queued", "completed"]);
        node.receive({ payload: Date.now() });
        await until(() => got.final.length === 1);
        const sent = bridge.seen.find((m) => m.topic.endsWith("/set")).body;
        assert.strictEqual(sent.action, "stop");
    });

    it("with the safety lane checked, sends a stop on the safety topic", async () => {
        const { node, got } = await load({ safety: true });
        answers(/^vpp\/safety\/group\/\d+\/set$/, ["queued", "completed"]);
        node.receive({ payload: { type: "manual", action: "stop" } });
        await until(() => got.final.length === 1);
        assert.ok(bridge.seen.some((m) => m.topic === `vpp/safety/group/${GROUP}/set`));
        assert.strictEqual(got.final[0].topic, `vpp/group/${GROUP}/state`);
    });

    it("with the safety lane checked, refuses any other type without publishing", async () => {
        const { node, got } = await load({ safety: true });
        for (const payload of [{ type: "manual", action: "force_charge" }, { type: "system_switch", on: true },
            { type: "power_control", active_power: 0 }]) {
            node.receive({ payload });
        }
        await until(() => got.caught.length === 3);
        assert.ok(got.caught.every((m) => m.error.code === "not_allowed"));
        await new Promise((r) => setTimeout(r, 100));
        assert.deepStrictEqual(bridge.seen.filter((m) => m.topic.endsWith("/set")), []);
    });

    it("fails with no_answer when no state comes within the first-state bound", async () => {
        const { node, got } = await load({ ackTimeout: 0.3 });
        node.receive({ payload: { type: "power_control", active_power: 100 } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "no_answer");
        assert.match(got.caught[0].error.message, /mqtt\.prefix "vpp"/);
    });

    it("fails with no_final_state when the command never ends within the final bound", async () => {
        const { node, got } = await load({ finalTimeout: 0.5 });
        answers(/set$/, ["queued", "accepted"]);
        node.receive({ payload: { type: "power_control", active_power: 100 } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "no_final_state");
        assert.strictEqual(got.every.length, 2);
    });

    it("ignores other commands' states on the same topic, the retained one included", async () => {
        const { node, got } = await load();
        await bridge.publish(`vpp/group/${GROUP}/state`, { request_id: "older", status: "failed" }, { retain: true });
        answers(/set$/, ["queued", "completed"]);
        node.receive({ payload: { type: "power_control", active_power: 100, request_id: "mine" } });
        await until(() => got.final.length === 1);
        assert.deepStrictEqual(got.every.map((m) => m.payload.request_id), ["mine", "mine"]);
        assert.deepStrictEqual(got.caught, []);
    });

    it("sees each state once beside a state node for all targets on the same broker connection", async () => {
        const { node, got } = await load();
        const stateNode = helper.getNode("watch");
        assert.ok(stateNode, "the flow has a state node for all targets");
        answers(/set$/, LIFECYCLE);
        node.receive({ payload: { type: "power_control", active_power: 100 } });
        await until(() => got.final.length === 1);
        await new Promise((r) => setTimeout(r, 200));
        assert.deepStrictEqual(got.every.map((m) => m.payload.status), LIFECYCLE);
    });

    it("fails with broker_disconnected, sending nothing, while the broker is down", async () => {
        const { node, got } = await load();
        const brokerNode = helper.getNode("broker");
        await new Promise((r) => brokerNode.disconnect(r));
        node.receive({ payload: { type: "power_control", active_power: 100 } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "broker_disconnected");
    });
});
