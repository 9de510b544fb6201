"use strict";
// semookii-state: one target's states or all, plan states when asked, retained ones at start unless told not to.

const assert = require("assert");
const { until } = require("./support");
const { bench } = require("./flow");

describe("semookii-state", function () {
    this.timeout(10000);
    const load = bench();

    it("emits every target's states with the target read off the topic", async () => {
        const { got, bridge } = await load({ type: "semookii-state", targetKind: "all" });
        const retain = { retain: true }; // whether it arrives before or after the subscription, it arrives
        await bridge.publish("vpp/group/11/state", { request_id: "a", status: "queued" }, retain);
        await bridge.publish("vpp/inverter/H9/state", { request_id: "b", status: "failed", error: { code: "x" } }, retain);
        await bridge.publish("vpp/batch/state", { request_id: "c", status: "completed" }, retain);
        await until(() => got.outs[0].length === 3);
        const seen = got.outs[0].map((m) => [m.request_id, m.target]).sort();
        assert.deepStrictEqual(seen, [
            ["a", { kind: "group", id: "11" }], ["b", { kind: "inverter", id: "H9" }], ["c", { kind: "batch", id: null }]]);
        const shown = got.statuses.filter((s) => !String(s.text).startsWith("node-red:")).map((s) => s.text).sort();
        assert.deepStrictEqual(shown, ["completed", "failed: x", "queued"]);
    });

    it("follows one target only, and its plan states when asked", async () => {
        const { got, bridge } = await load({ type: "semookii-state", targetKind: "group", targetId: "12", plans: true });
        const retain = { retain: true };
        await bridge.publish("vpp/group/13/state", { request_id: "other", status: "queued" }, retain);
        await bridge.publish("vpp/group/12/plan/state", { plan_id: "p", status: "active", interval: 2, sent: 3 }, retain);
        await bridge.publish("vpp/group/12/state", { request_id: "p/2", status: "accepted" }, retain);
        await until(() => got.outs[0].length === 2);
        await new Promise((r) => setTimeout(r, 100));
        assert.deepStrictEqual(got.outs[0].map((m) => [m.plan, m.topic]).sort(), [
            [false, "vpp/group/12/state"], [true, "vpp/group/12/plan/state"]]);
    });

    it("sends the retained states at start, or leaves them out when unchecked", async () => {
        const first = await load({ type: "semookii-state", targetKind: "group", targetId: "14" });
        await first.bridge.publish("vpp/group/14/state", { request_id: "kept", status: "completed" }, { retain: true });
        await until(() => first.got.outs[0].length === 1);
        const { helper } = require("./support");
        await helper.unload();
        await first.bridge.end();
        const second = await load({ type: "semookii-state", targetKind: "group", targetId: "14" });
        await until(() => second.got.outs[0].length === 1);
        assert.strictEqual(second.got.outs[0][0].retained, true);
        await helper.unload();
        await second.bridge.end();
        const third = await load({ type: "semookii-state", targetKind: "group", targetId: "14", retained: false });
        await new Promise((r) => setTimeout(r, 300));
        assert.deepStrictEqual(third.got.outs[0], []);
    });
});
