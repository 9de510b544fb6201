"use strict";
// semookii-plan: what it publishes for a plan, rows and CSV; the plan state in its status; rejections and silence.

const assert = require("assert");
const { until } = require("./support");
const { bench } = require("./flow");

const GROUP = "42";
const NODE = { type: "semookii-plan", targetKind: "group", targetId: GROUP, ackTimeout: 2 };

describe("semookii-plan", function () {
    this.timeout(10000);
    const load = bench();

    /** The fake bridge accepts each plan with `status` (and `error`), retained unless rejected. */
    function accepts(bridge, status = "active", error = null) {
        bridge.on(/^vpp\/group\/\d+\/plan\/set$/, (topic, plan) => bridge.publish(topic.replace(/set$/, "state"),
            { plan_id: plan.plan_id, status, interval: 0, sent: 0, missed: 0, error, warning: null },
            { retain: status !== "rejected" }));
    }

    it("turns CSV rows into a plan on the target's plan/set topic with msg.plan_id", async () => {
        const { node, got, bridge } = await load(NODE, 2);
        accepts(bridge);
        const csv = "start,end,active_power\n2027-01-01T10:00:00Z,2027-01-01T10:15:00Z,-1500\n" +
            "2027-01-01T10:15:00Z,2027-01-01T10:30:00Z,-2500\n";
        node.receive({ payload: csv, plan_id: "day-1", tag: "mine" });
        await until(() => got.outs[0].length === 1);
        assert.deepStrictEqual([got.outs[0][0].tag, got.outs[0][0].payload.status], ["mine", "active"]);
        const sent = bridge.seen.find((m) => m.topic === `vpp/group/${GROUP}/plan/set`).body;
        assert.strictEqual(sent.plan_id, "day-1");
        assert.deepStrictEqual(sent.intervals.map((i) => i.command), [
            { type: "power_control", active_power: -1500 }, { type: "power_control", active_power: -2500 }]);
        assert.deepStrictEqual(got.statuses.at(-1), { fill: "blue", shape: "dot", text: "active: interval 0, sent 0, missed 0" });
        assert.deepStrictEqual(got.caught, []);
    });

    it("takes an array of {start, end, command} rows and makes a plan_id", async () => {
        const { node, got, bridge } = await load(NODE, 2);
        accepts(bridge);
        const command = { type: "soc_control", target_soc: 40, charge_power: -3000 };
        node.receive({ payload: [{ start: "2027-01-01T10:00:00+01:00", end: "2027-01-01T10:15:00+01:00", command }] });
        await until(() => got.outs[0].length === 1);
        const sent = bridge.seen.find((m) => m.topic.endsWith("/plan/set")).body;
        assert.match(sent.plan_id, /^nr-[0-9a-f]{12}$/);
        assert.deepStrictEqual(sent.intervals[0].command, command);
    });

    it("ends a rejected plan with an error carrying the bridge's code and message", async () => {
        const { node, got, bridge } = await load(NODE, 2);
        accepts(bridge, "rejected", { code: "validation_error", message: "interval 1: starts before the previous interval ends" });
        node.receive({ payload: { plan_id: "bad", intervals: [] } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "validation_error");
        assert.match(got.caught[0].error.message, /plan bad rejected: interval 1/);
        assert.deepStrictEqual(got.statuses.at(-1), { fill: "red", shape: "ring", text: "rejected: validation_error" });
        assert.deepStrictEqual(got.outs[0], []);
    });

    it("refuses CSV with a bad row, naming the row, and publishes nothing", async () => {
        const { node, got, bridge } = await load(NODE, 2);
        node.receive({ payload: "start,end,active_power\n2027-01-01T10:00:00Z,2027-01-01T10:15:00Z,lots\n" });
        node.receive({ payload: "start,end,active_power\nyesterday,2027-01-01T10:15:00Z,5\n" });
        await until(() => got.caught.length === 2);
        assert.match(got.caught[0].error.message, /row 2: active_power must be a number/);
        assert.match(got.caught[1].error.message, /row 2: start must be an RFC 3339 time/);
        assert.deepStrictEqual(bridge.seen.filter((m) => m.topic.endsWith("/set")), []);
    });

    it("refuses a batch target: plans are held per group or inverter", async () => {
        const { node, got } = await load({ ...NODE, targetKind: "msg" }, 2);
        node.receive({ payload: { intervals: [] }, target: { kind: "batch" } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "invalid_target");
    });

    it("shows the retained plan state of its target at start, and each later one", async () => {
        const { got, bridge } = await load({ ...NODE, targetId: "77" }, 2);
        await bridge.publish("vpp/group/77/plan/state", { plan_id: "p", status: "finished", sent: 4, missed: 1 },
            { retain: true });
        await until(() => got.outs[1].length === 1);
        assert.deepStrictEqual(got.statuses.at(-1), { fill: "yellow", shape: "dot", text: "finished: sent 4, missed 1" });
        await bridge.publish("vpp/group/77/plan/state", { plan_id: "q", status: "suspended",
            error: { code: "suspended", message: "a stop" } }, { retain: true });
        await until(() => got.outs[1].length === 2);
        assert.deepStrictEqual(got.statuses.at(-1), { fill: "red", shape: "ring", text: "suspended: suspended" });
    });

    it("fails with no_answer when the bridge does not answer the plan", async () => {
        const { node, got } = await load({ ...NODE, ackTimeout: 0.3 }, 2);
        node.receive({ payload: { plan_id: "lost", intervals: [] } });
        await until(() => got.caught.length === 1);
        assert.strictEqual(got.caught[0].error.code, "no_answer");
    });
});
